"""Modules: registration, state dicts, modes, freezing, casts, layer gradients and errors."""
import os

import numpy as np
import pytest

import fastdl
from fastdl import functional as F, nn
from fastdl.testing import gradcheck


def _x(rng, *shape):
    return fastdl.Tensor(rng.normal(size=shape), requires_grad=True)


LAYERS = {
    "Linear": (lambda: nn.Linear(4, 3), (2, 4)),
    "Conv2d": (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), (2, 2, 5, 5)),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1,
                                                   output_padding=1), (1, 4, 3, 3)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3), (5, 3)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), (2, 3, 3, 3)),
    "LayerNorm": (lambda: nn.LayerNorm(6), (3, 6)),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), (2, 4, 3, 3)),
    "InstanceNorm2d": (lambda: nn.InstanceNorm2d(3, affine=True), (2, 3, 3, 3)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (1, 2, 4, 4)),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, 1, 1), (1, 2, 4, 4)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d(1), (2, 2, 3, 3)),
    "ReLU": (nn.ReLU, (3, 4)), "LeakyReLU": (lambda: nn.LeakyReLU(0.1), (3, 4)),
    "Sigmoid": (nn.Sigmoid, (3, 4)), "Tanh": (nn.Tanh, (3, 4)),
    "Flatten": (nn.Flatten, (2, 3, 2)), "Identity": (nn.Identity, (2, 2)),
    "Upsample": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 1, 2, 3)),
    "BasicBlock": (lambda: nn.BasicBlock(2, 4, 2), (2, 2, 5, 5)),
    "Sequential": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(8, 2)), (2, 1, 4, 4)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradcheck_through_parameters_and_input(name, rng):
    factory, shape = LAYERS[name]
    fastdl.manual_seed(0)
    layer = factory().double()
    params = list(layer.parameters())

    def run(x, *weights):
        return layer(x)
    assert gradcheck(run, [_x(rng, *shape)] + params)


def test_registration_and_state_dict_names():
    block = nn.BasicBlock(2, 4, 2)
    names = [n for n, _ in block.named_parameters()]
    assert names == ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight",
                     "bn2.bias", "shortcut.0.weight", "shortcut.1.weight", "shortcut.1.bias"]
    state = block.state_dict()
    assert "bn1.running_mean" in state and "shortcut.1.num_batches_tracked" in state
    assert [n for n, _ in block.named_modules()][:3] == ["", "conv1", "bn1"]
    assert "BasicBlock(" in repr(block) and "(conv1): Conv2d(2, 4" in repr(block)


def test_manual_seed_makes_init_reproducible_and_kaiming_bounds():
    fastdl.manual_seed(5)
    a = nn.Conv2d(8, 4, 3).weight.array.copy()
    fastdl.manual_seed(5)
    b = nn.Conv2d(8, 4, 3).weight.array
    np.testing.assert_array_equal(a, b)
    bound = np.sqrt(6 / ((1 + 5) * 8 * 9))  # kaiming_uniform(a=sqrt(5)) = 1/sqrt(fan_in)
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.8 * bound


def test_train_eval_and_batch_norm_uses_running_stats_in_eval(rng):
    bn = nn.BatchNorm2d(2)
    x = fastdl.Tensor(rng.normal(size=(4, 2, 3, 3)).astype(np.float32) * 3 + 2)
    bn(x)
    bn.eval()
    y = bn(x).array
    expected = (x.array - bn.running_mean.reshape(1, -1, 1, 1)) / np.sqrt(
        bn.running_var.reshape(1, -1, 1, 1) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5)
    assert not any(m.training for m in bn.modules())


def test_freeze_and_zero_grad(rng):
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    out = model(fastdl.Tensor(rng.normal(size=(2, 3)).astype(np.float32))).sum()
    out.backward()
    assert model[0].weight.grad is None and model[1].weight.grad is not None
    model.zero_grad()
    assert model[1].weight.grad is None


def test_load_state_dict_errors_name_the_key():
    model = nn.Sequential(nn.Linear(3, 2))
    state = model.state_dict()
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight: .*\\(5, 5\\)"):
        model.load_state_dict({"0.weight": np.zeros((5, 5)), "0.bias": state["0.bias"]})
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "0.bias".*\n.*'
                                           'Unexpected key\\(s\\) in state_dict: "extra"'):
        model.load_state_dict({"0.weight": state["0.weight"], "extra": np.zeros(1)})
    missing, unexpected = model.load_state_dict({"0.weight": np.ones((2, 3))}, strict=False)
    assert missing == ["0.bias"] and np.all(model[0].weight.array == 1)


