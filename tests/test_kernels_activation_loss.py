"""Activation, resize and loss kernels: SciPy references and the numerical pitfalls."""
import numpy as np
import pytest
from scipy import ndimage, special

import numba
from fastdl.kernels import activation, loss, resize
from reference import finite_difference_vjp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (300, 200), (600, 500)])   # serial and parallel bindings
def test_elementwise_activations_match_scipy(dtype, shape, rng):
    x = (rng.normal(size=shape) * 5).astype(dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(activation.relu_forward(x), np.maximum(x, 0), rtol=rtol)
    np.testing.assert_allclose(activation.leaky_relu_forward(x, 0.1),
                               np.where(x > 0, x, 0.1 * x), rtol=rtol)
    np.testing.assert_allclose(activation.sigmoid_forward(x), special.expit(x), rtol=rtol)
    assert activation.relu_forward(x).dtype == dtype


def test_sigmoid_is_stable_at_extremes():
    x = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with np.errstate(over="raise"):
        y = activation.sigmoid_forward(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax_any_dim(dim, rng):
    x = rng.normal(size=(3, 4, 5)) * 50
    np.testing.assert_allclose(activation.softmax_forward(x, dim), special.softmax(x, axis=dim),
                               rtol=1e-12, atol=1e-15)
    # absolute tolerance: entries reach |x| ~ 100, where one ulp is ~1e-14
    np.testing.assert_allclose(activation.log_softmax_forward(x, dim),
                               special.log_softmax(x, axis=dim), rtol=1e-12, atol=1e-13)


def test_activation_backwards_match_finite_differences(rng):
    x = rng.normal(size=(3, 5))
    g = rng.normal(size=(3, 5))
    for forward, backward in [
            (activation.sigmoid_forward, lambda g_, y: activation.sigmoid_backward(g_, y)),
            (activation.tanh_forward, lambda g_, y: activation.tanh_backward(g_, y)),
            (lambda a: activation.softmax_forward(a, 1),
             lambda g_, y: activation.softmax_backward(g_, y, 1)),
            (lambda a: activation.log_softmax_forward(a, 0),
             lambda g_, y: activation.log_softmax_backward(g_, y, 0))]:
        np.testing.assert_allclose(backward(g, forward(x)),
                                   finite_difference_vjp(forward, [x], g, 0), rtol=1e-6,
                                   atol=1e-8)


def test_dropout_mask_seeded_and_edge_probabilities():
    a = activation.dropout_mask((100,), 0.5, np.random.default_rng(1), np.dtype(np.float32))
    b = activation.dropout_mask((100,), 0.5, np.random.default_rng(1), np.dtype(np.float32))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 2.0}
    assert np.all(activation.dropout_mask((5,), 0.0, None, np.dtype(np.float64)) == 1)
    assert np.all(activation.dropout_mask((5,), 1.0, None, np.dtype(np.float64)) == 0)


def test_nearest_upsampling_matches_ndimage_zoom(rng):
    x = rng.normal(size=(2, 3, 4, 5))
    out = resize.upsample_nearest2d_forward(x, (2, 3))
    np.testing.assert_array_equal(out, ndimage.zoom(x, (1, 1, 2, 3), order=0, grid_mode=True,
                                                    mode="grid-constant"))


def test_bilinear_upsampling_matches_explicit_formula(rng):
    x = rng.normal(size=(1, 1, 3, 4))
    out = resize.upsample_bilinear2d_forward(x, (2, 2))
    expected = np.zeros((6, 8))
    for i in range(6):
        for j in range(8):
            sy, sx = max((i + 0.5) / 2 - 0.5, 0), max((j + 0.5) / 2 - 0.5, 0)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, 2), min(x0 + 1, 3)
            fy, fx = sy - y0, sx - x0
            plane = x[0, 0]
            expected[i, j] = ((1 - fy) * ((1 - fx) * plane[y0, x0] + fx * plane[y0, x1])
                              + fy * ((1 - fx) * plane[y1, x0] + fx * plane[y1, x1]))
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-12)
    g = rng.normal(size=out.shape)
    for mode_forward, mode_backward in [
            (lambda a: resize.upsample_bilinear2d_forward(a, (2, 2)),
             lambda g_: resize.upsample_bilinear2d_backward(g_, x.shape, (2, 2))),
            (lambda a: resize.upsample_nearest2d_forward(a, (2, 2)),
             lambda g_: resize.upsample_nearest2d_backward(g_, (2, 2)))]:
        np.testing.assert_allclose(mode_backward(g), finite_difference_vjp(mode_forward, [x],
                                                                           g, 0), rtol=1e-6)


