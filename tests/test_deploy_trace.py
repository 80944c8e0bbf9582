"""deploy.compile of user-defined Modules, by a trace of their eval-mode forward: torch-
style models (functional calls, views, in-place and out-of-place residual adds, BN in
forward, the CIFAR zoo's VGG and ResNet18) equal the eager model at several batch sizes
and after save/load; random custom forwards equal it at batches 1-9 on 1 and 2 threads;
the graph ops (cat, products and quotients with numbers and parameters, expand,
indexing, the elementwise activations, interpolate, pad, permutes, softmax) and several
outputs compile; what a plan cannot run (control flow on the input, a dict output, ops
over the batch axis, tensors made in the forward, reductions other than a spatial mean)
is refused with a ValueError naming it and the module that ran it."""

import numpy as np
import pytest

import fastdl
import fastdl.nn as nn
import fastdl.nn.functional as F
from fastdl import deploy


def _randomise_stats(model, rng):
    """BatchNorms with running statistics and affine parameters that are not the
    defaults (so folding them matters)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) or isinstance(module, nn.BatchNorm1d):
            n = module.num_features
            module.running_mean[:] = rng.normal(0, 0.2, n)
            module.running_var[:] = rng.uniform(0.5, 2.0, n)
            module.weight.data[:] = rng.uniform(0.5, 1.5, n)
            module.bias.data[:] = rng.normal(0, 0.2, n)
    return model.eval()


def _eager(model, x):
    with fastdl.no_grad():
        return model(fastdl.Tensor(x)).array


def _assert_close(got, expected):
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    assert got.shape == expected.shape
    assert float(np.max(np.abs(got - expected))) <= 1e-5 * scale * 10, \
        float(np.max(np.abs(got - expected))) / scale


def _check(model, shape, rng, tmp_path, batches=(1, 7, 32)):
    example = rng.normal(size=(2,) + shape).astype(np.float32)
    plan = deploy.compile(model, example)
    path = str(tmp_path / "traced.plan.safetensors")
    plan.save(path)
    loaded = deploy.load(path, max_bytes=None)   # the zoo's VGG passes the default
    for batch in batches:
        x = rng.normal(size=(batch,) + shape).astype(np.float32)
        expected = _eager(model, x)
        _assert_close(plan(x), expected)
        np.testing.assert_array_equal(loaded(x), plan(x))
    return plan


# ------------------------------------------------------------------ torch-style models

class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = fastdl.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, in_place):
        super().__init__()
        self.in_place = in_place
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.in_place:
            out += self.shortcut(x)
        else:
            out = out + self.shortcut(x)
        return F.relu(out)


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 8, 1, True), Block(8, 8, 1, False))
        self.layer2 = nn.Sequential(Block(8, 16, 2, True), Block(16, 16, 1, False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = self.pool(out)
        return self.fc(out.view(out.size(0), -1))


class BNInForward(nn.Module):
    """BN after a conv (folded), BN on the input (an affine map), BN1d after a linear,
    leaky ReLU, sigmoid, tanh, average pooling, Tensor.relu."""

    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.fc = nn.Linear(8 * 3 * 3, 12)
        self.bn1d = nn.BatchNorm1d(12)
        self.out = nn.Linear(12, 5)

    def forward(self, x):
        x = self.bn(self.conv(self.bn0(x)))
        x = F.leaky_relu(x, 0.1)
        x = F.avg_pool2d(self.conv2(x).relu(), 2, ceil_mode=True)
        x = fastdl.sigmoid(x).reshape(x.shape[0], -1)
        return fastdl.tanh(self.out(F.relu(self.bn1d(self.fc(x)))))


def test_lenet(rng, tmp_path):
    plan = _check(LeNet(), (3, 32, 32), rng, tmp_path)
    assert [op["op"] for op in plan.ops] == ["conv2d", "max_pool2d", "conv2d", "max_pool2d",
                                             "flatten", "linear", "linear", "linear"]
    assert "conv1.weight" in plan.tensors   # weights keep their parameters' names


def test_resnet_with_custom_blocks(rng, tmp_path):
    model = _randomise_stats(SmallResNet(), rng)
    plan = _check(model, (3, 16, 16), rng, tmp_path)
    kinds = [op["op"] for op in plan.ops]
    assert "affine_channels" not in kinds and "activation" not in kinds   # all folded
    residuals = [op for op in plan.ops if len(op["inputs"]) == 2]
    assert len(residuals) == 4 and all(op["negative_slope"] == 0.0 for op in residuals)


def test_batch_norm_in_forward(rng, tmp_path):
    model = _randomise_stats(BNInForward(), rng)
    plan = _check(model, (3, 12, 12), rng, tmp_path)
    kinds = [op["op"] for op in plan.ops]
    assert kinds.count("affine_channels") == 1    # the input's BN; the others are folded


@pytest.mark.parametrize("name", ["VGG", "ResNet18"])
def test_cifar_zoo(name, rng, tmp_path, cifar_zoo):
    zoo = cifar_zoo("fastdl")
    model = _randomise_stats(zoo.VGG() if name == "VGG" else zoo.ResNet18(), rng)
    plan = _check(model, (3, 32, 32), rng, tmp_path, batches=(1, 7))
    assert "affine_channels" not in [op["op"] for op in plan.ops]


# -------------------------------------------------------------- random custom forwards

class RandomNet(nn.Module):
    """A random chain of the traced ops, run by a Python forward."""

    def __init__(self, rng):
        super().__init__()
        self.steps, channels, size = [], 3, 10
        layers = []
        for index in range(int(rng.integers(2, 6))):
            choice = rng.choice(["conv", "residual", "pool", "act"])
            if choice in ("conv", "residual") or index == 0:
                out = channels if choice == "residual" else int(rng.integers(2, 7))
                conv = nn.Conv2d(channels, out, 3, padding=1, bias=bool(rng.integers(2)))
                bn = nn.BatchNorm2d(out) if rng.integers(2) else None
                layers += [conv] + ([bn] if bn is not None else [])
                kind = "residual" if choice == "residual" and out == channels else "conv"
                self.steps.append((kind, conv, bn, rng.choice(["relu", "leaky", "none"])))
                channels = out
            elif choice == "pool" and size >= 4:
                self.steps.append(("pool", rng.choice(["max", "avg"]), None, None))
                size //= 2
            else:
                self.steps.append(("act", rng.choice(["sigmoid", "tanh", "relu"]), None,
                                   None))
        self.body = nn.ModuleList(layers)
        self.fc = nn.Linear(channels * size * size, 4)

    def forward(self, x):
        for kind, a, bn, activation in self.steps:
            if kind in ("conv", "residual"):
                y = a(x)
                if bn is not None:
                    y = bn(y)
                if kind == "residual":
                    y = y + x
                if activation == "relu":
                    y = F.relu(y)
                elif activation == "leaky":
                    y = F.leaky_relu(y, 0.2)
                x = y
            elif kind == "pool":
                x = F.max_pool2d(x, 2) if a == "max" else F.avg_pool2d(x, 2)
            else:
                x = {"sigmoid": fastdl.sigmoid, "tanh": fastdl.tanh,
                     "relu": lambda t: t.relu()}[a](x)
        return self.fc(x.view(x.shape[0], -1))


@pytest.mark.parametrize("seed", range(12))
def test_random_custom_forwards(seed):
    rng = np.random.default_rng(1000 + seed)
    model = _randomise_stats(RandomNet(rng), rng)
    plan = deploy.compile(model, rng.normal(size=(3, 3, 10, 10)).astype(np.float32))
    previous = fastdl.get_num_threads()
    try:
        for threads in (1, 2):
            fastdl.set_num_threads(threads)
            for batch in range(1, 10):
                x = rng.normal(size=(batch, 3, 10, 10)).astype(np.float32)
                _assert_close(plan(x), _eager(model, x))
    finally:
        fastdl.set_num_threads(previous)


# ------------------------------------------------------------------ the graph ops

class Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return fastdl.cat([self.a(x), self.b(x)], 1)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.a(x)
        return y, F.relu(y), y      # the conv's output is returned twice and read again


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.inner = nn.Sequential(nn.Conv2d(4, 4, 1))

    def forward(self, x):
        y = self.a(x)
        return y * fastdl.sigmoid(self.inner(y))


class Arithmetic(nn.Module):
    """Numbers and parameters on either side of + - * /, negation, a per-channel scale
    parameter (layer scale), broadcasting of two values, expand (left to the product's
    broadcasting, and concatenated as it is), indexing with ints and None."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scale = nn.Parameter(fastdl.Tensor(np.linspace(0.5, 2, 4).reshape(4, 1, 1)
                                                .astype(np.float32)))
        self.register_buffer("offset", fastdl.Tensor(np.arange(8, dtype=np.float32)))

    def forward(self, x):
        y = self.conv(x) + 1.0
        y = (1 - y) * 0.5 + y / 6 - 2 / (y.sigmoid() + 1)
        y = -(self.scale * y) - self.scale
        pooled = y.mean((2, 3), keepdim=True)
        y = y * pooled.expand(-1, -1, 8, 8) + y[:, 1:2] - y[:, 0][:, None]
        y = fastdl.cat([y, pooled.expand(y.shape)], 1)
        return y + self.offset


