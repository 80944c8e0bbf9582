"""Every differentiable op through the autograd: finite differences, references, errors."""
import numpy as np
import pytest
from scipy import special

import fastdl
from fastdl import Tensor
from fastdl import functional as F
from fastdl.testing import assert_close, gradcheck
from reference import conv2d_reference


def t(rng, *shape, scale=1.0):
    return Tensor(rng.normal(size=shape) * scale, requires_grad=True)


GRAD_CASES = {
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(2, 3, 6, 5),
                                                                         (4, 3, 3, 3), (4,)]),
    "conv2d_grouped": (lambda x, w: F.conv2d(x, w, None, 1, 2, 2, 2), [(1, 4, 6, 6),
                                                                        (4, 2, 3, 3)]),
    "conv2d_relu": (lambda x, w, b: F.conv2d_relu(x, w, b, padding=1), [(2, 3, 6, 5),
                                                                         (4, 3, 3, 3), (4,)]),
    "conv_transpose2d": (lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1),
                         [(2, 4, 3, 3), (4, 3, 3, 3), (3,)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [(2, 5, 3), (4, 3), (4,)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), [(2, 3, 6, 6)]),
    "max_pool2d_pad": (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), [(1, 2, 7, 6)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
                   [(2, 3, 6, 6)]),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (2, 3)), [(2, 3, 5, 7)]),
    "batch_norm": (lambda x, w, b: F.batch_norm(x, np.zeros(3), np.ones(3), w, b, True),
                   [(4, 3, 3, 3), (3,), (3,)]),
    "batch_norm_eval": (lambda x, w, b: F.batch_norm(x, np.full(3, 0.2), np.full(3, 2.0), w,
                                                     b, False), [(4, 3, 2, 2), (3,), (3,)]),
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b), [(2, 4, 3, 3), (4,), (4,)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (3, 3), w, b), [(2, 4, 3, 3), (3, 3),
                                                                   (3, 3)]),
    "instance_norm": (lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
                      [(2, 4, 3, 3), (4,), (4,)]),
    "relu": (F.relu, [(3, 4)]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), [(3, 4)]),
    "sigmoid": (F.sigmoid, [(3, 4)]),
    "tanh": (F.tanh, [(3, 4)]),
    "softmax": (lambda x: F.softmax(x, 0), [(3, 4)]),
    "log_softmax": (lambda x: F.log_softmax(x, -1), [(3, 4)]),
    "interpolate_nearest": (lambda x: F.interpolate(x, scale_factor=2), [(1, 2, 3, 4)]),
    "interpolate_bilinear": (lambda x: F.interpolate(x, scale_factor=(2, 3), mode="bilinear"),
                             [(1, 2, 3, 4)]),
    "mse_loss": (F.mse_loss, [(3, 4), (3, 4)]),
    "penalties": (lambda a, b: F.l1_penalty([a]) + F.l2_penalty([a, b]), [(3, 4), (2,)]),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradcheck(name, rng):
    function, shapes = GRAD_CASES[name]
    assert gradcheck(function, [t(rng, *shape) for shape in shapes])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c_out, stride", [(6, 1), (40, 1), (8, 2)])   # direct, GEMM paths
def test_conv2d_relu_equals_conv2d_then_relu_bitwise(c_out, stride, dtype, rng):
    data = [rng.normal(size=shape).astype(dtype)
            for shape in ((3, 4, 9, 8), (c_out, 4, 3, 3), (c_out,), (3, c_out, 9, 8))]
    data[3] = data[3][:, :, ::stride, ::stride].copy()   # the output's shape at this stride
    grads = []
    for fused in (True, False):
        x, w, b = (Tensor(a, requires_grad=True) for a in data[:3])
        y = (F.conv2d_relu(x, w, b, stride, 1) if fused
             else F.relu(F.conv2d(x, w, b, stride, 1)))
        y.backward(data[3])
        grads.append([y.array, x.grad, w.grad, b.grad])
    for fused, separate in zip(*grads):
        np.testing.assert_array_equal(fused, separate)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["cross_entropy", "focal_0.5", "focal_2"])
def test_classification_loss_gradcheck(rng, reduction, loss):
    target = np.array([0, 2, 1, -100, 2])
    weight = np.array([1.0, 2.0, 0.5])
    if loss == "cross_entropy":
        function = lambda x: F.cross_entropy(x, target, weight, reduction=reduction)  # noqa
    else:
        gamma = float(loss.split("_")[1])
        function = lambda x: F.focal_loss(x, target, weight, gamma, reduction)  # noqa
    assert gradcheck(function, [t(rng, 5, 3)])