def _reference_cross_entropy(z, target, weight):
    log_p = special.log_softmax(z, axis=1)
    keep = target != -100
    w = weight[target[keep]]
    return -(w * log_p[keep, target[keep]]).sum() / w.sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_value_and_gradient(dtype, rng):
    z = (rng.normal(size=(6, 4)) * 3).astype(dtype)
    target = np.array([0, 1, 3, -100, 2, 1])
    weight = rng.uniform(0.5, 2, size=4)
    value, grad = loss.cross_entropy_forward_backward(z, target, weight)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(value, _reference_cross_entropy(z.astype(np.float64), target,
                                                               weight), rtol=rtol)
    # gradient = weight_t * (softmax - onehot) / sum of weights, zero on ignored rows
    keep = target != -100
    expected = special.softmax(z.astype(np.float64), axis=1)
    expected[np.arange(6)[keep], target[keep]] -= 1
    expected *= np.where(keep, weight[np.where(keep, target, 0)], 0)[:, None]
    expected /= weight[target[keep]].sum()
    np.testing.assert_allclose(grad, expected, rtol=rtol * 10, atol=1e-7)


@pytest.mark.parametrize("scale", [1e4, 1e8])
def test_cross_entropy_huge_logits_stay_finite(scale):
    z = np.array([[scale, -scale, 0.0], [-scale, scale, 0.0]])
    value, grad = loss.cross_entropy_forward_backward(z, np.array([1, 1]))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, scale)   # the wrong-class row costs 2*scale, mean
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0], [0, 0, 0]], atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_finite_at_saturated_logits(gamma):
    z = np.array([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0], [0.0, 0.0, 100.0]])
    target = np.array([0, 0, 2])
    value, grad = loss.focal_loss_forward_backward(z, target, None, gamma)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # correctly classified saturated rows contribute (almost) nothing
    np.testing.assert_allclose(grad[[0, 2]], 0, atol=1e-30)


def test_focal_gamma_zero_equals_cross_entropy_exactly(rng):
    z = rng.normal(size=(8, 5)) * 4
    target = rng.integers(0, 5, size=8)
    ce = loss.cross_entropy_forward_backward(z, target)
    focal = loss.focal_loss_forward_backward(z, target, None, 0.0)
    np.testing.assert_array_equal(ce[0], focal[0])
    np.testing.assert_array_equal(ce[1], focal[1])


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_loss_against_numpy_reference_and_finite_differences(gamma, rng):
    z = rng.normal(size=(5, 3)) * 2
    target = np.array([0, 2, 1, 1, 0])
    alpha = np.array([0.25, 0.5, 1.0])
    p = special.softmax(z, axis=1)[np.arange(5), target]
    expected = np.mean(-alpha[target] * (1 - p) ** gamma * np.log(p))
    value, grad = loss.focal_loss_forward_backward(z, target, alpha, gamma)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    numeric = finite_difference_vjp(
        lambda a: loss.focal_loss_forward_backward(a, target, alpha, gamma)[0], [z],
        np.ones(()), 0)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_losses_are_bitwise_identical_at_one_and_two_threads(rng):
    z = rng.normal(size=(5000, 10)).astype(np.float32)
    target = rng.integers(0, 10, size=5000)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = loss.cross_entropy_forward_backward(z, target)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = loss.cross_entropy_forward_backward(z, target)
    finally:
        numba.set_num_threads(before)
    assert one[0].tobytes() == two[0].tobytes() and np.array_equal(one[1], two[1])


def test_mse(rng):
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    value, grad = loss.mse_loss_forward_backward(x, y)
    np.testing.assert_allclose(value, np.mean((x - y) ** 2), rtol=1e-12)
    np.testing.assert_allclose(grad, 2 * (x - y) / 12, rtol=1e-12)
