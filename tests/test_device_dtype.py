"""Devices, dtypes and tensor factories as in torch (issue 25, item 1)."""
import pickle

import numpy as np
import pytest

import fastdl
from fastdl import nn


# ------------------------------------------------------------------ devices
def test_device_constructs_compares_and_prints_as_torch():
    cpu = fastdl.device("cpu")
    assert (cpu.type, cpu.index) == ("cpu", None)
    assert str(cpu) == "cpu" and repr(cpu) == "device(type='cpu')"
    indexed = fastdl.device("cpu:0")
    assert indexed.index == 0 and str(indexed) == "cpu:0"
    assert repr(indexed) == "device(type='cpu', index=0)"
    assert fastdl.device("cpu", 0) == indexed == fastdl.device(type="cpu", index=0)
    assert cpu != indexed and cpu == fastdl.device(cpu) and cpu != "cpu"   # torch: not equal
    assert {cpu: 1}[fastdl.device("cpu")] == 1
    assert pickle.loads(pickle.dumps(indexed)) == indexed
    assert fastdl.device("cuda:1").type == "cuda"    # describable, as torch, but not usable


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "cpu:-1", "cuda:0:1", "cpu:01"])
def test_malformed_device_strings_raise_runtime_error(text):
    with pytest.raises(RuntimeError):
        fastdl.device(text)


def test_device_argument_errors():
    with pytest.raises(RuntimeError, match="must not include an index"):
        fastdl.device("cpu:0", 0)
    with pytest.raises(RuntimeError, match="negative"):
        fastdl.device("cpu", -1)
    with pytest.raises(TypeError):
        fastdl.device(3.0)
    with pytest.raises(RuntimeError, match="accelerator"):
        fastdl.device(0)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps", fastdl.device("cuda")])
def test_asking_for_another_device_is_a_runtime_error_naming_it(name):
    shown = str(name)
    x = fastdl.ones(2)
    for call in (lambda: x.to(name), lambda: fastdl.zeros(2, device=name),
                 lambda: fastdl.tensor([1.0], device=name), lambda: nn.Linear(2, 2).to(name),
                 lambda: x.new_zeros(2, device=name)):
        with pytest.raises(RuntimeError, match="'%s'.*CPU only" % shown):
            call()
    with pytest.raises(RuntimeError, match="CPU only"):
        x.cuda()


def test_tensors_live_on_the_cpu():
    x = fastdl.ones(2)
    assert x.device == fastdl.device("cpu") and not x.is_cuda and x.is_cpu
    assert x.cpu() is x and x.to("cpu") is x and x.to(fastdl.device("cpu:0")) is x
    assert x.pin_memory() is x


def test_accelerator_cuda_and_backends_answer_not_available():
    assert fastdl.cuda.is_available() is False and fastdl.cuda.device_count() == 0
    fastdl.cuda.manual_seed(0)
    fastdl.cuda.manual_seed_all(0)
    fastdl.cuda.empty_cache()
    with pytest.raises(RuntimeError):
        fastdl.cuda.synchronize()
    assert fastdl.accelerator.is_available() is False
    assert fastdl.accelerator.current_accelerator() is None
    assert fastdl.backends.mps.is_available() is False
    assert fastdl.backends.cudnn.is_available() is False
    saved = fastdl.backends.cudnn.deterministic, fastdl.backends.cudnn.benchmark
    try:
        fastdl.backends.cudnn.deterministic = True
        fastdl.backends.cudnn.benchmark = False
        assert fastdl.backends.cudnn.deterministic is True
    finally:
        fastdl.backends.cudnn.deterministic, fastdl.backends.cudnn.benchmark = saved
    fastdl.use_deterministic_algorithms(True)
    assert fastdl.are_deterministic_algorithms_enabled()
    fastdl.use_deterministic_algorithms(False)


def test_torch_program_device_idiom_runs():
    device = fastdl.device("cuda" if fastdl.cuda.is_available() else "cpu")
    model = nn.Linear(3, 2).to(device)
    x = fastdl.randn(4, 3).to(device, non_blocking=True)
    assert model(x).shape == (4, 2) and str(device) == "cpu"


