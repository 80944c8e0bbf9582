"""Layers built with the same code from ``torch.nn`` and ``fastdl.nn``: torch's state dict
loads strictly, forward, backward and running statistics agree (float64), ``repr`` is
torch's; finite differences through each layer; constructor errors."""
from collections import OrderedDict

import numpy as np
import pytest

import fastdl
from fastdl import nn
from fastdl.testing import gradcheck

# name -> (build(nn), input shape); build is called with torch.nn and with fastdl.nn
LAYERS = {
    "Conv1d": (lambda nn: nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
               (2, 4, 9)),
    "Conv1d_reflect": (lambda nn: nn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect"),
                       (2, 2, 7)),
    "Conv2d_same": (lambda nn: nn.Conv2d(2, 3, (2, 3), padding="same", bias=False),
                    (2, 2, 5, 6)),
    "Conv2d_valid": (lambda nn: nn.Conv2d(2, 3, 3, padding="valid"), (1, 2, 5, 6)),
    "Conv2d_reflect": (lambda nn: nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="reflect"),
                       (2, 2, 5, 6)),
    "Conv2d_replicate": (lambda nn: nn.Conv2d(2, 4, 3, 2, 1, padding_mode="replicate",
                                              groups=2), (2, 2, 5, 6)),
    "Conv2d_circular": (lambda nn: nn.Conv2d(2, 3, 3, padding="same", dilation=2,
                                             padding_mode="circular"), (1, 2, 6, 5)),
    "ConvTranspose1d": (lambda nn: nn.ConvTranspose1d(3, 2, 3, 2, 1, 1), (2, 3, 4)),
    "ConvTranspose2d": (lambda nn: nn.ConvTranspose2d(4, 2, 3, 2, 1, 1, groups=2, dilation=1),
                        (1, 4, 3, 3)),
    "Linear": (lambda nn: nn.Linear(5, 3), (2, 4, 5)),
    "BatchNorm1d_2d": (lambda nn: nn.BatchNorm1d(3), (5, 3)),
    "BatchNorm1d_3d": (lambda nn: nn.BatchNorm1d(3, momentum=None), (4, 3, 5)),
    "BatchNorm2d": (lambda nn: nn.BatchNorm2d(3, eps=1e-3, momentum=0.3), (2, 3, 3, 4)),
    "BatchNorm2d_no_affine": (lambda nn: nn.BatchNorm2d(3, affine=False), (2, 3, 3, 4)),
    "BatchNorm2d_no_bias": (lambda nn: nn.BatchNorm2d(3, bias=False), (2, 3, 3, 4)),
    "BatchNorm2d_no_stats": (lambda nn: nn.BatchNorm2d(3, track_running_stats=False),
                             (2, 3, 3, 4)),
    "LayerNorm": (lambda nn: nn.LayerNorm((3, 4)), (2, 3, 3, 4)),
    "LayerNorm_no_bias": (lambda nn: nn.LayerNorm(4, bias=False), (2, 3, 4)),
    "GroupNorm": (lambda nn: nn.GroupNorm(2, 4), (2, 4, 3, 3)),
    "GroupNorm_no_bias": (lambda nn: nn.GroupNorm(1, 4, bias=False), (2, 4, 3, 3)),
    "InstanceNorm1d": (lambda nn: nn.InstanceNorm1d(3, affine=True), (2, 3, 5)),
    "InstanceNorm2d": (lambda nn: nn.InstanceNorm2d(3, track_running_stats=True),
                       (2, 3, 3, 4)),
    "ReLU": (lambda nn: nn.ReLU(inplace=True), (2, 3, 4)),
    "ReLU6": (lambda nn: nn.ReLU6(True), (2, 3, 4)),
    "LeakyReLU": (lambda nn: nn.LeakyReLU(0.2, inplace=True), (2, 3, 4)),
    "GELU": (lambda nn: nn.GELU(), (2, 3, 4)),
    "GELU_tanh": (lambda nn: nn.GELU(approximate="tanh"), (2, 3, 4)),
    "SiLU": (lambda nn: nn.SiLU(), (2, 3, 4)),
    "Mish": (lambda nn: nn.Mish(), (2, 3, 4)),
    "Hardswish": (lambda nn: nn.Hardswish(), (2, 3, 4)),
    "Hardsigmoid": (lambda nn: nn.Hardsigmoid(), (2, 3, 4)),
    "Hardtanh": (lambda nn: nn.Hardtanh(-2.0, 0.5), (2, 3, 4)),
    "ELU": (lambda nn: nn.ELU(alpha=0.5), (2, 3, 4)),
    "CELU": (lambda nn: nn.CELU(alpha=2.0), (2, 3, 4)),
    "SELU": (lambda nn: nn.SELU(), (2, 3, 4)),
    "PReLU": (lambda nn: nn.PReLU(3, init=0.1), (2, 3, 4)),
    "Softplus": (lambda nn: nn.Softplus(beta=2, threshold=5), (2, 3, 4)),
    "Softmax": (lambda nn: nn.Softmax(dim=1), (2, 3, 4)),
    "LogSoftmax": (lambda nn: nn.LogSoftmax(dim=-1), (2, 3, 4)),
    "Softmin": (lambda nn: nn.Softmin(dim=0), (2, 3, 4)),
    "Sigmoid": (lambda nn: nn.Sigmoid(), (2, 3, 4)),
    "Tanh": (lambda nn: nn.Tanh(), (2, 3, 4)),
    "LogSigmoid": (lambda nn: nn.LogSigmoid(), (2, 3, 4)),
    "MaxPool1d": (lambda nn: nn.MaxPool1d(3, 2, 1, dilation=2), (2, 3, 9)),
    "MaxPool2d": (lambda nn: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (1, 2, 7, 6)),
    "MaxPool2d_dilated": (lambda nn: nn.MaxPool2d((2, 3), 1, (1, 0), dilation=(2, 1)),
                          (1, 2, 7, 6)),
    "AvgPool1d": (lambda nn: nn.AvgPool1d(3, 2, 1, count_include_pad=False), (2, 3, 9)),
    "AvgPool2d": (lambda nn: nn.AvgPool2d(3, 2, 1, divisor_override=3), (1, 2, 7, 6)),
    "AdaptiveAvgPool1d": (lambda nn: nn.AdaptiveAvgPool1d(4), (2, 3, 9)),
    "AdaptiveAvgPool2d": (lambda nn: nn.AdaptiveAvgPool2d((None, 3)), (1, 2, 7, 5)),
    "AdaptiveMaxPool1d": (lambda nn: nn.AdaptiveMaxPool1d(4), (2, 3, 9)),
    "AdaptiveMaxPool2d": (lambda nn: nn.AdaptiveMaxPool2d((3, 2)), (1, 2, 7, 5)),
    "Upsample_nearest": (lambda nn: nn.Upsample(scale_factor=2), (1, 2, 3, 4)),
    "Upsample_bilinear": (lambda nn: nn.Upsample(size=(5, 7), mode="bilinear",
                                                 align_corners=True), (1, 2, 3, 4)),
    "Upsample_bicubic": (lambda nn: nn.Upsample(scale_factor=1.5, mode="bicubic"),
                         (1, 2, 3, 4)),
    "UpsamplingNearest2d": (lambda nn: nn.UpsamplingNearest2d(size=5), (1, 2, 3, 4)),
    "UpsamplingBilinear2d": (lambda nn: nn.UpsamplingBilinear2d(scale_factor=2),
                             (1, 2, 3, 4)),
    "PixelShuffle": (lambda nn: nn.PixelShuffle(2), (1, 8, 2, 3)),
    "PixelUnshuffle": (lambda nn: nn.PixelUnshuffle(2), (1, 2, 4, 2)),
    "ChannelShuffle": (lambda nn: nn.ChannelShuffle(2), (1, 4, 2, 3)),
    "Unfold": (lambda nn: nn.Unfold(3, padding=1, stride=2), (1, 2, 5, 4)),
    "Fold": (lambda nn: nn.Fold((4, 5), 2, dilation=2), (1, 8, 6)),
    "ZeroPad2d": (lambda nn: nn.ZeroPad2d((1, 0, 2, -1)), (1, 2, 3, 4)),
    "ConstantPad1d": (lambda nn: nn.ConstantPad1d(2, 1.5), (2, 3, 4)),
    "ReflectionPad2d": (lambda nn: nn.ReflectionPad2d(2), (1, 2, 3, 4)),
    "ReflectionPad1d": (lambda nn: nn.ReflectionPad1d((3, 1)), (2, 3, 4)),
    "ReplicationPad2d": (lambda nn: nn.ReplicationPad2d((0, 2, 1, 3)), (1, 2, 3, 4)),
    "CircularPad2d": (lambda nn: nn.CircularPad2d(1), (1, 2, 3, 4)),
    "Softmax2d": (lambda nn: nn.Softmax2d(), (2, 3, 2, 2)),
    "LocalResponseNorm": (lambda nn: nn.LocalResponseNorm(3, k=2.0), (2, 5, 2, 3)),
    "Flatten": (lambda nn: nn.Flatten(0, 1), (2, 3, 4)),
    "Unflatten": (lambda nn: nn.Unflatten(1, (2, -1)), (2, 6, 4)),
    "Identity": (lambda nn: nn.Identity(3, unused=True), (2, 3)),
    "Dropout": (lambda nn: nn.Dropout(0.3), (2, 3)),
    "Dropout2d": (lambda nn: nn.Dropout2d(0.3, inplace=True), (2, 3, 4, 4)),
    "Sequential": (lambda nn: nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(2, 3, 3, padding=1)), ("bn", nn.BatchNorm2d(3)),
        ("act", nn.ReLU()), ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
        ("fc", nn.Linear(3, 2))])), (2, 2, 5, 5)),
}
RANDOM = {"Dropout", "Dropout2d"}   # compared in eval mode only


