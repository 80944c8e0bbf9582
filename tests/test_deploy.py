"""Inference plans: equal to the eager model, thread-safe, flat memory, safe files."""
import json
import os
import pickle
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import fastdl
from fastdl import deploy, nn
from fastdl import functional as F
from fastdl.data import load_digits
from fastdl.models import lenet5, resnet8, resnet20
from reference import from_stored_layout


def _trained_stats(model, shape, rng):
    """Move BN running statistics away from their initial values."""
    model.train()
    for _ in range(2):
        model(fastdl.Tensor(rng.normal(size=shape).astype(np.float32)))
    return model.eval()


def _eager(model, x):
    with fastdl.no_grad():
        return model.eval()(fastdl.Tensor(x)).array


@pytest.mark.parametrize("factory, shape", [(lenet5, (1, 28, 28)),
                                            (lambda: resnet8(width=8), (3, 16, 16)),
                                            (lambda: resnet20(width=8), (3, 16, 16))])
@pytest.mark.parametrize("batch", [1, 64])
def test_plan_equals_eager_model(factory, shape, batch, rng):
    fastdl.manual_seed(0)
    model = _trained_stats(factory(), (8,) + shape, rng)
    x = rng.normal(size=(batch,) + shape).astype(np.float32)
    plan = deploy.compile(model, x)
    np.testing.assert_allclose(plan(x), _eager(model, x), rtol=1e-5, atol=1e-5)
    assert not model.training


@pytest.mark.parametrize("factory", [
    lambda: nn.Sequential(nn.BasicBlock(4, 4)),     # the input is a conv's residual too
    lambda: nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Sigmoid(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, padding=1))])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_plan_called_again_with_new_inputs_equals_the_eager_model(factory, batch, rng):
    """Conv chains are laid out once per buffer set; every call reads its own input."""
    fastdl.manual_seed(0)
    model = _trained_stats(factory(), (8, 4, 9, 10), rng)
    plan = deploy.compile(model, np.zeros((batch, 4, 9, 10), np.float32))
    for _ in range(4):
        x = rng.normal(size=(batch, 4, 9, 10)).astype(np.float32)
        np.testing.assert_allclose(plan(x), _eager(model, x), rtol=1e-5, atol=1e-5)


def test_chained_convs_keep_bordered_intermediates_only_the_chain_reads(rng):
    """Between a ResNet's chained convs the plan keeps outputs inside zero borders (the
    next conv's padding, so that it reads them in place), and a stage's last output,
    read by the next stage's stride-2 conv and shortcut alone, as the phase planes both
    read in place; what an op outside the convs reads (the global pool after the last
    conv) stays plain, and the borders stay zero over calls. At batch 1 the pool,
    flatten and linear layer run in the chain too."""
    fastdl.manual_seed(0)
    model = _trained_stats(resnet20(width=8), (8, 3, 32, 32), rng)
    plan = deploy.compile(model, np.zeros((1, 3, 32, 32), np.float32))
    program, borders = plan._program(1)
    assert len(program) == 1   # the convs and the classifier head in one chain
    convs = [i for i, op in enumerate(plan.ops) if op["op"] == "conv2d"]
    assert borders and set(borders) < set(convs) and convs[-1] not in borders
    strided = [i for i in convs if plan.ops[i]["stride"] == [2, 2]]
    transitions = {plan.ops[i]["inputs"][0] - 1 for i in strided}
    assert len(strided) == 4 and len(transitions) == 2
    assert {i: borders[i] for i in transitions} == dict.fromkeys(transitions, (1, 1, 2, 2))
    assert set(borders.values()) == {(1, 1), (1, 1, 2, 2)}
    for _ in range(3):
        x = rng.normal(size=(1, 3, 32, 32)).astype(np.float32)
        np.testing.assert_allclose(plan(x), _eager(model, x), rtol=1e-5, atol=1e-5)
    (_, free), = plan._shapes.values()
    for index, layout in borders.items():
        frame = from_stored_layout(free[0][index], layout)
        frame[:, :, 1:-1, 1:-1] = 0
        assert not frame.any()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 2])
def test_an_identity_block_then_a_narrow_projection_block_equals_the_model(batch, threads,
                                                                            rng):
    """The identity block's second conv reads the first's output in place; the
    projection block's first conv after it pads its input into the same layout and
    must not find the grid of the conv before as its border (was 3.5e-2 off)."""
    fastdl.manual_seed(0)
    model = _trained_stats(nn.Sequential(nn.BasicBlock(3, 3), nn.BasicBlock(3, 8)),
                           (8, 3, 8, 8), rng)
    x = rng.normal(size=(batch, 3, 8, 8)).astype(np.float32)
    previous = fastdl.get_num_threads()
    fastdl.set_num_threads(threads)
    try:
        plan = deploy.compile(model, x[:1])
        assert plan._program(batch)[1]   # a bordered buffer, read in place
        np.testing.assert_allclose(plan(x), _eager(model, x), rtol=1e-5, atol=1e-5)
    finally:
        fastdl.set_num_threads(previous)