class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.prelu = nn.PReLU(6)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.conv(x)
        parts = [F.relu6(x), F.hardswish(x), F.hardsigmoid(x), F.silu(x), F.gelu(x),
                 F.gelu(x, approximate="tanh"), F.elu(x, 0.5), F.selu(x), F.celu(x, 2.0),
                 F.softplus(x, 2.0, 5.0), F.mish(x), F.hardtanh(x, -0.5, 0.25),
                 x.clamp(-1, 1), x.clamp(min=0), F.leaky_relu(x, 0.3), self.prelu(x),
                 fastdl.tanh(x), self.dropout(F.dropout(x, 0.5, training=self.training))]
        return fastdl.cat(parts, 1)


class Resizes(nn.Module):
    """interpolate: integer factors (nearest, bilinear), sizes with and without aligned
    corners, a non-integer scale factor (its coordinates mapped by the factor), bicubic,
    nearest-exact, and nn.Upsample; F.pad; a permute and back; a mean without keepdim."""

    def __init__(self):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a = F.interpolate(x, scale_factor=2) + self.up(x)
        b = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=True)
        c = F.interpolate(x, scale_factor=1.7, mode="bilinear")        # 13 x 13
        c = F.interpolate(c, size=(16, 16), mode="bicubic")
        d = F.interpolate(F.pad(x, (1, 1, 1, 1)), size=(16, 16), mode="nearest-exact")
        y = a * b - c + d
        y = y.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        y = fastdl.cat([y, F.pad(y, (0, 0, 0, 0), mode="reflect")], 1)
        return F.softmax(self.head(y[:, :4].mean((2, 3))), dim=1)


