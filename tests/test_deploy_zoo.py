"""deploy.compile by tracing, on whole models: every CIFAR-10 zoo model of
ported/cifar_zoo.py (torch idiom: cat, slicing, channel shuffle views, SE gates, swish,
relu6, adaptive pooling, dropout), fastdl's FCN (interpolate, crop by slicing, add) and
ResNetFPN (three outputs), and nets of group / layer / instance norms, SE gates, swish
and channel shuffles, each equal to the eager model (float32, within 1e-5 of the output's
largest magnitude) at batches 1, 7 and 32 and after a save / load round trip."""

import numpy as np
import pytest

import fastdl
import fastdl.nn as nn
import fastdl.nn.functional as F
from fastdl import deploy
from fastdl.models import fcn, resnet_fpn

ZOO = ["VGG11", "ResNet18", "PreActResNet18", "GoogLeNet", "DenseNet", "ResNeXt",
       "MobileNet", "MobileNetV2", "ShuffleNet", "ShuffleNetV2", "SENet18", "EfficientNetB0",
       "RegNet", "DLA", "DPN", "PNASNet"]
BATCHES = (1, 7, 32)


@pytest.fixture(scope="module")
def zoo(cifar_zoo):
    return cifar_zoo("fastdl")


def _randomise_norms(model, rng):
    """Running statistics and affine parameters away from their defaults, so that folding
    them (or not) matters."""
    for module in model.modules():
        norm = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d))
        if norm and getattr(module, "running_mean", None) is not None:
            n = module.num_features
            module.running_mean[:] = rng.normal(0, 0.2, n)
            module.running_var[:] = rng.uniform(0.5, 2.0, n)
        for name in ("weight", "bias"):
            parameter = getattr(module, name, None)
            if norm or isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
                if parameter is not None:
                    parameter.data[:] = rng.uniform(0.5, 1.5, parameter.shape) \
                        if name == "weight" else rng.normal(0, 0.2, parameter.shape)
    return model.eval()


def _eager(model, x):
    with fastdl.no_grad():
        out = model(fastdl.Tensor(x))
    if isinstance(out, (tuple, list)):
        return tuple(np.array(t.array) for t in out)
    return np.array(out.array)


def _assert_close(got, expected):
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    error = float(np.max(np.abs(got - expected)))
    assert error <= 1e-5 * scale, error / scale


def check(model, shape, rng, tmp_path, batches=BATCHES):
    """Compile ``model`` for inputs ``(N,) + shape``; its plan and the plan saved and
    loaded again equal the eager forward at each batch size. Returns the plan."""
    plan = deploy.compile(model, rng.normal(size=(2,) + shape).astype(np.float32))
    path = str(tmp_path / "model.plan.safetensors")
    plan.save(path)
    loaded = deploy.load(path, max_bytes=None)
    assert loaded.outputs == plan.outputs
    for batch in batches:
        x = rng.normal(size=(batch,) + shape).astype(np.float32)
        expected, got, again = _eager(model, x), plan(x), loaded(x)
        several = isinstance(expected, tuple)
        assert isinstance(got, tuple) == several
        for mine, reloaded, theirs in zip(*((got, again, expected) if several else
                                            ((got,), (again,), (expected,)))):
            _assert_close(mine, theirs)
            np.testing.assert_array_equal(reloaded, mine)
    return plan


def kinds(plan):
    counts = {}
    for op in plan.ops:
        counts[op["op"]] = counts.get(op["op"], 0) + 1
    return counts


# ------------------------------------------------------------------------ the zoo

# what each model's plan must show of the fusions and the new ops (beyond equality)
EXPECTED = {
    "ResNet18": lambda k: set(k) == {"conv2d", "avg_pool2d", "flatten", "linear"},
    "ResNeXt": lambda k: set(k) == {"conv2d", "avg_pool2d", "flatten", "linear"},
    "GoogLeNet": lambda k: k["concat"] == 3 and "affine_channels" not in k,
    "ShuffleNet": lambda k: k["transpose"] == 4 and k["reshape"] == 8,
    "ShuffleNetV2": lambda k: k["slice"] == 2 and k["transpose"] == 4,
    "SENet18": lambda k: k["binary"] == 13,                 # 8 gates, 5 un-fusable adds
    # 48 swishes (sigmoid, product) and 16 gates; a fused silu ran slower (kernel)
    "EfficientNetB0": lambda k: k["binary"] == 64 and k["activation"] == 64,
    "DPN": lambda k: k["slice"] == 16 and k["concat"] == 4,
    "DLA": lambda k: "affine_channels" not in k and k["concat"] == 6,
}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_compiles_and_equals_eager(zoo, name, rng, tmp_path):
    model = _randomise_norms(zoo.MODELS[name](), rng)
    plan = check(model, (3, 32, 32), rng, tmp_path)
    assert plan.outputs is None
    assert EXPECTED.get(name, lambda k: True)(kinds(plan)), kinds(plan)