def _pair(name, torch):
    torch.manual_seed(0)
    build, shape = LAYERS[name]
    reference = build(torch.nn).double()
    ours = build(nn).double()
    with torch.no_grad():   # non-default parameters and statistics, so the load shows
        for tensor in list(reference.parameters()) + [b for b in reference.buffers()
                                                      if b.is_floating_point()]:
            tensor.uniform_(0.5, 1.5)
    ours.load_state_dict(reference.state_dict())   # strict
    return ours, reference, shape


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_torch(name, rng):
    torch = pytest.importorskip("torch")
    ours, reference, shape = _pair(name, torch)
    assert repr(ours) == repr(reference)
    assert list(ours.state_dict()) == list(reference.state_dict())
    modes = [False] if name in RANDOM else [True, False]
    for training in modes:
        ours.train(training)
        reference.train(training)
        x = rng.normal(size=shape)
        mine = fastdl.Tensor(x.copy(), requires_grad=True)
        theirs = torch.tensor(x, requires_grad=True)
        # through one op first: torch refuses in-place layers on a leaf that requires grad
        out, expected = ours(mine * 1.0), reference(theirs * 1.0)
        np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-7, atol=1e-10)
        grad = rng.normal(size=out.shape)
        out.backward(grad)
        expected.backward(torch.tensor(grad))
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-7, atol=1e-10)
        for (key, p), q in zip(ours.named_parameters(), reference.parameters()):
            np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-7, atol=1e-10,
                                       err_msg=key)
        ours.zero_grad()
        reference.zero_grad()
    for key, value in reference.state_dict().items():   # running statistics moved alike
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-7,
                                   err_msg=key)


