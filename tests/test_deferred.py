"""Deferred conv epilogues (fastdl.tensor_deferred): eval-mode batch norm, residual add and
ReLU folded into the conv inside a module call, checked against the plain path (the same
model with deferral off) on random models, and the rules that keep it a plain tensor's
semantics."""
import threading

import numpy as np
import pytest

import fastdl
import fastdl.nn.functional as F
from fastdl import nn, tensor_deferred
from fastdl.autograd import Tensor


@pytest.fixture
def plain():
    """Run a block with deferral off, restoring the switch after."""
    def run(function, *args):
        tensor_deferred.enabled = False
        try:
            return function(*args)
        finally:
            tensor_deferred.enabled = True
    return run


def _random_bn(rng, channels, dtype, affine=True):
    bn = nn.BatchNorm2d(channels, affine=affine, dtype=dtype)
    bn.running_mean[:] = rng.standard_normal(channels)
    bn.running_var[:] = rng.uniform(0.2, 3.0, channels)
    if affine:
        bn.weight.data = fastdl.tensor(rng.standard_normal(channels).astype(dtype))
        bn.bias.data = fastdl.tensor(rng.standard_normal(channels).astype(dtype))
    return bn


class RandomBlock(nn.Module):
    """conv -> [bn] -> [+ shortcut, as ``+``, ``+=`` or ``shortcut + out``] -> [relu, as
    F.relu, nn.ReLU(inplace) or relu_ before the add], in a random arrangement."""

    def __init__(self, rng, channels, dtype):
        super().__init__()
        kernel = int(rng.choice([1, 3]))
        depthwise = kernel == 3 and rng.random() < 0.3
        self.stride = int(rng.choice([1, 1, 2]))
        groups = channels if depthwise else 1
        out_channels = channels if depthwise or rng.random() < 0.6 else channels * 2
        self.conv = nn.Conv2d(channels, out_channels, kernel, stride=self.stride,
                              padding=kernel // 2, groups=groups, bias=bool(rng.random() < 0.4),
                              dtype=dtype)
        self.bn = (_random_bn(rng, out_channels, dtype, affine=bool(rng.random() < 0.8))
                   if rng.random() < 0.8 else None)
        self.add = (rng.choice(["plus", "iadd", "reversed"])
                    if self.stride == 1 and out_channels == channels and rng.random() < 0.6
                    else None)
        self.relu = rng.choice(["functional", "module", "method", "leaky", "none",
                                "before_add"])
        self.inplace_relu = nn.ReLU(inplace=True)
        self.out_channels = out_channels

    def forward(self, x):
        out = self.conv(x)
        if self.bn is not None:
            out = self.bn(out)
        if self.relu == "before_add":
            out = F.relu(out)
        if self.add == "plus":
            out = out + x
        elif self.add == "iadd":
            out += x
        elif self.add == "reversed":
            out = x + out
        if self.relu == "functional":
            out = F.relu(out)
        elif self.relu == "module":
            out = self.inplace_relu(out)
        elif self.relu == "method":
            out = out.relu()
        elif self.relu == "leaky":
            out = F.leaky_relu(out, 0.1)
        return out


def _random_model(rng, channels, dtype):
    blocks = []
    for _ in range(int(rng.integers(1, 5))):
        block = RandomBlock(rng, channels, dtype)
        blocks.append(block)
        channels = block.out_channels
    return nn.Sequential(*blocks).eval()


@pytest.mark.parametrize("seed", range(40))
def test_random_models_equal_the_plain_path(seed, plain):
    rng = np.random.default_rng(seed)
    dtype = np.float64 if seed % 4 == 3 else np.float32
    channels = int(rng.choice([2, 3, 8, 16]))
    model = _random_model(rng, channels, dtype)
    for batch in (1, 3, 8):
        size = int(rng.integers(4, 12))
        x = fastdl.tensor(rng.standard_normal((batch, channels, size, size)).astype(dtype))
        with _threads(int(rng.integers(1, 3))), fastdl.no_grad():
            fused = model(x)
            expected = plain(model, x)
        assert type(fused) is Tensor and fused.dtype == expected.dtype
        tolerance = 1e-12 if dtype == np.float64 else 2e-5
        scale = max(1.0, float(np.abs(expected.numpy()).max()))
        np.testing.assert_allclose(fused.numpy(), expected.numpy(), rtol=tolerance,
                                   atol=tolerance * scale)


class _threads:
    def __init__(self, count):
        self.count = count

    def __enter__(self):
        self.before = fastdl.get_num_threads()
        fastdl.set_num_threads(self.count)

    def __exit__(self, *exc):
        fastdl.set_num_threads(self.before)