@pytest.mark.parametrize("batch, steps", [(64, 1), (4, 1), (3, 5)])
def test_a_lenet_classifier_runs_in_its_convs_chain(batch, steps, rng):
    """From 4 images on (the packed dense kernel's rows), LeNet-5's flatten and three
    linear layers run in the parallel region of its conv chain: one program step,
    equal to the eager model, call after call; below that they stay steps of their own."""
    fastdl.manual_seed(0)
    model = lenet5()
    plan = deploy.compile(model, np.zeros((batch, 1, 28, 28), np.float32))
    program, _ = plan._program(batch)
    assert len(program) == steps
    for _ in range(3):
        x = rng.normal(size=(batch, 1, 28, 28)).astype(np.float32)
        np.testing.assert_allclose(plan(x), _eager(model, x), rtol=1e-5, atol=1e-6)


def test_plan_on_real_digits():
    digits = load_digits()
    fastdl.manual_seed(0)
    model = lenet5(input_size=8)
    x = digits.test.arrays[0]
    plan = deploy.compile(model, x[:1])
    np.testing.assert_allclose(plan(x), _eager(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv", [
    lambda: nn.Conv2d(4, 6, 3, padding=1), lambda: nn.Conv2d(4, 6, 3, bias=False),
    lambda: nn.Conv2d(4, 6, 3, groups=2), lambda: nn.Conv2d(4, 4, 3, groups=4, bias=False),
    lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)])
@pytest.mark.parametrize("affine", [True, False])
def test_fuse_conv_bn_module_equals_unfused_pair(conv, affine, rng):
    fastdl.manual_seed(1)
    layer = conv().double()
    bn = nn.BatchNorm2d(6 if layer.out_channels == 6 else 4, eps=1e-3, affine=affine).double()
    bn.running_mean[:] = rng.normal(size=bn.num_features)
    bn.running_var[:] = rng.uniform(0.2, 3, size=bn.num_features)
    if affine:
        bn.weight.array[:] = rng.normal(size=bn.num_features)
        bn.bias.array[:] = rng.normal(size=bn.num_features)
    bn.eval()
    x = fastdl.Tensor(rng.normal(size=(2, 4, 6, 6)))
    fused = deploy.fuse_conv_bn(layer, bn)
    assert fused.bias is not None
    with fastdl.no_grad():
        np.testing.assert_allclose(fused(x).array, bn(layer(x)).array, rtol=1e-10, atol=1e-12)


def test_fuse_requires_eval_mode_and_running_stats():
    with pytest.raises(ValueError, match="eval mode"):
        deploy.fuse_conv_bn(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="running statistics"):
        deploy.fuse_conv_bn(nn.Conv2d(2, 2, 1),
                            nn.BatchNorm2d(2, track_running_stats=False).eval())
    layer, bn = nn.Linear(3, 2).double(), nn.BatchNorm1d(2).double().eval()
    bn.running_var[:] = [2.0, 0.5]
    x = fastdl.Tensor(np.random.default_rng(0).normal(size=(4, 3)))
    with fastdl.no_grad():
        np.testing.assert_allclose(deploy.fuse_linear_bn(layer, bn)(x).array, bn(layer(x)).array,
                                   rtol=1e-12)


def test_unsupported_module_is_named():
    """A user's module in a Sequential: the model is compiled by its trace, and where the
    trace holds an op no plan runs, the error names the module without a lowering."""
    class Concatenate(nn.Module):
        def forward(self, x):
            return fastdl.cat([x, x], 1)
    with pytest.raises(ValueError, match="cannot compile module '1' \\(Concatenate\\)"):
        deploy.compile(nn.Sequential(nn.Conv2d(1, 2, 3), Concatenate()),
                       np.zeros((1, 1, 5, 5)))


def test_user_blocks_inside_a_sequential_compile_by_trace(rng):
    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(channels, channels, 3, padding=1), \
                nn.BatchNorm2d(channels)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)) + x)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Block(4), Block(4),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean[:] = rng.normal(size=4)
            module.running_var[:] = rng.uniform(0.5, 2.0, size=4)
    model.eval()
    x = rng.normal(size=(7, 3, 9, 9)).astype(np.float32)
    plan = deploy.compile(model, x[:1])
    assert [op["op"] for op in plan.ops].count("conv2d") == 3    # BN folded, adds fused
    for batch in (1, 7):
        with fastdl.no_grad():
            expected = model(fastdl.Tensor(x[:batch])).numpy()
        np.testing.assert_allclose(plan(x[:batch]), expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())