@pytest.mark.parametrize("name", ["Conv1d_reflect", "Conv2d_circular", "ConvTranspose2d",
                                  "BatchNorm1d_3d", "InstanceNorm1d", "PReLU",
                                  "AdaptiveMaxPool2d", "Upsample_bicubic", "Embedding"])
def test_layer_gradcheck_through_parameters_and_input(name, rng):
    fastdl.manual_seed(0)
    if name == "Embedding":
        layer = nn.Embedding(5, 3, max_norm=10.0).double()
        index = fastdl.Tensor(rng.integers(0, 5, size=(2, 3)))
        assert gradcheck(lambda weight: layer(index), [layer.weight])
        return
    build, shape = LAYERS[name]
    layer = build(nn).double()
    x = fastdl.Tensor(rng.normal(size=shape), requires_grad=True)
    assert gradcheck(lambda x, *weights: layer(x), [x] + list(layer.parameters()))


def test_batch_norm_cumulative_average_and_old_checkpoints(rng):
    torch = pytest.importorskip("torch")
    for momentum in (None, 0.2):
        ours = nn.BatchNorm2d(2, momentum=momentum)
        reference = torch.nn.BatchNorm2d(2, momentum=momentum)
        for _ in range(3):
            x = (rng.normal(size=(4, 2, 3, 3)) * 3 + 1).astype(np.float32)
            ours(fastdl.Tensor(x))
            reference(torch.tensor(x))
        np.testing.assert_allclose(ours.running_var, reference.running_var.numpy(), rtol=1e-5)
        assert int(ours.num_batches_tracked) == 3
    state = {k: v for k, v in reference.state_dict().items() if k != "num_batches_tracked"}
    fresh = nn.BatchNorm2d(2)
    assert fresh.load_state_dict(state) == ([], [])   # as torch: no missing counter
    assert int(fresh.num_batches_tracked) == 0


def test_dropout_layers_scale_in_training_and_pass_through_in_eval():
    fastdl.manual_seed(0)
    layer = nn.Dropout(p=0.2)
    x = fastdl.Tensor(np.ones((200, 50), np.float32))
    y = layer(x).array
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.8)}
    assert abs((y == 0).mean() - 0.2) < 0.02
    layer.eval()
    assert layer(x) is x
    assert repr(nn.Dropout2d(0.1)) == "Dropout2d(p=0.1, inplace=False)"