@pytest.mark.parametrize("model, shape", [
    (Cat(), (3, 8, 8)), (Gate(), (3, 8, 8)), (Arithmetic(), (3, 8, 8)),
    (Activations(), (3, 8, 8)), (Resizes(), (4, 8, 8))])
def test_graph_ops(model, shape, rng, tmp_path):
    plan = _check(model.eval(), shape, rng, tmp_path, batches=(1, 5))  # eval: dropout passes
    kinds = [op["op"] for op in plan.ops]
    if isinstance(model, Arithmetic):
        # y[:, 0][:, None]: one slice and one reshape (of two); one expand is left to the
        # product's broadcasting, the concatenated one adds zeros
        assert kinds.count("reshape") == 1 and kinds.count("slice") == 2
        others = [plan.tensors[op["weights"]["other"]] for op in plan.ops
                  if op["op"] == "binary" and "weights" in op]
        assert kinds.count("binary") == 16 and len(others) == 11
        assert [o.shape for o in others].count((1, 4, 8, 8)) == 1
        assert not np.any([o for o in others if o.shape == (1, 4, 8, 8)])
    if isinstance(model, Resizes):
        assert kinds.count("pad2d") == 1 and kinds.count("resize") == 6   # no empty pad


def test_several_outputs(rng, tmp_path):
    model = TwoOutputs()
    plan = deploy.compile(model, rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    assert len(plan.outputs) == 3 and plan.outputs[0] == plan.outputs[2]
    assert [op["op"] for op in plan.ops] == ["conv2d", "activation"]   # no relu fused
    x = rng.normal(size=(3, 3, 8, 8)).astype(np.float32)
    with fastdl.no_grad():
        expected = [t.array for t in model(fastdl.Tensor(x))]
    got = plan(x)
    assert isinstance(got, tuple) and len(got) == 3 and got[0] is not got[2]
    for mine, theirs in zip(got, expected):
        _assert_close(mine, theirs)

    class Halves(nn.Module):       # a list of one output, and the input itself
        def forward(self, x):
            return [x]
    plan = deploy.compile(Halves(), x)
    assert isinstance(plan(x), tuple) and np.array_equal(plan(x)[0], x)


def test_modes_are_restored_per_module(rng):
    """A container in training mode over modules in eval mode (a module made to run
    others) keeps that after compiling."""
    body = _randomise_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), rng)
    outer = type("Outer", (nn.Module,), {"forward": lambda self, x: self.body(x)})()
    outer.body = body
    assert outer.training and not body.training
    deploy.compile(outer, rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    assert outer.training and not any(m.training for m in body.modules())


# ------------------------------------------------------------------------- refusals

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if float(x.sum()) > 0:
            return self.a(x)
        return self.b(x)


class Outer(nn.Module):
    """Its inner block branches on the input's values. The stem has no bias, so it is
    linear: the second trace's negated batch flips the sign of the sum the block
    branches on, whatever the stem's random weights."""

    def __init__(self):
        super().__init__()
        self.stem, self.block = nn.Conv2d(3, 3, 1, bias=False), Branchy()

    def forward(self, x):
        return self.block(self.stem(x))


def _module(body, **modules):
    model = type(body.__name__, (nn.Module,), {"forward": body})()
    for name, module in modules.items():
        setattr(model, name, module)
    return model


def _dict_output(self, x):
    return {"logits": self.a(x)}


def _batch_concat(self, x):
    return fastdl.cat([self.a(x), self.a(x)], 0)


def _made_tensor(self, x):
    return self.a(x) * fastdl.Tensor(np.ones((1, 4, 1, 1), np.float32))


def _channel_sum(self, x):
    return self.a(x).sum(1)


def _batch_slice(self, x):
    return self.a(x)[:1]


def _exp(self, x):
    return self.a(x).exp()


@pytest.mark.parametrize("model, match", [
    (Branchy(), "depends on its input.*first at op 1, inside module 'model' \\(Branchy\\): "
                "conv2d in module 'a' \\(Conv2d\\), then conv2d in module 'b'"),
    (Outer(), "depends on its input.*inside module 'block' \\(Branchy\\): conv2d in "
              "module 'block.[ab]' \\(Conv2d\\), then conv2d in module 'block.[ab]'"),
    (_module(_dict_output, a=nn.Conv2d(3, 4, 3)), "returns a dict; a plan's outputs are "
                                                   "positional"),
    (_module(_batch_concat, a=nn.Conv2d(3, 4, 3)), "Concatenate in module 'model' "
                                                    "\\(_batch_concat\\): its output of shape "
                                                    ".* does not keep the batch"),
    (_module(_made_tensor, a=nn.Conv2d(3, 4, 3)), "Mul in .*neither computed from the "
                                                   "input nor a parameter or buffer"),
    (_module(_channel_sum, a=nn.Conv2d(3, 4, 3)), "Sum in module 'model' "
                                                   "\\(_channel_sum\\): not an op"),
    (_module(_batch_slice, a=nn.Conv2d(3, 4, 3)), "GetItem in .* does not keep the batch"),
    (_module(_exp, a=nn.Conv2d(3, 4, 3)), "Exp in module 'model' \\(_exp\\)"),
])
def test_refusals_name_what_a_plan_cannot_run(model, match, rng):
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    x[0] += 3.0    # the sum is positive (the second trace's, negated, is negative)
    with pytest.raises(ValueError, match=match):
        deploy.compile(model, x)
    assert model.training     # the model's mode is restored


def test_refusal_names_the_inner_module(rng):
    class Exponential(nn.Module):
        def forward(self, x):
            return x.exp()
    model = type("Outer", (nn.Module,), {"forward": lambda self, x: self.up(self.conv(x))})()
    model.conv, model.up = nn.Conv2d(3, 4, 3), Exponential()
    with pytest.raises(ValueError, match="in module 'up' \\(Exponential\\)"):
        deploy.compile(model, rng.normal(size=(1, 3, 8, 8)).astype(np.float32))


def test_registered_classes_keep_the_registry_path(rng):
    """A Sequential of fastdl's layers is lowered by the registry (its ops as before)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    assert deploy.compiler.lowers(model)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    plan = deploy.compile(model, x)
    assert "0.weight" in plan.tensors
    _assert_close(plan(x), _eager(model, x))