def test_compile_dispatches_on_classes_not_on_names_or_attributes(rng):
    """A user's class named ResNet, with the attributes of fastdl's, is not compiled as
    fastdl's (but by a trace of its own forward); a subclass that overrides a layer's forward is refused, one that keeps it
    is compiled; the error names the module's path, class and where the class is from."""
    class ResNet(nn.Module):                   # not fastdl.models.ResNet
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return x
    # no lowering is registered for it: compiled by its trace, as what its forward does
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    plan = deploy.compile(ResNet(), x)
    assert [(op["op"], op.get("kind")) for op in plan.ops] == [("activation", "identity")]
    np.testing.assert_array_equal(plan(x), x)

    class Doubled(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2
    with pytest.raises(ValueError, match="'1' \\(Doubled\\) .*overrides the forward of "
                       "fastdl.nn.container.Sequential"):
        deploy.compile(nn.Sequential(nn.Conv2d(3, 4, 3), Doubled(nn.ReLU())),
                       np.zeros((1, 3, 8, 8), np.float32))

    class Stage(nn.Sequential):                # keeps Sequential's forward
        pass
    model = _trained_stats(nn.Sequential(Stage(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                                               nn.ReLU())), (4, 3, 8, 8), rng)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    plan = deploy.compile(model, x)
    assert [op["op"] for op in plan.ops] == ["conv2d"]   # BN and ReLU folded
    np.testing.assert_allclose(plan(x), _eager(model, x), rtol=1e-5, atol=1e-5)

    block = nn.BasicBlock(4, 4)
    block.conv1 = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="'0.conv1' \\(Linear\\) .*BasicBlock expects a "
                       "Conv2d there"):
        deploy.compile(nn.Sequential(block), np.zeros((1, 4, 8, 8), np.float32))


def test_layer_options_a_plan_cannot_run_are_refused_not_ignored():
    """Options torch's layers have and plans do not (dilated or index-returning max
    pools, a divisor override) raise, naming the layer, its class and the option; 'valid'
    and an odd 'same' padding become their zero paddings (the other paddings:
    test_deploy_options.py)."""
    x = np.zeros((1, 2, 8, 8), np.float32)

    def refused(layer, attribute, value, match):
        setattr(layer, attribute, value)
        with pytest.raises(ValueError, match=match):
            deploy.compile(nn.Sequential(layer), x)
    refused(nn.MaxPool2d(2), "dilation", 2, "module '0' \\(.*MaxPool2d\\): dilation=2 is not")
    refused(nn.MaxPool2d(2), "return_indices", True, "'0' .*MaxPool2d.*return_indices=True")
    refused(nn.AvgPool2d(2), "divisor_override", 3, "'0' .*AvgPool2d.*divisor_override=3")
    padded = nn.Conv2d(2, 3, 3, padding=1)
    same = nn.Conv2d(2, 3, 3)
    same.weight, same.bias, same.padding = padded.weight, padded.bias, "same"
    valid = nn.Conv2d(2, 3, 3)
    valid.weight, valid.bias, valid.padding = padded.weight, padded.bias, "valid"
    assert deploy.compile(same, x).ops == deploy.compile(padded, x).ops
    assert deploy.compile(valid, x).ops[0]["padding"] == [0, 0]


def test_save_load_in_a_fresh_process_gives_identical_outputs(tmp_path, rng):
    fastdl.manual_seed(0)
    model = _trained_stats(resnet8(width=4), (4, 3, 8, 8), rng)
    x = rng.normal(size=(3, 3, 8, 8)).astype(np.float32)
    plan = deploy.compile(model, x)
    path = tmp_path / "plan.safetensors"
    plan.save(path)
    np.save(tmp_path / "x.npy", x)
    script = ("import numpy as np, sys; from fastdl import deploy; "
              "p = deploy.load(sys.argv[1], warmup=True); "
              "np.save(sys.argv[3], p(np.load(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), plan(x))


@pytest.mark.parametrize("factory, shape", [(lenet5, (1, 28, 28)),
                                            (lambda: resnet20(width=8), (3, 16, 16))])
def test_serving_a_plan_loads_neither_numba_nor_the_layers(tmp_path, factory, shape):
    """Start-up: a process that loads and runs a LeNet or ResNet plan imports no
    JIT and no training stack (Numba's import and first dispatch were most of a
    second)."""
    fastdl.manual_seed(0)
    plan = deploy.compile(factory(), np.zeros((1,) + shape, np.float32))
    path = tmp_path / "plan.safetensors"
    plan.save(path)
    script = ("import sys, numpy as np; from fastdl import deploy; "
              "p = deploy.load(sys.argv[1], warmup=True); "
              "p(np.ones((2,) + p.input_shape, np.float32)); "
              "print(sorted(m for m in ('numba', 'fastdl.nn', 'fastdl.autograd') "
              "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script, str(path)], check=True,
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "[]"


def test_sixteen_threads_get_the_serial_answers(rng):
    fastdl.manual_seed(0)
    plan = deploy.compile(lenet5(), np.zeros((1, 1, 28, 28), np.float32))
    inputs = [rng.normal(size=(1 + i % 3, 1, 28, 28)).astype(np.float32) for i in range(16)]
    expected = [plan(x) for x in inputs]
    results = [None] * 16

    def call(i):
        for _ in range(20):
            results[i] = plan(inputs[i])
    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_memory_is_flat_over_many_calls_with_varying_batch(rng):
    fastdl.manual_seed(0)
    plan = deploy.compile(lenet5(input_size=8), np.zeros((1, 1, 8, 8), np.float32))
    inputs = [rng.normal(size=(b, 1, 8, 8)).astype(np.float32) for b in (1, 2, 3, 5, 8, 13)]
    for x in inputs:
        plan(x)
    tracemalloc.start()
    for i in range(3000):
        plan(inputs[i % len(inputs)])
    first, _ = tracemalloc.get_traced_memory()
    for i in range(3000):
        plan(inputs[i % len(inputs)])
    second, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # buffers and prepared kernels (packed weights) are kept for a few batch sizes only
    assert len(plan._shapes) <= plan.max_shapes
    assert second - first < 256 * 1024


def _tamper(path, change):
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    change(header)
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + length:])