def test_embedding_matches_torch_and_from_pretrained(rng):
    torch = pytest.importorskip("torch")
    reference = torch.nn.Embedding(7, 3, padding_idx=-2, max_norm=1.5).double()
    ours = nn.Embedding(7, 3, padding_idx=-2, max_norm=1.5).double()
    assert repr(ours) == repr(reference)
    assert float(np.abs(ours.weight.array[5]).max()) == 0.0   # the padding row starts at zero
    ours.load_state_dict(reference.state_dict())
    index = rng.integers(0, 7, size=(2, 4))
    out = ours(fastdl.Tensor(index))
    expected = reference(torch.tensor(index))
    np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.weight.array, reference.weight.detach().numpy(), rtol=1e-6)
    frozen = nn.Embedding.from_pretrained(fastdl.Tensor(np.eye(3)))
    assert not frozen.weight.requires_grad and frozen.weight.dtype == np.float64


def test_parameters_take_dtype_and_refuse_other_devices():
    layer = nn.Conv2d(2, 3, 3, dtype=np.float64, device="cpu")
    assert layer.weight.dtype == np.float64 and layer.bias.dtype == np.float64
    assert nn.BatchNorm2d(3, dtype="float64").running_mean.dtype == np.float64
    with pytest.raises(RuntimeError, match="device"):
        nn.Linear(2, 3, device="cuda")
    with pytest.raises(TypeError, match="dtype"):
        nn.Linear(2, 3, dtype=np.int64)


def test_conv_transpose_output_size_picks_the_output_padding(rng):
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    x = fastdl.Tensor(rng.normal(size=(1, 2, 4, 4)).astype(np.float32))
    assert layer(x).shape == (1, 3, 7, 7)
    assert layer(x, output_size=[8, 8]).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="output size"):
        layer(x, output_size=(10, 10))


@pytest.mark.parametrize("factory, error, match", [
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, "strided"),
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), ValueError, "Invalid padding string"),
    (lambda: nn.Conv1d(3, 4, (3, 3)), TypeError, "kernel_size"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect"), ValueError, "zeros"),
    (lambda: nn.GELU("fast"), ValueError, "approximate"),
    (lambda: nn.Hardtanh(1.0, -1.0), ValueError, "max_val"),
    (lambda: nn.LeakyReLU("0.1"), TypeError, "negative_slope"),
    (lambda: nn.PReLU(0), ValueError, "num_parameters"),
    (lambda: nn.Dropout2d(-0.5), ValueError, "probability"),
    (lambda: nn.MaxPool1d(0), ValueError, "kernel_size"),
    (lambda: nn.Upsample(scale_factor=2, mode="trilinearish"), ValueError, "mode"),
    (lambda: nn.Embedding(4, 2, padding_idx=4), ValueError, "Padding_idx"),
    (lambda: nn.Unflatten(1, [2, "a"]), TypeError, "unflattened_size"),
    (lambda: nn.BatchNorm1d(3, momentum=-0.1), ValueError, "momentum"),
])
def test_bad_constructor_arguments(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_init_follows_torchs_gains_and_fans():
    torch = pytest.importorskip("torch")
    for args in (("relu",), ("tanh",), ("leaky_relu", 0.2), ("leaky_relu",), ("selu",),
                 ("conv2d",), ("sigmoid",)):
        expected = torch.nn.init.calculate_gain(*args)
        assert nn.init.calculate_gain(*args) == pytest.approx(expected)
    fastdl.manual_seed(0)
    weight = nn.Parameter(np.zeros((64, 32, 3, 3), np.float32))
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
    assert weight.array.std() == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.03)
    nn.init.kaiming_uniform_(weight, a=1.0)
    assert np.abs(weight.array).max() <= np.sqrt(3) / np.sqrt(32 * 9)
    nn.init.xavier_uniform_(weight, gain=2.0)
    bound = 2.0 * np.sqrt(6 / (32 * 9 + 64 * 9))
    assert bound * 0.95 < np.abs(weight.array).max() <= bound
    nn.init.trunc_normal_(weight, std=0.02, a=-0.03, b=0.03)
    assert np.abs(weight.array).max() <= 0.03 and weight.array.std() < 0.02
    assert nn.init.constant_(weight, 0.5) is weight and np.all(weight.array == 0.5)
    square = nn.init.orthogonal_(fastdl.Tensor(np.zeros((3, 5))))
    np.testing.assert_allclose(square.array @ square.array.T, np.eye(3), atol=1e-12)
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False).double()
    nn.init.dirac_(conv.weight)
    x = fastdl.Tensor(np.random.default_rng(0).normal(size=(1, 3, 4, 4)))
    np.testing.assert_allclose(conv(x).array, x.array, atol=1e-12)
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        nn.init.kaiming_normal_(weight, mode="fan_avg")
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        nn.init.calculate_gain("swish")