def test_save_load_round_trip_restores_identical_outputs(tmp_path, rng):
    from fastdl.models import resnet8
    fastdl.manual_seed(0)
    model = resnet8(width=4)
    model(fastdl.Tensor(rng.normal(size=(2, 3, 8, 8)).astype(np.float32)))  # move BN stats
    model.eval()
    x = fastdl.Tensor(rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    expected = model(x).array
    path = tmp_path / "resnet8.safetensors"
    fastdl.save(model.state_dict(), path)
    fastdl.manual_seed(1)
    other = resnet8(width=4).eval()
    other.load_state_dict(fastdl.load(path))
    np.testing.assert_array_equal(other(x).array, expected)


def test_load_rejects_non_safetensors_without_executing(tmp_path):
    import pickle
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        fastdl.load(path)
    assert not marker.exists()
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")
    with pytest.raises(ValueError):
        fastdl.load(path)


def test_float_double_casts_in_place_on_parameters():
    layer = nn.Linear(2, 2)
    weight = layer.weight
    layer.double()
    assert layer.weight is weight and weight.dtype == np.float64
    bn = nn.BatchNorm2d(2).double()
    assert bn.running_mean.dtype == np.float64 and bn.num_batches_tracked.dtype == np.int64


@pytest.mark.parametrize("factory, error, match", [
    (lambda: nn.Linear(0, 3), ValueError, "in_features"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "in_channels must be divisible by "
                                                        "groups"),
    (lambda: nn.Conv2d(4, 3, 3, groups=2), ValueError, "out_channels must be divisible"),
    (lambda: nn.Conv2d(3, 4, 0), ValueError, "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, stride=(1, 2, 3)), TypeError, "stride"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
    (lambda: nn.GroupNorm(3, 4), ValueError, "divisible by num_groups"),
    (lambda: nn.BatchNorm2d(0), ValueError, "num_features"),
    (lambda: nn.BatchNorm2d(3, eps=-1), ValueError, "eps"),
    (lambda: nn.Dropout(1.5), ValueError, "probability"),
    (lambda: nn.MaxPool2d(0), ValueError, "kernel_size"),
    (lambda: nn.Upsample(scale_factor=2, mode="cubic"), ValueError, "mode"),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), ValueError, "reduction"),
    (lambda: nn.FocalLoss(gamma=-1), ValueError, "gamma"),
    (lambda: nn.BasicBlock(0, 4), ValueError, "in_ch"),
])
def test_bad_constructor_arguments(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


@pytest.mark.parametrize("layer, shape, match", [
    (lambda: nn.BatchNorm2d(3), (2, 4, 3, 3), "expected 3 channels"),
    (lambda: nn.BatchNorm2d(3), (2, 3), "dimensions"),
    (lambda: nn.Conv2d(3, 4, 3), (2, 2, 5, 5), "input channels"),
    (lambda: nn.Linear(4, 2), (2, 5), "features"),
    (lambda: nn.LayerNorm(5), (2, 4), "normalized_shape"),
])
def test_bad_call_inputs(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer()(fastdl.Tensor(np.zeros(shape, np.float32)))


def test_sequential_runs_a_conv_and_its_relu_as_one_op_with_the_same_results(rng, monkeypatch):
    conv = nn.Conv2d(2, 5, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2))
    x = fastdl.Tensor(rng.normal(size=(2, 2, 6, 6)).astype(np.float32), requires_grad=True)
    expected = F.max_pool2d(F.relu(F.conv2d(x, conv.weight, conv.bias, 1, 1)), 2)
    calls = []
    fused_op = F.conv2d_relu
    monkeypatch.setattr(F, "conv2d_relu", lambda *a: calls.append(1) or fused_op(*a))
    out = model(x)
    assert calls == [1]
    np.testing.assert_array_equal(out.array, expected.array)


def test_sequential_leaves_subclassed_layers_unfused(rng, monkeypatch):
    class Doubling(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    class Shifted(nn.ReLU):
        def forward(self, x):
            return super().forward(x) + 1
    monkeypatch.setattr(F, "conv2d_relu", None)   # any fused call would fail
    x = fastdl.Tensor(rng.normal(size=(1, 2, 5, 5)).astype(np.float32))
    conv = Doubling(2, 3, 3)
    assert np.all(nn.Sequential(conv, nn.ReLU())(x).array >= 0)
    plain = nn.Conv2d(2, 3, 3)
    assert np.all(nn.Sequential(plain, Shifted())(x).array >= 1)
