"""Pooling kernels against SciPy/NumPy references, finite differences and torch."""
import numpy as np
import pytest

from fastdl.kernels import pool
from reference import (adaptive_avg_pool2d_reference, avg_pool2d_reference,
                       finite_difference_vjp, max_pool2d_indices_reference,
                       max_pool2d_reference)

# (kernel, stride, padding, ceil_mode): tiled 2x2 fast path, overlapping
# windows, padding >= 1, ceil_mode windows hanging over the edge, rectangles;
# the 3-wide stride-2 fast paths with and without padding and on one axis only
WINDOWS = [
    ((2, 2), (2, 2), (0, 0), False),
    ((2, 2), (2, 2), (0, 0), True),
    ((3, 3), (2, 2), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), True),
    ((3, 3), (2, 2), (0, 0), True),
    ((3, 2), (2, 2), (1, 0), False),
    ((3, 3), (1, 1), (1, 1), False),
    ((2, 3), (1, 2), (1, 0), True),
    ((4, 2), (3, 1), (2, 1), True),
    ((1, 1), (2, 2), (0, 0), False),
]
WINDOW_IDS = ["k%s-s%s-p%s-ceil%d" % (k, s, p, c) for k, s, p, c in WINDOWS]


def make_input(rng, shape, dtype, contiguous):
    """Random input, or the same values as a non-contiguous (transposed) view."""
    if contiguous:
        return rng.standard_normal(shape).astype(dtype)
    base = rng.standard_normal(shape[:2] + shape[:1:-1]).astype(dtype)
    view = base.swapaxes(2, 3)
    assert not view.flags.c_contiguous
    return view


def tolerance(dtype):
    return 1e-6 if dtype == np.float32 else 1e-12


# ---------------------------------------------------------------------------
# max_pool2d
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", WINDOWS, ids=WINDOW_IDS)
def test_max_pool2d_forward_matches_maximum_filter(rng, dtype, contiguous, kernel, stride,
                                                  padding, ceil_mode):
    x = make_input(rng, (2, 3, 9, 8), dtype, contiguous)
    out, indices = pool.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    assert out.dtype == dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(out, max_pool2d_reference(x, kernel, stride, padding,
                                                            ceil_mode))
    np.testing.assert_array_equal(indices, max_pool2d_indices_reference(x, kernel, stride,
                                                                        padding, ceil_mode))