# ------------------------------------------------------------------- dtypes
def test_dtype_names_are_numpy_dtypes_with_torch_aliases():
    assert fastdl.float32 is fastdl.float and fastdl.float32 == np.float32
    assert fastdl.float64 == fastdl.double == np.float64
    assert fastdl.int64 == fastdl.long == np.int64 and fastdl.int32 == fastdl.int == np.int32
    assert fastdl.bool == np.bool_ and fastdl.uint8 == np.uint8
    assert fastdl.float16 == fastdl.half == np.float16
    assert fastdl.ones(2).dtype == fastdl.float32
    assert fastdl.zeros(2, dtype=fastdl.long).dtype == fastdl.int64
    assert fastdl.zeros(2, dtype=float).dtype == np.float64     # as torch: Python float
    assert fastdl.zeros(2, dtype="torch.int32").dtype == np.int32
    with pytest.raises(TypeError):
        fastdl.zeros(2, dtype="not a dtype")
    with pytest.raises(TypeError):
        fastdl.zeros(2, dtype=object)


def test_default_dtype_follows_set_default_dtype():
    assert fastdl.get_default_dtype() == fastdl.float32
    try:
        fastdl.set_default_dtype(fastdl.float64)
        assert fastdl.get_default_dtype() == np.float64
        assert fastdl.tensor([1.0]).dtype == np.float64
        assert fastdl.zeros(2).dtype == fastdl.rand(2).dtype == np.float64
        assert (fastdl.arange(3) / 2).dtype == np.float64
        with pytest.raises(TypeError, match="float32 and float64"):
            fastdl.set_default_dtype(fastdl.int64)
    finally:
        fastdl.set_default_dtype(fastdl.float32)
    assert fastdl.tensor([1.0]).dtype == np.float32


def test_tensor_to_takes_a_dtype_a_device_or_a_tensor():
    x = fastdl.tensor([1.5, -2.5], requires_grad=True)
    assert x.to(fastdl.float32) is x
    assert x.to(fastdl.float64).dtype == np.float64
    assert x.to("cpu", fastdl.float64).dtype == np.float64
    assert x.to(device="cpu", dtype=fastdl.int64).tolist() == [1, -2]
    assert x.to(fastdl.zeros(1, dtype=fastdl.float64)).dtype == np.float64
    copied = x.to(fastdl.float32, copy=True)
    assert copied is not x and not np.shares_memory(copied.array, x.array)
    x.to(fastdl.float64).sum().backward()                 # differentiable cast
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])
    assert x.grad.dtype == np.float32
    with pytest.raises(TypeError):
        x.to("cpu", "cpu")


def test_casting_methods():
    x = fastdl.tensor([1.7, -0.2, 0.0])
    assert x.double().dtype == np.float64 and x.half().dtype == np.float16
    assert x.long().tolist() == [1, 0, 0] and x.int().dtype == np.int32
    assert x.bool().tolist() == [True, True, False]
    assert x.type_as(fastdl.zeros(1, dtype=fastdl.int64)).dtype == np.int64
    assert x.is_floating_point() and not x.long().is_floating_point()
    with pytest.raises(TypeError):
        x.long().requires_grad_()
    with pytest.raises(RuntimeError):                     # torch's kind as well
        fastdl.tensor([1, 2], requires_grad=True)


def test_module_to_cpu_float_double_half():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    assert model.to("cpu") is model and model.cpu() is model
    model(fastdl.randn(4, 2)).sum().backward()
    grad = model[0].weight.grad
    assert model.to(fastdl.float32) is model and model[0].weight.grad is grad   # no-op cast
    model.to(fastdl.float64)
    assert model[0].weight.dtype == np.float64 and model[1].running_mean.dtype == np.float64
    model.to(fastdl.zeros(1, dtype=fastdl.float32))
    assert model[0].weight.dtype == np.float32
    with pytest.raises(TypeError, match="floating point"):
        model.to(fastdl.int64)
    with pytest.raises(TypeError, match="float16"):
        model.half()


# ---------------------------------------------------------------- factories
@pytest.mark.parametrize("factory", [fastdl.zeros, fastdl.ones, fastdl.empty, fastdl.rand,
                                     fastdl.randn])
def test_size_forms_and_keywords(factory):
    assert factory(2, 3).shape == factory((2, 3)).shape == factory([2, 3]).shape == (2, 3)
    assert factory(0).shape == (0,) and factory(()).shape == ()
    with pytest.raises(TypeError, match="size"):
        factory()
    made = factory(2, dtype=fastdl.float64, device="cpu", requires_grad=True)
    assert made.dtype == np.float64 and made.requires_grad and made.is_leaf
    with pytest.raises(RuntimeError, match="negative dimension"):
        factory(2, -1)
    with pytest.raises(TypeError):
        factory(2.5)


