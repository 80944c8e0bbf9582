"""Resize kernels: dense-matrix and np.repeat references, exact adjoints, determinism."""
import numba
import numpy as np
import pytest

from fastdl.kernels import resize
from reference import bilinear_matrix

# (N, C, H, W), (sh, sw): non-square planes, one-sided scales, sizes 1 and 2 on an axis
CASES = [((2, 3, 5, 7), (2, 2)), ((1, 2, 4, 6), (3, 1)), ((2, 1, 3, 5), (1, 4)),
         ((1, 2, 1, 5), (2, 3)), ((1, 1, 6, 2), (2, 2)), ((1, 1, 2, 1), (1, 4)),
         ((1, 1, 1, 1), (3, 2))]
LARGE = ((1, 3, 200, 300), (2, 2))   # 720k outputs: the parallel bindings


def _dense_forward(x, scale):
    rows = bilinear_matrix(x.shape[2], scale[0], np.float64)
    cols = bilinear_matrix(x.shape[3], scale[1], np.float64)
    return rows @ x.astype(np.float64) @ cols.T


def _dense_backward(grad_out, input_shape, scale):
    rows = bilinear_matrix(input_shape[2], scale[0], np.float64)
    cols = bilinear_matrix(input_shape[3], scale[1], np.float64)
    return rows.T @ grad_out.astype(np.float64) @ cols


def _block_sum(grad_out, scale):
    n, c, out_h, out_w = grad_out.shape
    blocks = grad_out.astype(np.float64).reshape(n, c, out_h // scale[0], scale[0],
                                                 out_w // scale[1], scale[1])
    return blocks.sum(axis=(3, 5))


def _modes(input_shape, scale):
    """(forward, backward) of each mode as functions of one array."""
    return {"nearest": (lambda x: resize.upsample_nearest2d_forward(x, scale),
                        lambda g: resize.upsample_nearest2d_backward(g, scale)),
            "bilinear": (lambda x: resize.upsample_bilinear2d_forward(x, scale),
                         lambda g: resize.upsample_bilinear2d_backward(g, input_shape, scale))}


def _output_shape(shape, scale):
    return shape[:2] + (shape[2] * scale[0], shape[3] * scale[1])


def _check_layout(result, shape, dtype):
    assert result.shape == shape and result.dtype == dtype and result.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, scale", CASES + [LARGE])
def test_forward_matches_references(shape, scale, dtype, rng):
    x = rng.normal(size=shape).astype(dtype)
    nearest = resize.upsample_nearest2d_forward(x, scale)
    _check_layout(nearest, _output_shape(shape, scale), dtype)
    np.testing.assert_array_equal(nearest, x.repeat(scale[0], axis=2).repeat(scale[1], axis=3))
    bilinear = resize.upsample_bilinear2d_forward(x, scale)
    _check_layout(bilinear, _output_shape(shape, scale), dtype)
    tolerance = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(bilinear, _dense_forward(x, scale), rtol=tolerance,
                               atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, scale", CASES + [LARGE])
def test_backward_matches_dense_adjoint(shape, scale, dtype, rng):
    grad_out = rng.normal(size=_output_shape(shape, scale)).astype(dtype)
    nearest = resize.upsample_nearest2d_backward(grad_out, scale)
    bilinear = resize.upsample_bilinear2d_backward(grad_out, shape, scale)
    tolerance = 1e-6 if dtype == np.float32 else 1e-13
    for result, expected in [(nearest, _block_sum(grad_out, scale)),
                             (bilinear, _dense_backward(grad_out, shape, scale))]:
        _check_layout(result, shape, dtype)
        np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("shape, scale", CASES + [LARGE])
def test_backward_is_exact_adjoint(shape, scale, rng):
    x = rng.normal(size=shape)
    grad_out = rng.normal(size=_output_shape(shape, scale))
    for forward, backward in _modes(shape, scale).values():
        out, grad_in = forward(x), backward(grad_out)
        lhs, rhs = np.vdot(out, grad_out), np.vdot(x, grad_in)
        magnitude = np.abs(out * grad_out).sum()
        assert abs(lhs - rhs) <= 1e-12 * magnitude, (lhs, rhs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, scale", [CASES[0], CASES[2], LARGE])
def test_serial_and_parallel_bindings_are_bitwise_identical(shape, scale, dtype, rng):
    planes = rng.normal(size=(shape[0] * shape[1],) + shape[2:]).astype(dtype)
    grads = rng.normal(size=(planes.shape[0], shape[2] * scale[0],
                             shape[3] * scale[1])).astype(dtype)
    rows = resize._bilinear_axis(shape[2], scale[0], dtype)
    cols = resize._bilinear_axis(shape[3], scale[1], dtype)
    rows64 = resize._bilinear_axis(shape[2], scale[0], np.float64)
    cols64 = resize._bilinear_axis(shape[3], scale[1], np.float64)
    calls = [("_nearest_forward", (planes, scale[0], scale[1]), grads.shape),
             ("_nearest_backward", (grads, scale[0], scale[1]), planes.shape),
             ("_bilinear_forward", (planes, rows, cols), grads.shape),
             ("_bilinear_backward", (grads, rows64, cols64), planes.shape)]
    for name, arguments, out_shape in calls:
        results = []
        for binding in ("_serial", "_parallel"):
            out = np.full(out_shape, np.nan, dtype=dtype)
            getattr(resize, name + binding)(*arguments, out)
            results.append(out)
        assert not np.isnan(results[0]).any(), name
        np.testing.assert_array_equal(results[0], results[1], err_msg=name)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_thread_count(dtype, rng):
    shape, scale = LARGE
    x = rng.normal(size=shape).astype(dtype)
    grad_out = rng.normal(size=_output_shape(shape, scale)).astype(dtype)
    previous = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append([function(argument)
                            for forward, backward in _modes(shape, scale).values()
                            for function, argument in ((forward, x), (backward, grad_out))])
    finally:
        numba.set_num_threads(previous)
    for one_thread, two_threads in zip(*results):
        np.testing.assert_array_equal(one_thread, two_threads)


def test_non_contiguous_input_and_gradient(rng):
    shape, scale = (2, 3, 4, 5), (2, 3)
    x = np.swapaxes(rng.normal(size=(2, 3, 5, 4)), 2, 3)
    grad_out = np.swapaxes(rng.normal(size=(2, 3, 15, 8)), 2, 3)
    contiguous_x, contiguous_grad = np.ascontiguousarray(x), np.ascontiguousarray(grad_out)
    for forward, backward in _modes(shape, scale).values():
        np.testing.assert_array_equal(forward(x), forward(contiguous_x))
        np.testing.assert_array_equal(backward(grad_out), backward(contiguous_grad))


def test_backward_rejects_mismatched_gradient_shape():
    with pytest.raises(ValueError, match="grad_out"):
        resize.upsample_bilinear2d_backward(np.zeros((1, 1, 6, 8)), (1, 1, 3, 3), (2, 2))
    with pytest.raises(ValueError, match="multiple"):
        resize.upsample_nearest2d_backward(np.zeros((1, 1, 5, 8)), (2, 2))