def test_max_pool2d_ties_go_to_first_maximum():
    x = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 2.0, 0.0, 0.0],
                    [5.0, 5.0, 7.0, 7.0],
                    [5.0, 5.0, 7.0, 7.0]]]])
    out, indices = pool.max_pool2d_forward(x, 2, 2, 0, False)
    np.testing.assert_array_equal(out[0, 0], [[3.0, 3.0], [5.0, 7.0]])
    np.testing.assert_array_equal(indices[0, 0], [[1, 2], [8, 10]])
    # the generic (padded, overlapping) path breaks ties the same way
    out, indices = pool.max_pool2d_forward(np.ones((1, 1, 3, 3)), 3, 1, 1, False)
    np.testing.assert_array_equal(indices[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", WINDOWS, ids=WINDOW_IDS)
def test_max_pool2d_padding_never_wins_on_all_negative_input(rng, kernel, stride, padding,
                                                            ceil_mode):
    x = -1.0 - rng.random((1, 2, 7, 6))
    out, indices = pool.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    assert np.all(out < 0)
    planes = x.reshape(2, -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, indices.reshape(2, -1), 1),
                                  out.reshape(2, -1))


def test_max_pool2d_nan_propagates():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, 1, 0] = np.nan
    out, _ = pool.max_pool2d_forward(x, 2)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 0.0


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", WINDOWS, ids=WINDOW_IDS)
def test_max_pool2d_backward_scatters_through_indices(rng, kernel, stride, padding, ceil_mode):
    x = np.full((2, 2, 6, 7), 0.5)          # every window is one big tie
    out, indices = pool.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    grad_out = rng.standard_normal(out.shape)
    grad_x = pool.max_pool2d_backward(grad_out, indices, x.shape)
    assert grad_x.shape == x.shape
    np.testing.assert_allclose(grad_x.sum(axis=(2, 3)), grad_out.sum(axis=(2, 3)), rtol=1e-12)
    expected = np.zeros((4, 42))
    for plane, (plane_indices, plane_grads) in enumerate(zip(indices.reshape(4, -1),
                                                             grad_out.reshape(4, -1))):
        np.add.at(expected[plane], plane_indices, plane_grads)
    np.testing.assert_allclose(grad_x.reshape(4, -1), expected, rtol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", WINDOWS[1:8], ids=WINDOW_IDS[1:8])
def test_max_pool2d_backward_finite_differences(rng, kernel, stride, padding, ceil_mode):
    # distinct, well separated values: the max is differentiable there
    x = rng.permutation(40).reshape(1, 1, 5, 8).astype(np.float64)
    out, indices = pool.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    grad_out = rng.standard_normal(out.shape)
    grad_x = pool.max_pool2d_backward(grad_out, indices, x.shape)
    numeric = finite_difference_vjp(
        lambda v: pool.max_pool2d_forward(v, kernel, stride, padding, ceil_mode)[0],
        [x], grad_out, 0, step=1e-3)
    np.testing.assert_allclose(grad_x, numeric, atol=1e-8)


def test_max_pool2d_matches_torch_on_constant_and_random_input(rng):
    torch = pytest.importorskip("torch")
    for x in (np.full((2, 3, 8, 8), 2.0), rng.integers(-2, 3, (2, 3, 9, 7)).astype(float)):
        for kernel, stride, padding, ceil_mode in WINDOWS:
            x_torch = torch.tensor(x, requires_grad=True)
            out_torch, indices_torch = torch.nn.functional.max_pool2d(
                x_torch, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
            grad_out = rng.standard_normal(tuple(out_torch.shape))
            out_torch.backward(torch.tensor(grad_out))
            out, indices = pool.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
            np.testing.assert_array_equal(out, out_torch.detach().numpy())
            np.testing.assert_array_equal(indices, indices_torch.numpy())
            np.testing.assert_allclose(pool.max_pool2d_backward(grad_out, indices, x.shape),
                                       x_torch.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_max_pool2d_accepts_unbatched_input(rng):
    x = rng.standard_normal((3, 6, 6))
    out, indices = pool.max_pool2d_forward(x, 3, 2, 1)
    batched, batched_indices = pool.max_pool2d_forward(x[None], 3, 2, 1)
    np.testing.assert_array_equal(out, batched[0])
    grad = pool.max_pool2d_backward(np.ones_like(out), indices, x.shape)
    assert grad.shape == x.shape


# ---------------------------------------------------------------------------
# avg_pool2d
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", WINDOWS, ids=WINDOW_IDS)
def test_avg_pool2d_forward_matches_uniform_filter(rng, dtype, contiguous, count_include_pad,
                                                  kernel, stride, padding, ceil_mode):
    x = make_input(rng, (2, 3, 9, 8), dtype, contiguous)
    out = pool.avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad)
    assert out.dtype == dtype
    expected = avg_pool2d_reference(x, kernel, stride, padding, ceil_mode, count_include_pad)
    np.testing.assert_allclose(out, expected, rtol=tolerance(dtype), atol=tolerance(dtype))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", WINDOWS, ids=WINDOW_IDS)
def test_avg_pool2d_backward_finite_differences(rng, count_include_pad, kernel, stride,
                                                padding, ceil_mode):
    x = rng.standard_normal((1, 2, 5, 6))
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    out = pool.avg_pool2d_forward(x, *args)
    grad_out = rng.standard_normal(out.shape)
    grad_x = pool.avg_pool2d_backward(grad_out, x.shape, *args)
    numeric = finite_difference_vjp(lambda v: pool.avg_pool2d_forward(v, *args), [x],
                                    grad_out, 0)
    np.testing.assert_allclose(grad_x, numeric, rtol=1e-6, atol=1e-8)


def test_avg_pool2d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 2, 7, 9))
    for kernel, stride, padding, ceil_mode in WINDOWS:
        for count_include_pad in (True, False):
            x_torch = torch.tensor(x, requires_grad=True)
            out_torch = torch.nn.functional.avg_pool2d(x_torch, kernel, stride, padding,
                                                       ceil_mode, count_include_pad)
            grad_out = rng.standard_normal(tuple(out_torch.shape))
            out_torch.backward(torch.tensor(grad_out))
            args = (kernel, stride, padding, ceil_mode, count_include_pad)
            np.testing.assert_allclose(pool.avg_pool2d_forward(x, *args),
                                       out_torch.detach().numpy(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(pool.avg_pool2d_backward(grad_out, x.shape, *args),
                                       x_torch.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# adaptive_avg_pool2d
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("output_size", [1, (3, 2), (5, 7), (4, 4), (9, 1)])
def test_adaptive_avg_pool2d_forward_matches_loops(rng, dtype, contiguous, output_size):
    x = make_input(rng, (2, 3, 7, 5), dtype, contiguous)
    out = pool.adaptive_avg_pool2d_forward(x, output_size)
    size = (output_size, output_size) if isinstance(output_size, int) else output_size
    np.testing.assert_allclose(out, adaptive_avg_pool2d_reference(x, size),
                               rtol=tolerance(dtype), atol=tolerance(dtype))


def test_adaptive_avg_pool2d_global_average_and_none(rng):
    x = rng.standard_normal((2, 4, 6, 5))
    np.testing.assert_allclose(pool.adaptive_avg_pool2d_forward(x, 1)[..., 0, 0],
                               x.mean(axis=(2, 3)), rtol=1e-12)
    out = pool.adaptive_avg_pool2d_forward(x, (None, 1))
    np.testing.assert_allclose(out[..., 0], x.mean(axis=3), rtol=1e-12)


@pytest.mark.parametrize("output_size", [1, (3, 2), (4, 7)])
def test_adaptive_avg_pool2d_backward_finite_differences(rng, output_size):
    x = rng.standard_normal((1, 2, 5, 6))
    out = pool.adaptive_avg_pool2d_forward(x, output_size)
    grad_out = rng.standard_normal(out.shape)
    grad_x = pool.adaptive_avg_pool2d_backward(grad_out, x.shape)
    numeric = finite_difference_vjp(lambda v: pool.adaptive_avg_pool2d_forward(v, output_size),
                                    [x], grad_out, 0)
    np.testing.assert_allclose(grad_x, numeric, rtol=1e-6, atol=1e-8)


def test_adaptive_avg_pool2d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 7, 10))
    for output_size in [(3, 4), (5, 3), 1, (7, 10)]:
        x_torch = torch.tensor(x, requires_grad=True)
        out_torch = torch.nn.functional.adaptive_avg_pool2d(x_torch, output_size)
        grad_out = rng.standard_normal(tuple(out_torch.shape))
        out_torch.backward(torch.tensor(grad_out))
        np.testing.assert_allclose(pool.adaptive_avg_pool2d_forward(x, output_size),
                                   out_torch.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(pool.adaptive_avg_pool2d_backward(grad_out, x.shape),
                                   x_torch.grad.numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------
# Inputs are not modified; bad arguments
# ---------------------------------------------------------------------------

def test_kernels_do_not_modify_inputs(rng):
    x = rng.standard_normal((2, 2, 6, 6))
    saved = x.copy()
    out, indices = pool.max_pool2d_forward(x, 2)
    grad_out = np.ones_like(out)
    pool.max_pool2d_backward(grad_out, indices, x.shape)
    pool.avg_pool2d_forward(x, 3, 2, 1)
    pool.adaptive_avg_pool2d_forward(x, 4)
    np.testing.assert_array_equal(x, saved)
    np.testing.assert_array_equal(grad_out, 1.0)


@pytest.mark.parametrize("kernel_size, stride, padding, message", [
    (-1, None, 0, "kernel_size must be positive"),
    (0, None, 0, "kernel_size must be positive"),
    (2, 0, 0, "stride must be positive"),
    (2, -1, 0, "stride must be positive"),
    (2, 2, -1, "padding must be non-negative"),
    (2, 2, 2, "padding should be at most half of kernel size"),
    ((3, 2), 1, (1, 2), "padding should be at most half of kernel size"),
    (9, 1, 0, "too small"),
])
def test_bad_window_arguments_raise_value_error(kernel_size, stride, padding, message):
    x = np.zeros((1, 1, 6, 6))
    for forward in (pool.max_pool2d_forward, pool.avg_pool2d_forward):
        with pytest.raises(ValueError, match=message):
            forward(x, kernel_size, stride, padding)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"max_pool2d: input must be 3-D .* got shape \(6, 6\)"):
        pool.max_pool2d_forward(np.zeros((6, 6)), 2)
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        pool.avg_pool2d_forward(np.zeros((1, 1, 4, 4), dtype=np.int64), 2)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints"):
        pool.max_pool2d_forward(np.zeros((1, 1, 4, 4)), 2.5)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        pool.max_pool2d_forward([[[[1.0]]]], 1)
    with pytest.raises(ValueError, match="output_size must be positive"):
        pool.adaptive_avg_pool2d_forward(np.zeros((1, 1, 4, 4)), 0)
    with pytest.raises(ValueError, match="indices has shape"):
        pool.max_pool2d_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 3), np.int64),
                                 (1, 1, 4, 4))
    with pytest.raises(ValueError, match="grad_out has shape"):
        pool.avg_pool2d_backward(np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), 2)
    with pytest.raises(ValueError, match=r"2 indices lie outside the \(4, 4\) input planes"):
        pool.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.array([[[[0, 16], [15, -1]]]]),
                                 (1, 1, 4, 4))