def test_constant_factories_match_torch():
    torch = pytest.importorskip("torch")
    cases = [
        lambda lib: lib.zeros(2, 3), lambda lib: lib.ones(2, dtype=lib.int64),
        lambda lib: lib.full((2, 2), 1.5), lambda lib: lib.full((2,), 3),
        lambda lib: lib.full((2,), True), lambda lib: lib.arange(5), lambda lib: lib.arange(1, 4),
        lambda lib: lib.arange(0, 1, 0.25), lambda lib: lib.arange(10, 0, -3),
        lambda lib: lib.arange(3, dtype=lib.float64), lambda lib: lib.linspace(0, 1, 5),
        lambda lib: lib.linspace(-2, 2, 1), lambda lib: lib.eye(3), lambda lib: lib.eye(2, 4),
        lambda lib: lib.zeros_like(lib.ones(2, dtype=lib.int32)),
        lambda lib: lib.ones_like(lib.ones(2, 2), dtype=lib.float64),
        lambda lib: lib.full_like(lib.ones(3), 7),
        lambda lib: lib.tensor([[1, 2], [3, 4]]), lambda lib: lib.tensor(2.5),
        lambda lib: lib.tensor([True, False]), lambda lib: lib.tensor([1.0, 2.0], dtype=lib.int64),
    ]
    assert fastdl.empty_like(fastdl.ones(1, 2, dtype=fastdl.int32)).dtype == np.int32
    for case in cases:
        ours, theirs = case(fastdl), case(torch)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-7)


def test_range_errors():
    with pytest.raises(RuntimeError, match="nonzero"):
        fastdl.arange(0, 5, 0)
    with pytest.raises(RuntimeError, match="step sign"):
        fastdl.arange(5, 0, 1)
    with pytest.raises(RuntimeError, match="non-negative"):
        fastdl.linspace(0, 1, -1)
    with pytest.raises(TypeError):
        fastdl.zeros_like([1, 2])


def test_random_factories_follow_manual_seed():
    def draw():
        return (fastdl.rand(3).numpy(), fastdl.randn(2, 2).numpy(),
                fastdl.randint(0, 10, (4,)).numpy(), fastdl.randint(5, (2,)).numpy(),
                fastdl.randperm(5).numpy(), fastdl.rand_like(fastdl.ones(2)).numpy(),
                fastdl.randn_like(fastdl.ones(2, dtype=fastdl.float64)).numpy(),
                fastdl.randint_like(fastdl.ones(3), 4).numpy(),
                fastdl.empty(3).normal_().numpy(), fastdl.empty(3).uniform_(-1, 1).numpy(),
                fastdl.empty(8).bernoulli_(0.5).numpy(), fastdl.bernoulli(fastdl.rand(8)).numpy())
    fastdl.manual_seed(7)
    first = draw()
    fastdl.manual_seed(7)
    second = draw()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    ints = fastdl.randint(2, 5, (1000,))
    assert ints.dtype == np.int64 and ints.min().item() >= 2 and ints.max().item() <= 4
    assert sorted(fastdl.randperm(6).tolist()) == list(range(6))
    uniform = fastdl.rand(1000, dtype=fastdl.float64)
    assert uniform.dtype == np.float64 and 0 <= uniform.min().item() < uniform.max().item() < 1
    generator = np.random.default_rng(3)
    np.testing.assert_array_equal(fastdl.rand(3, generator=generator).numpy(),
                                  np.random.default_rng(3).random(3, dtype=np.float32))


def test_random_factory_errors():
    with pytest.raises(RuntimeError, match="from"):
        fastdl.randint(5, 5, (2,))
    with pytest.raises(RuntimeError, match="floating"):
        fastdl.rand(2, dtype=fastdl.int64)
    with pytest.raises(TypeError, match="size"):
        fastdl.randint(5)
    with pytest.raises(TypeError):
        fastdl.empty(2, dtype=fastdl.int64).normal_()


def test_from_numpy_and_as_tensor_share_memory_tensor_copies():
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    shared = fastdl.from_numpy(array)
    array[0, 0] = 10
    assert shared[0, 0].item() == 10 and shared.dtype == np.float64
    halves = np.ones(2, dtype=np.float16)
    assert fastdl.from_numpy(halves).dtype == np.float16
    assert np.shares_memory(fastdl.as_tensor(array).numpy(), array)
    assert fastdl.as_tensor(shared) is shared
    assert not np.shares_memory(fastdl.as_tensor(array, dtype=fastdl.float32).numpy(), array)
    copied = fastdl.tensor(array)
    array[0, 1] = -1
    assert copied[0, 1].item() == 1
    with pytest.raises(TypeError, match="np.ndarray"):
        fastdl.from_numpy([1, 2])
    with pytest.raises(TypeError):
        fastdl.from_numpy(np.array(["a"]))
    with pytest.raises(TypeError):
        fastdl.tensor("text")