def _edit_plan(edit):
    def change(header):
        plan = json.loads(header["__metadata__"]["fastdl.plan"])
        edit(plan)
        header["__metadata__"]["fastdl.plan"] = json.dumps(plan)
    return change


@pytest.mark.parametrize("case, match", [
    ("truncated", "truncated"),
    ("magic", "beyond the file"),
    ("header_length", "beyond the file"),
    ("pickle", "beyond the file"),
    ("unknown_op", "unknown"),
    ("shape", "does not fit|must be"),
    ("not_a_plan", "not a fastdl inference plan"),
    ("bad_input", "earlier values"),
])
def test_hostile_plan_files_are_rejected(tmp_path, case, match):
    fastdl.manual_seed(0)
    plan = deploy.compile(lenet5(), np.zeros((1, 1, 28, 28), np.float32))
    path = tmp_path / "plan.safetensors"
    plan.save(path)
    raw = path.read_bytes()
    if case == "truncated":
        path.write_bytes(raw[:-100])
    elif case == "magic":
        path.write_bytes(b"PK\x03\x04" + raw[4:])
    elif case == "header_length":
        path.write_bytes((len(raw) * 2).to_bytes(8, "little") + raw[8:])
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"weights": np.zeros(3)}))
    elif case == "unknown_op":
        _tamper(path, _edit_plan(lambda p: p["ops"][0].update(op="system")))
    elif case == "shape":
        _tamper(path, _edit_plan(lambda p: p["ops"][0]["weights"].update(
            weight=p["ops"][-1]["weights"]["weight"])))
    elif case == "not_a_plan":
        _tamper(path, lambda h: h.pop("__metadata__"))
    else:
        _tamper(path, _edit_plan(lambda p: p["ops"][1].update(inputs=[7])))
    with pytest.raises(ValueError, match=match):
        deploy.load(path)


def test_wrong_input_shape_is_a_clear_error():
    plan = deploy.compile(lenet5(), np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="expected input"):
        plan(np.zeros((1, 3, 28, 28), np.float32))


def test_serve_example_answers_concurrent_loopback_requests(tmp_path):
    fastdl.manual_seed(0)
    deploy.compile(lenet5(input_size=8), np.zeros((1, 1, 8, 8), np.float32)).save(
        tmp_path / "plan.safetensors")
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "serve.py")
    result = subprocess.run([sys.executable, example, str(tmp_path / "plan.safetensors"),
                             "--selftest", "64"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "64 requests, 0 wrong answers" in result.stdout


def test_warmup_command(tmp_path):
    from fastdl.cli import main
    plan = deploy.compile(lenet5(), np.zeros((1, 1, 28, 28), np.float32))
    plan.save(tmp_path / "p.safetensors")
    assert main(["warmup", str(tmp_path / "p.safetensors")]) == 0
    assert main(["warmup", str(tmp_path / "missing.safetensors")]) == 2


def test_warmup_command_takes_onnx_models(tmp_path, capsys):
    pytest.importorskip("onnx")
    from fastdl.cli import main
    example = np.zeros((1, 1, 28, 28), np.float32)
    deploy.export_onnx(deploy.compile(lenet5(), example), example, tmp_path / "m.onnx")
    assert main(["warmup", str(tmp_path / "m.onnx")]) == 0
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert main(["warmup", str(tmp_path / "bad.onnx")]) == 2
    assert "bad.onnx" in capsys.readouterr().err