def test_validate_pool2d_args_normalises():
    assert pool.validate_pool2d_args("f", (1, 1, 8, 8), 3, None, 1) == (
        (3, 3), (3, 3), (1, 1), (3, 3))
    assert pool.validate_pool2d_args("f", (2, 7, 9), (2, 3), (1, 2), 0, True) == (
        (2, 3), (1, 2), (0, 0), (6, 4))


# serial and parallel; odd sizes (floor mode); LeNet's short rows (5 outputs)
@pytest.mark.parametrize("shape", [(1, 3, 8, 9), (2, 3, 7, 6), (4, 16, 64, 64),
                                   (64, 16, 10, 10)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_runner_matches_reference(shape, dtype, rng):
    x = rng.normal(size=shape).astype(dtype)
    x[0, 1, 2:4, 2:4] = 1.5                       # a window of ties
    run = pool.max_pool2d_runner(x.shape, 2)
    expected = max_pool2d_reference(x, (2, 2), (2, 2), (0, 0)).astype(dtype)
    np.testing.assert_array_equal(run(x), expected)
    out = np.empty(expected.shape, dtype)
    assert run(x, out) is out
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="out must be a C-contiguous writable"):
        run(x, np.empty(expected.shape[::-1], dtype).T)
    with pytest.raises(ValueError, match="out must be"):
        run(x, np.empty(expected.shape, np.float32 if dtype == np.float64 else np.float64))
    x[0, 0, 0, 1] = np.nan                        # NaN wins its window, as in torch
    expected[0, 0, 0, 0] = np.nan
    np.testing.assert_array_equal(run(x), expected)


def test_max_pool_runner_general_windows_fall_back(rng):
    x = rng.normal(size=(2, 3, 9, 7))
    run = pool.max_pool2d_runner(x.shape, 3, 2, 1, True)
    np.testing.assert_array_equal(run(x), max_pool2d_reference(x, (3, 3), (2, 2), (1, 1),
                                                               ceil_mode=True))


@pytest.mark.parametrize("shape", [(1, 64, 8, 8), (3, 5, 7, 6), (40, 64, 32, 32)])
@pytest.mark.parametrize("output_size", [(1, 1), (2, 3)])
def test_adaptive_avg_pool2d_runner_matches_the_reference(rng, shape, output_size):
    """The prepared inference call (serial and parallel global means) writes into
    its buffer what the reference computes."""
    x = rng.normal(size=shape).astype(np.float32)
    run = pool.adaptive_avg_pool2d_runner(x.shape, output_size)
    expected = adaptive_avg_pool2d_reference(x, output_size)
    out = np.full(expected.shape, np.nan, np.float32)
    np.testing.assert_allclose(run(x, out), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="empty spatial"):
        pool.adaptive_avg_pool2d_runner((1, 2, 0, 3), output_size)


def test_compiled_inference_pools_refuse_bad_arrays_before_running(rng):
    """The C loops behind the runners check dtype, layout, writability and shapes."""
    from fastdl_ext import pool as compiled
    x = rng.normal(size=(3, 8, 8)).astype(np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        compiled.max_pool2d_2x2_into(x.astype(np.int32), np.empty((3, 4, 4), np.int32), 1)
    with pytest.raises(ValueError, match=r"out must be \(3, 4, 4\)"):
        compiled.max_pool2d_2x2_into(x, np.empty((3, 4, 3), np.float32), 1)
    read_only = np.empty((3, 4, 4), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out must be a C-contiguous writable"):
        compiled.max_pool2d_2x2_into(x, read_only, 1)
    with pytest.raises(ValueError, match="x must be a C-contiguous"):
        compiled.max_pool2d_2x2_into(x[:, :, ::2], np.empty((3, 4, 2), np.float32), 1)
    with pytest.raises(ValueError, match="out must have 3 values"):
        compiled.global_mean_into(x.reshape(3, 64), np.empty(4, np.float32), 1)
    with pytest.raises(ValueError, match="no values to average"):
        compiled.global_mean_into(np.empty((3, 0), np.float32), np.empty(3, np.float32), 1)
    run = pool.adaptive_avg_pool2d_runner((2, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="out must be a C-contiguous"):
        run(rng.normal(size=(2, 3, 8, 8)).astype(np.float32),
            np.empty((1, 1, 3, 2), np.float32).transpose(3, 2, 0, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_mean_sums_in_float64_in_a_fixed_order(dtype, rng):
    """The compiled global mean equals a float64 NumPy mean, bitwise the same at any
    thread count (parallel above its serial threshold)."""
    from fastdl_ext import pool as compiled
    x = (rng.normal(size=(2048, 67)) + 1e3).astype(dtype)   # a tail past the 16-wide sums
    means = [np.empty(2048, dtype) for _ in range(3)]
    for threads, out in zip((1, 2, 3), means):
        compiled.global_mean_into(x, out, threads)
    np.testing.assert_array_equal(means[0], means[1])
    np.testing.assert_array_equal(means[0], means[2])
    np.testing.assert_allclose(means[0], x.astype(np.float64).mean(axis=1),
                               rtol=1e-7 if dtype == np.float32 else 1e-14)


# ---------------------------------------------------------------------------
# The 3-wide stride-2 fast paths: edges, -inf and NaN, thread counts
# ---------------------------------------------------------------------------

# even widths take max pooling's whole-plane loop (W = 2 W_out), odd ones the rows
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (1, 2, 10, 6)])
@pytest.mark.parametrize("padding, ceil_mode", [(1, False), (1, True), (0, False), (0, True)])
def test_3x3_stride_2_pools_match_torch_with_infinities_and_nan(rng, shape, padding,
                                                                ceil_mode):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0] = -np.inf                  # all -inf windows: argmax on the first real cell
    x[0, 1, 1, ::3] = np.nan           # NaN wins its windows, the last one scanned
    x[0, 1, 2, 1::2] = np.nan
    x[-1, -1, :, -1] = np.inf
    x_torch = torch.tensor(x, requires_grad=True)
    out_torch, indices_torch = torch.nn.functional.max_pool2d(
        x_torch, 3, 2, padding, ceil_mode=ceil_mode, return_indices=True)
    out, indices = pool.max_pool2d_forward(x, 3, 2, padding, ceil_mode)
    np.testing.assert_array_equal(out, out_torch.detach().numpy())
    np.testing.assert_array_equal(indices, indices_torch.numpy())
    x64 = rng.standard_normal(shape)
    for count_include_pad in (True, False):
        x_torch = torch.tensor(x64, requires_grad=True)
        out_torch = torch.nn.functional.avg_pool2d(x_torch, 3, 2, padding, ceil_mode,
                                                   count_include_pad)
        grad_out = rng.standard_normal(tuple(out_torch.shape))
        out_torch.backward(torch.tensor(grad_out))
        args = (3, 2, padding, ceil_mode, count_include_pad)
        np.testing.assert_allclose(pool.avg_pool2d_forward(x64, *args),
                                   out_torch.detach().numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(pool.avg_pool2d_backward(grad_out, shape, *args),
                                   x_torch.grad.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), 1)])
def test_avg_pool2d_divisor_override_matches_torch(rng, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 8))
    x_torch = torch.tensor(x, requires_grad=True)
    out_torch = torch.nn.functional.avg_pool2d(x_torch, kernel, stride, padding, True, True,
                                               divisor_override=5)
    grad_out = rng.standard_normal(tuple(out_torch.shape))
    out_torch.backward(torch.tensor(grad_out))
    args = (kernel, stride, padding, True, True, 5)
    np.testing.assert_allclose(pool.avg_pool2d_forward(x, *args), out_torch.detach().numpy(),
                               rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(pool.avg_pool2d_backward(grad_out, x.shape, *args),
                               x_torch.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_pools_are_bitwise_the_same_at_any_thread_count(rng):
    """Planes are split over threads whole: 1 and 2 threads give identical bits
    (an input past the serial threshold, so the parallel loops run)."""
    import fastdl
    x = rng.standard_normal((4, 40, 32, 32)).astype(np.float32)
    before = fastdl.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            fastdl.set_num_threads(threads)
            out, indices = pool.max_pool2d_forward(x, 3, 2, 1)
            mean = pool.avg_pool2d_forward(x, 3, 2, 1, False, False)
            grad = pool.avg_pool2d_backward(mean, x.shape, 3, 2, 1, False, False)
            results.append((out, indices, mean, grad))
    finally:
        fastdl.set_num_threads(before)
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)