class ConvBnRelu(nn.Module):
    def __init__(self, rng, dtype=np.float32):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, dtype=dtype)
        self.bn = _random_bn(rng, 4, dtype)
        self.seen = {}

    def forward(self, x):
        raw = self.conv(x)
        normed = self.bn(raw)
        out = F.relu(normed)
        self.seen["raw"], self.seen["normed"] = raw, normed
        return out


def test_each_tensor_keeps_its_own_value(plain):
    """A conv's output read after a batch norm and a ReLU took it: each of the three is
    its own value (the conv runs again for the one read)."""
    rng = np.random.default_rng(0)
    model = ConvBnRelu(rng).eval()
    x = fastdl.randn(2, 4, 6, 6)
    with fastdl.no_grad():
        out = model(x)
        raw, normed = model.seen["raw"], model.seen["normed"]
        assert type(raw) is Tensor and type(normed) is Tensor   # computed on return
        conv_only = plain(model.conv, x)
        bn_only = plain(model.bn, conv_only)
    np.testing.assert_allclose(raw.numpy(), conv_only.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(normed.numpy(), bn_only.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.numpy(), np.maximum(bn_only.numpy(), 0), rtol=1e-5,
                               atol=1e-5)


class WritesAfterTheCall(nn.Module):
    """A conv, a write into its input through fastdl, then the conv's output read."""

    def __init__(self, write):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.write = write

    def forward(self, x):
        out = self.conv(x)
        self.write(x)   # the conv was called before: its output must not see this
        return out + x


@pytest.mark.parametrize("write", [lambda x: x.mul_(0.0), lambda x: F.relu(x, inplace=True),
                                   lambda x: x.__setitem__(0, 1.0),
                                   lambda x: x.copy_(fastdl.ones(1, 3, 4, 4))],
                         ids=["mul_", "relu inplace", "setitem", "copy_"])
def test_in_place_writes_after_the_call_are_not_seen(plain, write):
    x = fastdl.randn(1, 3, 4, 4)
    model = WritesAfterTheCall(write).eval()
    with fastdl.no_grad():
        conv = plain(model.conv, x).numpy()
        written = x.clone()
        write(written)
        out = model(x)
    np.testing.assert_allclose(out.numpy(), conv + written.numpy(), rtol=1e-6, atol=1e-6)


def test_hooks_and_outside_modules_see_values():
    rng = np.random.default_rng(1)
    model = ConvBnRelu(rng).eval()
    seen = []
    model.bn.register_forward_hook(lambda module, args, output: seen.append(output.numpy()
                                                                            .copy()))
    x = fastdl.randn(2, 4, 5, 5)
    with fastdl.no_grad():
        out = model(x)
        direct = F.conv2d(x, model.conv.weight, model.conv.bias, padding=1)
    assert type(direct) is Tensor          # outside a module call: computed at once
    np.testing.assert_allclose(np.maximum(seen[0], 0), out.numpy(), rtol=1e-6)


def test_nothing_deferred_when_autograd_records_or_in_training():
    rng = np.random.default_rng(2)
    model = ConvBnRelu(rng)
    x = fastdl.randn(2, 4, 5, 5)
    model.eval()
    out = model(x)                          # grad mode on, parameters require grad
    assert out.grad_fn is not None
    out.sum().backward()
    assert model.conv.weight.grad is not None
    model.train()
    with fastdl.no_grad():
        before = model.bn.running_mean.copy()
        model(x)
    assert not np.array_equal(before, model.bn.running_mean)   # batch statistics ran


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        self.out = F.relu(self.conv(x))
        raise ValueError("boom")


def test_an_exception_leaves_nothing_deferred():
    model = Raises().eval()
    with fastdl.no_grad(), pytest.raises(ValueError):
        model(fastdl.randn(1, 2, 3, 3))
    assert tensor_deferred.scope.depth == 0 and not tensor_deferred.scope.live
    assert type(model.out) is Tensor


def test_threads_share_a_model(plain):
    rng = np.random.default_rng(3)
    model = _random_model(rng, 8, np.float32)
    inputs = [fastdl.tensor(rng.standard_normal((2, 8, 9, 9)).astype(np.float32))
              for _ in range(4)]
    with fastdl.no_grad():
        expected = [plain(model, x).numpy() for x in inputs]
    results, errors = [None] * 4, []

    def work(index):
        try:
            with fastdl.no_grad():
                for _ in range(5):
                    results[index] = model(inputs[index]).numpy()
        except Exception as error:   # reported below
            errors.append(error)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_deploy_trace_sees_the_plain_ops():
    from fastdl import deploy
    rng = np.random.default_rng(4)
    model = _random_model(rng, 8, np.float32)
    x = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    plan = deploy.compile(model, x)
    with fastdl.no_grad():
        expected = model(fastdl.tensor(x)).numpy()
    np.testing.assert_allclose(plan(x), expected, rtol=1e-4, atol=1e-4)


class Inverted(nn.Module):
    """A MobileNetV2 block: pointwise, depthwise, pointwise, each with its batch norm,
    keeping every intermediate."""

    def __init__(self, rng):
        super().__init__()
        self.expand = nn.Conv2d(8, 48, 1, bias=False)
        self.bn1 = _random_bn(rng, 48, np.float32)
        self.depthwise = nn.Conv2d(48, 48, 3, padding=1, groups=48, bias=False)
        self.bn2 = _random_bn(rng, 48, np.float32)
        self.project = nn.Conv2d(48, 8, 1, bias=False)
        self.bn3 = _random_bn(rng, 8, np.float32)
        self.seen = []

    def forward(self, x):
        first = F.relu(self.bn1(self.expand(x)))
        second = F.relu(self.bn2(self.depthwise(first)))
        out = self.bn3(self.project(second)) + x
        self.seen = [first, second]
        return out


def test_a_chain_computes_each_conv_once(plain, monkeypatch):
    """Pointwise -> depthwise -> pointwise runs as one chain; every intermediate the
    forward kept gets its values from it, without a conv of its own."""
    from fastdl.functional import _deferred_conv
    from fastdl.kernels import conv as conv_kernels
    model = Inverted(np.random.default_rng(5)).eval()
    x = fastdl.randn(4, 8, 10, 10)
    with fastdl.no_grad():
        expected = plain(model, x)
        expected_seen = [t.numpy().copy() for t in model.seen]
        chains, singles = [], []
        run_chain, single = _deferred_conv._run_chain, conv_kernels.conv2d_forward_unchecked
        monkeypatch.setattr(_deferred_conv, "_run_chain",
                            lambda epilogue: chains.append(1) or run_chain(epilogue))
        monkeypatch.setattr(conv_kernels, "conv2d_forward_unchecked",
                            lambda *a, **k: singles.append(1) or single(*a, **k))
        out = model(x)
    assert len(chains) == 1 and not singles
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=2e-5, atol=2e-5)
    for got, want in zip(model.seen, expected_seen):
        assert type(got) is Tensor
        np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=2e-5)


