"""Whole networks exported by torch.onnx (opset 17) and read by deploy.from_onnx: the
plan equals ONNX Runtime on the same file at batch 1 and 7.

ResNet-18 and MobileNetV2 are the CIFAR zoo's (tests/ported/cifar_zoo.py, run as torch);
the U-Net-style FCN (encoder, decoder of upsampling and concatenated skips, two outputs)
and the DenseNet block are written here.
"""
import io
import warnings

import numpy as np
import pytest

from fastdl import deploy

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

nn, F = torch.nn, torch.nn.functional
BATCHES = (1, 7)


@pytest.fixture(scope="module")
def zoo(cifar_zoo):
    return cifar_zoo("torch")


def _with_statistics(model, seed=0):
    """``model`` in eval mode with BatchNorm statistics and affines away from their
    initial values (so folding them is tested)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.2)
    return model.eval()


def _export(model, shape, outputs=1):
    names = ["y%d" % i for i in range(outputs)]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros((1,) + shape), buffer, dynamo=False,
                          opset_version=17, input_names=["x"], output_names=names,
                          dynamic_axes={name: {0: "n"} for name in ["x"] + names},
                          training=torch.onnx.TrainingMode.EVAL)
    return buffer.getvalue()


def _compare(data, shape, rel=1e-4):
    # trusted: ResNet-18's prepared weights pass the default bound of a call's bytes
    plan = deploy.from_onnx(data, max_bytes=None)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        got = plan(x)
        got = got if isinstance(got, tuple) else (got,)
        want = session.run(None, {"x": x})
        assert len(got) == len(want)
        for mine, theirs in zip(got, want):
            assert mine.shape == theirs.shape
            scale = max(float(np.abs(theirs).max()), 1.0)
            error = float(np.abs(mine.astype(np.float64) - theirs).max()) / scale
            assert error <= rel, "batch %d: differs by %.3g of the scale %.3g" % (
                batch, error, scale)
    return plan


def _kinds(plan):
    return [op["op"] for op in plan.ops]


def test_resnet18(zoo):
    torch.manual_seed(0)
    plan = _compare(_export(_with_statistics(zoo.ResNet18()), (3, 32, 32)), (3, 32, 32))
    kinds = _kinds(plan)
    # BN folded, each residual an input of the block's last conv, ReLUs its epilogue
    assert kinds.count("conv2d") == 20 and "affine_channels" not in kinds
    assert sum(len(op["inputs"]) == 2 for op in plan.ops) == 8


def test_mobilenet_v2(zoo):
    torch.manual_seed(0)
    model = _with_statistics(zoo.MobileNetV2())
    plan = _compare(_export(model, (3, 32, 32)), (3, 32, 32))
    convs = sum(isinstance(module, nn.Conv2d) for module in model.modules())
    assert _kinds(plan).count("conv2d") == convs and "affine_channels" not in _kinds(plan)


def test_densenet_block(zoo):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False),
                          *[zoo.DenseLayer(16 + 8 * i, 8) for i in range(4)],
                          zoo.Transition(48, 24), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))
    plan = _compare(_export(_with_statistics(model), (3, 16, 16)), (3, 16, 16))
    assert _kinds(plan).count("concat") == 4


class UNet(nn.Module):
    """Two encoder stages, a bottleneck and two decoder stages (a transposed conv and a
    bilinear resize to the skip's size, each concatenated with its skip); the logits
    and a nearest-upsampled side output of the bottleneck."""

    def __init__(self, channels=3, classes=4, width=8):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1))
        self.down1, self.down2 = block(channels, width), block(width, 2 * width)
        self.bottom = block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = block(4 * width, 2 * width)
        self.dec1 = block(3 * width, width)
        self.head = nn.Conv2d(width, classes, 1)
        self.side = nn.Conv2d(4 * width, classes, 1)

    def forward(self, x):
        skip1 = self.down1(x)
        skip2 = self.down2(F.max_pool2d(skip1, 2, ceil_mode=True))
        bottom = self.bottom(F.max_pool2d(skip2, 2, ceil_mode=True))
        up = self.up2(bottom)[:, :, :skip2.shape[2], :skip2.shape[3]]
        out = self.dec2(torch.cat([up, skip2], 1))
        out = F.interpolate(out, size=skip1.shape[2:], mode="bilinear", align_corners=False)
        out = self.dec1(torch.cat([out, skip1], 1))
        side = F.interpolate(self.side(bottom), scale_factor=4, mode="nearest")
        return torch.softmax(self.head(out), 1), side


def test_unet_fcn_with_two_outputs():
    torch.manual_seed(0)
    shape = (3, 22, 19)   # odd sizes: ceil-mode pools, a cropped transposed conv
    plan = _compare(_export(_with_statistics(UNet()), shape, outputs=2), shape)
    kinds = _kinds(plan)
    assert len(plan.outputs) == 2 and kinds.count("concat") == 2
    assert kinds.count("resize") == 2 and "conv_transpose2d" in kinds