def test_per_pixel_cross_entropy_gradcheck(rng):
    target = rng.integers(0, 3, size=(2, 4, 3))
    assert gradcheck(lambda x: F.cross_entropy(x, target), [t(rng, 2, 3, 4, 3)])


def test_forward_values_against_references(rng):
    x = rng.normal(size=(2, 3, 6, 5))
    w = rng.normal(size=(4, 3, 3, 3))
    assert_close(F.conv2d(x, w, padding=1), conv2d_reference(x, w, None, (1, 1), (1, 1)),
                 rtol=1e-10)
    z = rng.normal(size=(4, 5)) * 3
    assert_close(F.softmax(z, 1), special.softmax(z, axis=1), rtol=1e-12)
    assert_close(F.log_softmax(z, 0), special.log_softmax(z, axis=0), rtol=1e-12)
    assert_close(F.sigmoid(z), special.expit(z), rtol=1e-12)
    target = rng.integers(0, 5, size=4)
    weight = rng.uniform(0.5, 2, size=5)
    log_p = special.log_softmax(z, axis=1)[np.arange(4), target]
    assert_close(F.cross_entropy(z, target, weight),
                 -(weight[target] * log_p).sum() / weight[target].sum(), rtol=1e-12)


def test_batch_norm_updates_running_stats_in_place(rng):
    x = rng.normal(size=(8, 3, 4, 4)) * 2 + 1
    running_mean, running_var = np.zeros(3), np.ones(3)
    F.batch_norm(x, running_mean, running_var, training=True, momentum=0.1)
    n = 8 * 16
    np.testing.assert_allclose(running_mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    unbiased = x.var(axis=(0, 2, 3)) * n / (n - 1)
    np.testing.assert_allclose(running_var, 0.9 + 0.1 * unbiased, rtol=1e-12)


def test_dropout_statistics_and_eval_identity(rng):
    fastdl.manual_seed(3)
    x = Tensor(np.ones((200, 200), np.float32), requires_grad=True)
    y = F.dropout(x, 0.3)
    kept = y.array != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y.array[kept], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad != 0, kept)
    assert F.dropout(x, 0.3, training=False) is x


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.conv2d(np.zeros((1, 4, 5, 5)), np.zeros((2, 3, 3, 3))), ValueError,
     "3 input channels per group but input has 4"),
    (lambda: F.conv2d(np.zeros((1, 3, 5, 5), np.int32), np.zeros((2, 3, 3, 3))), TypeError,
     "float32 or float64"),
    (lambda: F.linear(np.zeros((2, 3)), np.zeros((4, 5))), ValueError, "features"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), -1), ValueError, "kernel"),
    (lambda: F.softmax(np.zeros((2, 3)), 2), IndexError, "dim"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError, "target"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError, "integer"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0])), ValueError, "shape"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), np.ones(2)), ValueError,
     "weight"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg"), ValueError,
     "reduction"),
    (lambda: F.focal_loss(np.zeros((2, 3)), np.array([0, 1]), gamma=-1), ValueError, "gamma"),
    (lambda: F.group_norm(np.zeros((2, 6, 3, 3)), 4), ValueError, "divisible"),
    (lambda: F.batch_norm(np.zeros((1, 3)), np.zeros(3), np.ones(3), training=True),
     ValueError, "more than 1 value per channel"),
    (lambda: F.batch_norm(np.zeros((2, 3, 2, 2)), np.zeros(4), np.ones(4)), ValueError,
     "running_mean must have shape"),
    (lambda: F.interpolate(np.zeros((1, 1, 2, 2)), scale_factor=-1.5), ValueError,
     "scale_factor"),
    (lambda: F.dropout(np.zeros(3), 1.5), ValueError, "probability"),
    (lambda: F.mse_loss(np.zeros(3), np.zeros(4)), ValueError, "shape"),
])
def test_bad_input_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_against_torch_when_available(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(2, 4, 7, 7))
    w = rng.normal(size=(6, 2, 3, 3))
    b = rng.normal(size=6)
    ours = F.conv2d(Tensor(x), Tensor(w), Tensor(b), 2, 1, 1, 2)
    theirs = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), 2,
                                        1, 1, 2)
    assert_close(ours, theirs.numpy(), rtol=1e-10)
    pooled = F.max_pool2d(Tensor(x), 3, 2, 1, ceil_mode=True)
    assert_close(pooled, torch.nn.functional.max_pool2d(torch.tensor(x), 3, 2, 1,
                                                        ceil_mode=True).numpy())
    z = rng.normal(size=(6, 4)) * 10
    target = np.array([0, 1, 2, 3, -100, 1])
    weight = rng.uniform(0.5, 2, 4)
    assert_close(F.cross_entropy(z, target, weight),
                 torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(target),
                                                   torch.tensor(weight)).numpy(), rtol=1e-12)