class TwoInverted(nn.Module):
    """Two inverted residual blocks: the first adds its input (identity shortcut), the
    second a 1x1 conv and batch norm of it (a conv shortcut)."""

    def __init__(self, rng):
        super().__init__()
        self.first = Inverted(rng)
        self.second = Inverted(rng)
        self.second.project = nn.Conv2d(48, 12, 1, bias=False)
        self.second.bn3 = _random_bn(rng, 12, np.float32)
        self.shortcut = nn.Sequential(nn.Conv2d(8, 12, 1, bias=False),
                                      _random_bn(rng, 12, np.float32))

    def forward(self, x):
        out = self.first(x)                 # first's output + x
        second = self.second
        hidden = F.relu(second.bn2(second.depthwise(F.relu(second.bn1(second.expand(out))))))
        return second.bn3(second.project(hidden)) + self.shortcut(out)


def test_residuals_join_the_chain_and_every_conv_runs_once(plain, monkeypatch):
    """A block's input added back, and a shortcut conv of it, do not break the chain:
    the shortcut computes first, then the rest as one chain; every conv is prepared
    exactly once."""
    from fastdl.kernels import pointwise
    model = TwoInverted(np.random.default_rng(6)).eval()
    x = fastdl.randn(3, 8, 9, 9)
    with fastdl.no_grad():
        expected = plain(model, x)
        layers = []
        make = pointwise.layer
        monkeypatch.setattr(pointwise, "layer", lambda *a, **k: layers.append(1) or make(*a,
                                                                                      **k))
        out = model(x)
    assert len(layers) == 7
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("seed", [7, 8])
def test_deferred_values_do_not_depend_on_the_thread_count(seed):
    """The chains, the folded convs and the post-conv pass give the same bits on 1, 2 and
    3 threads (what every eager path guarantees)."""
    rng = np.random.default_rng(seed)
    model = TwoInverted(rng).eval() if seed % 2 else _random_model(rng, 8, np.float32)
    channels = 8
    x = fastdl.tensor(rng.standard_normal((5, channels, 9, 9)).astype(np.float32))
    outputs = []
    for threads in (1, 2, 3):
        with _threads(threads), fastdl.no_grad():
            outputs.append(model(x).numpy().copy())
    for other in outputs[1:]:
        np.testing.assert_array_equal(other, outputs[0])


class Mismatched(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 8, 1)
        self.second = nn.Conv2d(4, 8, 1)

    def forward(self, x):
        return self.second(self.first(x))


def test_a_conv_of_a_deferred_output_checks_its_arguments():
    with fastdl.no_grad(), pytest.raises(ValueError, match="input has 8 channels"):
        Mismatched().eval()(fastdl.randn(1, 3, 4, 4))
    assert tensor_deferred.scope.depth == 0 and not tensor_deferred.scope.live
