"""Read-only inputs (``np.load(..., mmap_mode="r")``, ``a.setflags(write=False)``) work
everywhere, as in torch: every convolution path forward and backward, dense, pooling,
the differentiable ops and inference plans, with results bitwise equal to those of
writable copies."""
import numpy as np
import pytest

import fastdl
from fastdl import functional as F
from fastdl import nn
from fastdl.kernels import conv
import fastdl_ext.conv
import fastdl_ext.direct
import fastdl_ext.direct_grad
import fastdl_ext.winograd

ENTRY_POINTS = {
    fastdl_ext.conv: ("conv2d_forward_into", "conv2d_grad_input_into",
                      "conv2d_grad_weight_into", "conv2d_forward_images_into",
                      "conv2d_grad_input_images_into", "conv2d_grad_weight_images_into"),
    fastdl_ext.winograd: ("winograd_forward_into", "winograd_grad_input_into",
                          "winograd_grad_weight_into", "transform_weight_into"),
    fastdl_ext.direct: ("direct_chain_into",),
    fastdl_ext.direct_grad: ("direct_grad_weight_into",),
}


def readonly(array):
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


def mapped(array, tmp_path, name):
    """``array`` saved and loaded back memory-mapped read-only, as large data sets are."""
    path = tmp_path / (name + ".npy")
    np.save(path, array)
    return np.load(path, mmap_mode="r")


@pytest.fixture
def calls(monkeypatch):
    """Names of the compiled entry points called during the test."""
    called = set()
    for module, names in ENTRY_POINTS.items():
        for name in names:
            def spy(*args, _function=getattr(module, name), _name=name, **kwargs):
                called.add(_name)
                return _function(*args, **kwargs)
            monkeypatch.setattr(module, name, spy)
    return called


def assert_same(expected, got):
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    got = got if isinstance(got, (tuple, list)) else (got,)
    assert len(expected) == len(got)
    for want, have in zip(expected, got):
        assert have.dtype == want.dtype and have.shape == want.shape
        np.testing.assert_array_equal(have, want)


POSITION_TILES = {"conv2d_forward_into", "conv2d_grad_input_into", "conv2d_grad_weight_into"}
IMAGE_ITEMS = {"conv2d_forward_images_into", "conv2d_grad_input_images_into",
               "conv2d_grad_weight_images_into"}