# ---------------------------------------------------------------- fastdl's models

def test_fcn_interpolates_crops_and_adds(rng, tmp_path):
    model = _randomise_norms(fcn(in_channels=3, num_classes=4, width=8, depth=3), rng)
    plan = check(model, (3, 21, 19), rng, tmp_path)     # odd sizes: the crops cut
    counts = kinds(plan)
    assert counts["resize"] == 3 and counts["slice"] >= 2
    # the skip adds are residuals of the classifiers' convs
    assert "binary" not in counts
    assert sum(len(op["inputs"]) == 2 for op in plan.ops if op["op"] == "conv2d") == 3


def test_resnet_fpn_returns_three_maps(rng, tmp_path):
    model = _randomise_norms(resnet_fpn(width=8, out_channels=16), rng)
    plan = check(model, (3, 16, 16), rng, tmp_path)
    assert len(plan.outputs) == 3
    x = rng.normal(size=(2, 3, 16, 16)).astype(np.float32)
    assert [out.shape for out in plan(x)] == [(2, 16, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4)]


# ------------------------------------------------------------- nets of the new ops

class NormNet(nn.Module):
    """GroupNorm, LayerNorm over (C, H, W) and over W, InstanceNorm with and without
    running statistics and affine parameters, then a softmax over the channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.group = nn.GroupNorm(4, 8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.layer = nn.LayerNorm([8, 10, 10])
        self.last = nn.LayerNorm(10, elementwise_affine=False)
        self.instance = nn.InstanceNorm2d(8, affine=True)
        self.conv3 = nn.Conv2d(8, 6, 1)
        self.tracked = nn.InstanceNorm2d(6, affine=True, track_running_stats=True)
        self.plain = nn.InstanceNorm2d(6)

    def forward(self, x):
        x = F.relu(self.group(self.conv1(x)))
        x = self.last(self.layer(self.conv2(x)))
        x = self.tracked(self.conv3(F.gelu(self.instance(x))))   # folded into conv3
        return F.log_softmax(self.plain(x), dim=1) + F.softmax(x, dim=-1)


def test_norm_net(rng, tmp_path):
    plan = check(_randomise_norms(NormNet(), rng), (3, 10, 10), rng, tmp_path)
    counts = kinds(plan)
    assert counts["group_norm"] == 3 and counts["layer_norm"] == 2
    assert counts["softmax"] == 2 and "affine_channels" not in counts


class SEGate(nn.Module):
    """Squeeze-excitation: pool -> conv -> relu -> conv -> sigmoid -> a broadcast
    product, with swish (x * sigmoid(x)) around it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.reduce, self.expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.conv(x)
        x = x * x.sigmoid()
        gate = self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1))))
        x = x * fastdl.sigmoid(gate)
        x = fastdl.sigmoid(x) * x
        return self.head(x.mean((2, 3)))


def test_se_gate_and_swish(rng, tmp_path):
    plan = check(SEGate(), (3, 12, 12), rng, tmp_path)
    activations = [op["kind"] for op in plan.ops if op["op"] == "activation"]
    assert activations == ["sigmoid"] * 3 and kinds(plan)["binary"] == 3
    assert len([op for op in plan.ops if op["op"] == "conv2d" and
                op["negative_slope"] == 0.0]) == 1              # the relu in reduce's epilogue


class Shuffle(nn.Module):
    """Channel shuffles (view / transpose / contiguous / view, and F.channel_shuffle),
    chunks and concatenation, as ShuffleNetV2's blocks."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6), nn.ReLU())

    def forward(self, x):
        x = self.conv(x)
        n, c, h, w = x.shape
        x = x.view(n, 3, c // 3, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        left, right = x.chunk(2, dim=1)
        x = fastdl.cat([left, self.branch(right)], 1)
        return F.channel_shuffle(x, 2)


def test_channel_shuffle(rng, tmp_path):
    plan = check(_randomise_norms(Shuffle(), rng), (3, 8, 8), rng, tmp_path)
    counts = kinds(plan)
    assert counts["transpose"] == 2 and counts["slice"] == 2 and counts["concat"] == 1