# (x shape, weight shape, stride, padding, dilation, groups, dtype, entry points that must run)
CONV_CASES = {
    "direct": ((2, 8, 12, 12), (8, 8, 3, 3), 1, 1, 1, 1, np.float32,
               {"direct_chain_into", "direct_grad_weight_into"}),
    "direct-strided": ((2, 16, 32, 32), (32, 16, 3, 3), 2, 1, 1, 1, np.float32,
                       {"direct_chain_into", "direct_grad_weight_into",
                        "conv2d_grad_input_images_into"}),
    "winograd": ((2, 64, 16, 16), (64, 64, 3, 3), 1, 1, 1, 1, np.float32,
                 {"winograd_forward_into", "winograd_grad_weight_into",
                  "transform_weight_into"}),
    "winograd-float64": ((2, 16, 12, 12), (16, 16, 3, 3), 1, 1, 1, 1, np.float64,
                         {"winograd_forward_into", "winograd_grad_weight_into"}),
    "winograd-grad-input": ((1, 16, 12, 12), (16, 16, 3, 3), 1, 3, 1, 1, np.float64,
                            {"winograd_grad_input_into"}),
    # strided and thin (< 256 output positions) maps: whole images per work item
    "im2col": ((2, 3, 15, 15), (6, 3, 5, 5), 2, 1, 1, 1, np.float64, IMAGE_ITEMS),
    "pointwise": ((2, 16, 8, 8), (64, 16, 1, 1), 1, 0, 1, 1, np.float64, POSITION_TILES),
    "grouped": ((2, 8, 9, 9), (8, 2, 3, 3), 1, 1, 1, 4, np.float32, IMAGE_ITEMS),
    "dilated": ((2, 4, 9, 9), (4, 4, 3, 3), 1, 2, 2, 1, np.float32, IMAGE_ITEMS),
    # larger stride-1 maps: tiles of output positions
    "grouped-tiled": ((2, 8, 20, 20), (8, 2, 3, 3), 1, 1, 1, 4, np.float32, POSITION_TILES),
    "dilated-tiled": ((2, 4, 20, 20), (4, 4, 3, 3), 1, 2, 2, 1, np.float64, POSITION_TILES),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_kernels_take_read_only_arrays(case, rng, calls, tmp_path):
    x_shape, w_shape, stride, padding, dilation, groups, dtype, entry_points = CONV_CASES[case]
    x = rng.normal(size=x_shape).astype(dtype)
    weight = rng.normal(size=w_shape).astype(dtype)
    bias = rng.normal(size=w_shape[0]).astype(dtype)
    pairs = [conv.pair(v, "") for v in (stride, padding, dilation)]

    def run(x, weight, bias, residual, grad_out):
        return (conv.conv2d_forward(x, weight, bias, stride, padding, dilation, groups),
                conv.conv2d_forward(x, weight, None, stride, padding, dilation, groups,
                                    residual=residual, negative_slope=0.1),
                conv.conv2d_grad_input(grad_out, weight, x_shape, stride, padding, dilation,
                                       groups),
                *conv.conv2d_grad_weight_unchecked(x, grad_out, w_shape, *pairs, groups,
                                                   with_bias=True))
    out_shape = conv.conv2d_forward(x, weight, None, stride, padding, dilation, groups).shape
    residual = rng.normal(size=out_shape).astype(dtype)
    grad_out = rng.normal(size=out_shape).astype(dtype)
    expected = run(x, weight, bias, residual, grad_out)
    calls.clear()
    assert_same(expected, run(*(readonly(a) for a in (x, weight, bias, residual, grad_out))))
    assert entry_points <= calls, calls
    assert_same(expected, run(mapped(x, tmp_path, "x"), mapped(weight, tmp_path, "w"),
                              mapped(bias, tmp_path, "b"), mapped(residual, tmp_path, "r"),
                              mapped(grad_out, tmp_path, "g")))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose_takes_read_only_arrays(dtype, rng):
    x = rng.normal(size=(2, 4, 7, 7)).astype(dtype)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(dtype)
    bias = rng.normal(size=3).astype(dtype)

    def run(x, weight, bias):
        out = conv.conv_transpose2d_forward(x, weight, bias, 2, 1, 1)
        grad_out = np.ones_like(out)
        return (out, conv.conv_transpose2d_grad_input(grad_out, weight, 2, 1),
                conv.conv_transpose2d_grad_weight(x, grad_out, weight.shape, 2, 1))
    assert_same(run(x, weight, bias), run(readonly(x), readonly(weight), readonly(bias)))


def _gradients(op, *arrays):
    tensors = [fastdl.Tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    out = op(*tensors)
    out.sum().backward()
    return [out.numpy()] + [t.grad for t in tensors if t.requires_grad]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_ops_take_read_only_arrays(dtype, rng):
    x = rng.normal(size=(2, 16, 12, 12)).astype(dtype)
    rows = rng.normal(size=(4, 30)).astype(dtype)
    target = np.array([1, 2, 3, 0])
    ops = {
        "conv2d direct": (lambda x, w, b: F.conv2d(x, w, b, padding=1),
                          [x, rng.normal(size=(16, 16, 3, 3)), rng.normal(size=16)]),
        "conv2d winograd": (lambda x, w: F.conv2d(x, w, padding=1),
                            [x, rng.normal(size=(64, 16, 3, 3))]),
        "conv2d strided": (lambda x, w: F.conv2d(x, w, stride=2, padding=1),
                           [x, rng.normal(size=(32, 16, 3, 3))]),
        "conv2d grouped": (lambda x, w: F.conv2d(x, w, groups=4),
                           [x, rng.normal(size=(8, 4, 3, 3))]),
        "conv2d_relu": (lambda x, w: F.conv2d_relu(x, w, None, 1, 1),
                        [x, rng.normal(size=(16, 16, 3, 3))]),
        "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1,
                                                             output_padding=1),
                             [x, rng.normal(size=(16, 8, 3, 3))]),
        "linear": (F.linear, [rows, rng.normal(size=(10, 30)), rng.normal(size=10)]),
        "max_pool2d": (lambda x: F.max_pool2d(x, 2), [x]),
        "max_pool2d 3x3": (lambda x: F.max_pool2d(x, 3, 2, 1), [x]),
        "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), [x]),
        "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 1), [x]),
        "batch_norm": (lambda x, g, b: F.batch_norm(x, np.zeros(16, dtype), np.ones(16, dtype),
                                                    g, b, training=True),
                       [x, rng.normal(size=16), rng.normal(size=16)]),
        "layer_norm": (lambda x: F.layer_norm(x, (12,)), [x]),
        "group_norm": (lambda x, g, b: F.group_norm(x, 4, g, b),
                       [x, rng.normal(size=16), rng.normal(size=16)]),
        "relu": (F.relu, [x]),
        "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), [x]),
        "sigmoid": (F.sigmoid, [x]),
        "tanh": (F.tanh, [x]),
        "log_softmax": (lambda x: F.log_softmax(x, 1), [rows]),
        "cross_entropy": (F.cross_entropy, [rows, target]),
        "mse_loss": (F.mse_loss, [rows, rng.normal(size=rows.shape)]),
        "interpolate": (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), [x]),
    }
    for name, (op, arrays) in ops.items():
        arrays = [a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays]
        expected = _gradients(op, *arrays)
        try:
            got = _gradients(op, *(readonly(a) for a in arrays))
        except ValueError as error:
            raise AssertionError("%s: %s" % (name, error)) from error
        assert_same(expected, got)


def test_inference_plans_take_read_only_inputs_and_weights(rng, tmp_path):
    """Plans compiled from read-only weights run read-only inputs: direct chains, the
    im2col and Winograd paths, pools and the dense head."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # direct chain
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),                 # im2col
        nn.Conv2d(8, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),                         # Winograd
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 5))
    model.eval()
    x = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)
    writable_plan = fastdl.deploy.compile(model, x)
    with fastdl.no_grad():
        eager = model(fastdl.Tensor(x)).numpy()
    for parameter in model.parameters():
        parameter.data = readonly(parameter.array)
    plan = fastdl.deploy.compile(model, readonly(x))
    for batch in (4, 1):   # batch 1 takes other paths (a direct chain further on)
        want = writable_plan(x[:batch].copy())
        np.testing.assert_array_equal(plan(readonly(x[:batch])), want)
        np.testing.assert_array_equal(plan(mapped(x[:batch], tmp_path, "x%d" % batch)), want)
    with fastdl.no_grad():
        np.testing.assert_array_equal(model(fastdl.Tensor(readonly(x))).numpy(), eager)
