"""Normalisation kernels against NumPy references, finite differences and torch."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastdl.kernels import norm
from reference import (batch_norm_reference, finite_difference_vjp, group_norm_reference,
                       instance_norm_reference, layer_norm_reference)

EPS = 1e-5


def make_input(rng, shape, dtype, contiguous, offset=0.0):
    """Random input, or the same kind of values as a non-contiguous view."""
    if contiguous:
        return (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    base = (rng.standard_normal(shape + (2,)) * 2 + offset).astype(dtype)
    view = base[..., 0]
    assert not view.flags.c_contiguous
    return view


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


def affine(rng, shape, with_affine):
    if not with_affine:
        return None, None
    return rng.standard_normal(shape), rng.standard_normal(shape)


# ---------------------------------------------------------------------------
# Forward against the zscore-style references
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (3, 4, 5, 6), (2, 3, 9, 9), (3, 144, 4, 4)])
@pytest.mark.parametrize("with_affine", [True, False])
def test_batch_norm_training_forward(rng, dtype, contiguous, shape, with_affine):
    x = make_input(rng, shape, dtype, contiguous, offset=3.0)
    weight, bias = affine(rng, shape[1], with_affine)
    y, mean, inv_std = norm.batch_norm_forward(x, weight, bias, None, None, True, 0.1, EPS)
    assert y.dtype == dtype and mean.shape == inv_std.shape == (shape[1],)
    np.testing.assert_allclose(y, batch_norm_reference(x, weight, bias, EPS), **tolerance(dtype))
    channel = (1, -1) + (1,) * (len(shape) - 2)
    x_hat = (x - mean.reshape(channel)) * inv_std.reshape(channel)   # what the backward uses
    np.testing.assert_allclose(x_hat, batch_norm_reference(x, None, None, EPS),
                               **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("shape, normalized_shape", [((6, 10), (10,)), ((2, 3, 4, 5), (4, 5)),
                                                     ((3, 7), 7)])
@pytest.mark.parametrize("with_affine", [True, False])
def test_layer_norm_forward(rng, dtype, contiguous, shape, normalized_shape, with_affine):
    x = make_input(rng, shape, dtype, contiguous, offset=-2.0)
    trailing = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    weight, bias = affine(rng, trailing, with_affine)
    y, mean, inv_std = norm.layer_norm_forward(x, normalized_shape, weight, bias, EPS)
    assert y.dtype == dtype and mean.shape == inv_std.shape == shape[:len(shape) - len(trailing)]
    np.testing.assert_allclose(y, layer_norm_reference(x, trailing, weight, bias, EPS),
                               **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("shape, num_groups", [((2, 6, 4, 5), 3), ((2, 6, 4, 5), 1),
                                               ((2, 6, 4, 5), 6), ((5, 4), 2), ((2, 4, 7), 2)])
@pytest.mark.parametrize("with_affine", [True, False])
def test_group_norm_forward(rng, dtype, contiguous, shape, num_groups, with_affine):
    x = make_input(rng, shape, dtype, contiguous, offset=1.0)
    weight, bias = affine(rng, shape[1], with_affine)
    y, mean, inv_std = norm.group_norm_forward(x, num_groups, weight, bias, EPS)
    assert y.dtype == dtype and mean.shape == inv_std.shape == (shape[0], num_groups)
    np.testing.assert_allclose(y, group_norm_reference(x, num_groups, weight, bias, EPS),
                               **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 7)])
@pytest.mark.parametrize("with_affine", [True, False])
def test_instance_norm_forward(rng, dtype, contiguous, shape, with_affine):
    x = make_input(rng, shape, dtype, contiguous, offset=5.0)
    weight, bias = affine(rng, shape[1], with_affine)
    y, mean, inv_std = norm.instance_norm_forward(x, None, None, weight, bias, True, 0.1, EPS)
    assert mean.shape == inv_std.shape == shape[:2]
    np.testing.assert_allclose(y, instance_norm_reference(x, weight, bias, EPS),
                               **tolerance(dtype))


def test_group_norm_special_cases_equal_layer_and_instance_norm(rng):
    x = rng.standard_normal((3, 4, 5, 6))
    y_one_group = norm.group_norm_forward(x, 1)[0]
    np.testing.assert_allclose(y_one_group, norm.layer_norm_forward(x, (4, 5, 6))[0],
                               rtol=1e-12, atol=1e-12)
    y_group_per_channel = norm.group_norm_forward(x, 4)[0]
    np.testing.assert_allclose(y_group_per_channel, norm.instance_norm_forward(x)[0],
                               rtol=1e-12, atol=1e-12)


def test_float32_statistics_stay_accurate_far_from_zero(rng):
    # a large common offset with a small spread: one-pass E[x^2] - E[x]^2 in
    # float32 would lose every digit of the variance here
    x = (1e4 + rng.standard_normal((4, 3, 64, 64))).astype(np.float32)
    y = norm.batch_norm_forward(x, None, None, None, None, True, 0.1, EPS)[0]
    expected = batch_norm_reference(x, None, None, EPS)
    np.testing.assert_allclose(y, expected, atol=2e-3)
    y = norm.layer_norm_forward(x, (64, 64))[0]
    np.testing.assert_allclose(y, layer_norm_reference(x, (64, 64), None, None, EPS), atol=2e-3)


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (1e4, 1e-2), (-3e3, 1.0), (1.0, 1e-4)])
def test_float32_statistics_match_float64(rng, offset, spread):
    # float32 input, statistics summed in float32 spans joined in float64 around a
    # pivot: mean and variance to ~1e-7 of the spread, however far from zero
    x = (offset + spread * rng.standard_normal((6, 4, 3000))).astype(np.float32)
    exact = x.astype(np.float64)
    _, mean, inv_std = norm.layer_norm_forward(x, 3000, eps=0.0)
    np.testing.assert_allclose(mean, exact.mean(axis=2), rtol=0, atol=1e-6 * spread)
    np.testing.assert_allclose(1 / inv_std ** 2, exact.var(axis=2), rtol=1e-6)
    _, mean, inv_std = norm.batch_norm_forward(x, None, None, None, None, True, eps=0.0)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2)), rtol=0, atol=1e-6 * spread)
    np.testing.assert_allclose(1 / inv_std ** 2, exact.var(axis=(0, 2)), rtol=1e-6)


def test_layer_norm_float32_backward_matches_float64(rng):
    # the row sums of the backward run in float32 spans joined in float64
    x = 50 + 3 * rng.standard_normal((64, 2500))
    grad_out = rng.standard_normal(x.shape) + 0.5
    weight = rng.standard_normal(2500)
    _, mean, inv_std = norm.layer_norm_forward(x, 2500, weight)
    expected = norm.layer_norm_backward(grad_out, x, mean, inv_std, weight, 2500)
    result = norm.layer_norm_backward(grad_out.astype(np.float32), x.astype(np.float32),
                                      mean, inv_std, weight.astype(np.float32), 2500)
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-6 * np.abs(want).max())


@pytest.mark.parametrize("norm_name", ["batch", "group", "instance"])
def test_float32_backward_matches_float64_over_long_runs(rng, norm_name):
    # the backward's sums run in x's dtype over pieces of at most 1024 elements (256
    # for batch norm), added in float64: float32 gradients stay within a few 1e-6 of
    # float64's on runs of several pieces, far from zero
    x = 50 + 3 * rng.standard_normal((3, 4, 45, 50))
    grad_out = rng.standard_normal(x.shape) + 0.5
    weight = rng.standard_normal(4)
    forward, backward = {
        "batch": (lambda x, w: norm.batch_norm_forward(x, w, None, None, None, True),
                  lambda g, x, f, w: norm.batch_norm_backward(g, x, f[1], f[2], w, True)),
        "group": (lambda x, w: norm.group_norm_forward(x, 2, w),
                  lambda g, x, f, w: norm.group_norm_backward(g, x, f[1], f[2], w, 2)),
        "instance": (lambda x, w: norm.instance_norm_forward(x, weight=w),
                     lambda g, x, f, w: norm.instance_norm_backward(g, x, f[1], f[2], w)),
    }[norm_name]
    statistics = forward(x, weight)
    expected = backward(grad_out, x, statistics, weight)
    result = backward(grad_out.astype(np.float32), x.astype(np.float32), statistics,
                      weight.astype(np.float32))
    # grad_weight sums g·x_hat, whose float32 x_hat (x at 50 ± 3, less a float32 mean)
    # holds ~1e-6 relative and cancels over the run: a looser bound there, as before
    # the sums ran in pieces
    for got, want, bound in zip(result, expected, (5e-6, 5e-5, 5e-6)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=bound * np.abs(want).max())


def test_statistics_merge_across_blocks(rng):
    # rows longer than one statistics block (4096) are merged with Chan's update
    x = rng.standard_normal((3, 10_000)) * np.linspace(1, 5, 10_000) + np.linspace(0, 50, 10_000)
    y = norm.layer_norm_forward(x, 10_000)[0]
    np.testing.assert_allclose(y, layer_norm_reference(x, (10_000,), None, None, EPS),
                               rtol=1e-10, atol=1e-10)
    y = norm.group_norm_forward(x.reshape(3, 4, 2500), 2)[0]
    np.testing.assert_allclose(y, group_norm_reference(x.reshape(3, 4, 2500), 2, None, None,
                                                       EPS), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# Batch norm split where the ranks of SyncBatchNorm meet
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 6)])
def test_batch_norm_split_equals_the_whole(rng, dtype, shape):
    """Statistics, the forward with them given, the backward's sums and the input gradient
    from them are batch_norm_forward and batch_norm_backward, pass for pass."""
    x = make_input(rng, shape, dtype, contiguous=False, offset=1.0)
    grad = rng.standard_normal(shape).astype(dtype)
    weight, bias = (v.astype(dtype) for v in affine(rng, shape[1:2], True))
    count = x.size // shape[1]
    running, running_split = (np.zeros(shape[1]), np.ones(shape[1])), (
        np.zeros(shape[1]), np.ones(shape[1]))
    y, mean, inv_std = norm.batch_norm_forward(x, weight, bias, *running, True, 0.1, EPS)
    grad_x, grad_weight, grad_bias = norm.batch_norm_backward(grad, x, mean, inv_std, weight,
                                                              True)
    statistics = norm.batch_norm_statistics(x)
    np.testing.assert_array_equal(statistics[0], mean)
    axes = (0, *range(2, x.ndim))
    np.testing.assert_allclose(statistics[1], x.astype(np.float64).var(axis=axes),
                               **tolerance(dtype))
    y_split, mean_split, inv_std_split = norm.batch_norm_forward(
        x, weight, bias, *running_split, True, 0.1, EPS, statistics=(*statistics, count))
    np.testing.assert_array_equal(y_split, y)
    np.testing.assert_array_equal(inv_std_split, inv_std)
    np.testing.assert_array_equal(np.stack(running_split), np.stack(running))
    sum_grad, sum_grad_x_hat = norm.batch_norm_backward_reduce(grad, x, mean, inv_std)
    assert sum_grad.dtype == sum_grad_x_hat.dtype == np.float64
    np.testing.assert_array_equal(sum_grad.astype(dtype), grad_bias)
    np.testing.assert_array_equal(sum_grad_x_hat.astype(dtype), grad_weight)
    split_grad_x = norm.batch_norm_backward_input(grad, x, mean, inv_std, weight, sum_grad,
                                                  sum_grad_x_hat, count)
    np.testing.assert_allclose(split_grad_x, grad_x, rtol=0,
                               atol=1e-6 if dtype == np.float32 else 1e-13)


def test_batch_norm_input_gradient_over_a_larger_batch(rng):
    """Half a batch's input gradient from the whole batch's sums is that half of the whole
    batch's input gradient."""
    x = rng.standard_normal((6, 2, 3, 3)) + 2
    grad = rng.standard_normal(x.shape)
    weight = rng.standard_normal(2)
    _, mean, inv_std = norm.batch_norm_forward(x, weight, None, None, None, True)
    whole, _, _ = norm.batch_norm_backward(grad, x, mean, inv_std, weight, True)
    sums = [norm.batch_norm_backward_reduce(grad[part], x[part], mean, inv_std)
            for part in (slice(0, 3), slice(3, 6))]
    half = norm.batch_norm_backward_input(grad[:3], x[:3], mean, inv_std, weight,
                                          sums[0][0] + sums[1][0], sums[0][1] + sums[1][1],
                                          x.size // 2)
    np.testing.assert_allclose(half, whole[:3], rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------
# Batch-norm running statistics (PITFALLS 1)
# ---------------------------------------------------------------------------

def test_batch_norm_running_stats_use_unbiased_variance(rng):
    x = rng.standard_normal((4, 3, 2, 5)) * 3 + 1
    running_mean = np.full(3, 0.5)
    running_var = np.full(3, 2.0)
    y, _, inv_std = norm.batch_norm_forward(x, None, None, running_mean, running_var, True,
                                            0.1, EPS)
    n = 4 * 2 * 5
    batch_mean = x.mean(axis=(0, 2, 3))
    biased_var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(running_mean, 0.9 * 0.5 + 0.1 * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(running_var, 0.9 * 2.0 + 0.1 * biased_var * n / (n - 1),
                               rtol=1e-12)
    # ... while the batch itself is normalised with the biased variance
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(biased_var + EPS), rtol=1e-12)


def test_batch_norm_momentum_none_is_cumulative_average(rng):
    batches = [rng.standard_normal((5, 2)) + i for i in range(3)]
    running_mean, running_var = np.zeros(2), np.ones(2)
    for count, x in enumerate(batches, start=1):
        norm.batch_norm_forward(x, None, None, running_mean, running_var, True, None, EPS,
                                num_batches_tracked=count)
    np.testing.assert_allclose(running_mean, np.mean([b.mean(axis=0) for b in batches], 0),
                               rtol=1e-12)
    np.testing.assert_allclose(running_var, np.mean([b.var(axis=0, ddof=1) for b in batches],
                                                    0), rtol=1e-12)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        norm.batch_norm_forward(batches[0], None, None, running_mean, running_var, True, None)


def test_batch_norm_eval_uses_running_stats_only(rng):
    x = rng.standard_normal((4, 3, 5))
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    running_mean, running_var = rng.standard_normal(3), rng.random(3) + 0.5
    saved = running_mean.copy(), running_var.copy()
    y, _, _ = norm.batch_norm_forward(x, weight, bias, running_mean, running_var, False, 0.1,
                                      EPS)
    np.testing.assert_allclose(y, batch_norm_reference(x, weight, bias, EPS, running_mean,
                                                       running_var), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(running_mean, saved[0])
    np.testing.assert_array_equal(running_var, saved[1])
    # batch size 1 is fine in eval
    norm.batch_norm_forward(x[:1, :, :1], None, None, running_mean, running_var, False)


@pytest.mark.parametrize("shape", [(32, 64, 4, 4), (5, 7, 300), (3, 2, 70, 70)])
def test_batch_norm_eval_over_many_work_items(rng, shape):
    # short rows many to an item, long rows one (or part of one) to an item
    x = rng.standard_normal(shape)
    channels = shape[1]
    weight, bias = rng.standard_normal(channels), rng.standard_normal(channels)
    running_mean, running_var = rng.standard_normal(channels), rng.random(channels) + 0.5
    y, _, _ = norm.batch_norm_forward(x, weight, bias, running_mean, running_var, False, 0.1,
                                      EPS)
    np.testing.assert_allclose(y, batch_norm_reference(x, weight, bias, EPS, running_mean,
                                                       running_var), rtol=1e-12, atol=1e-12)


def test_batch_norm_one_value_per_channel_in_training_raises():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        norm.batch_norm_forward(np.ones((1, 3)), None, None, None, None, True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        norm.batch_norm_forward(np.ones((1, 3, 1, 1)), None, None, None, None, True)
    # one sample with spatial extent has several values per channel
    norm.batch_norm_forward(np.arange(6.0).reshape(1, 3, 2), None, None, None, None, True)


def test_instance_norm_running_stats_and_eval(rng):
    x = rng.standard_normal((3, 2, 4, 5)) + 2
    running_mean, running_var = np.zeros(2), np.ones(2)
    norm.instance_norm_forward(x, running_mean, running_var, None, None, True, 0.1, EPS)
    n = 20
    np.testing.assert_allclose(running_mean, 0.1 * x.mean(axis=(2, 3)).mean(axis=0),
                               rtol=1e-12)
    np.testing.assert_allclose(running_var, 0.9 + 0.1 * (x.var(axis=(2, 3)) * n / (n - 1))
                               .mean(axis=0), rtol=1e-12)
    y = norm.instance_norm_forward(x, running_mean, running_var, None, None, False)[0]
    np.testing.assert_allclose(y, batch_norm_reference(x, None, None, EPS, running_mean,
                                                       running_var), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        norm.instance_norm_forward(np.ones((2, 3, 1, 1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(32, 144, 4, 4), (3, 70, 8, 8), (4, 5, 1, 1), (2, 3, 7, 9)])
def test_batch_norm_short_runs_in_memory_order_match_the_channel_order(rng, dtype, shape):
    _check_memory_order(rng, dtype, shape)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 9), c=st.integers(1, 200), h=st.integers(1, 8), w=st.integers(1, 8),
       double=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_property_batch_norm_walk_orders_agree(n, c, h, w, double, seed):
    _check_memory_order(np.random.default_rng(seed), np.float64 if double else np.float32,
                        (n, c, h, w))


def _check_memory_order(rng, dtype, shape):
    """Runs of at most SHORT_RUN_BYTES (4x4 and 8x8 maps) are walked image by image; the
    run walk forms its sums run by run in the same order as the channel walk, so the
    statistics agree to float64 rounding (1e-14 of each vector's largest value; LLVM
    may reassociate the float64 moment merge differently in the two loops). Runs of at
    most LANE_RUN_BYTES go lane by lane, their x's-dtype partial sums grouped by lane
    rather than by run: there the statistics agree to x's rounding. The outputs and
    gradients, computed from them in x's dtype, agree to x's rounding."""
    from fastdl.kernels import _norm_loops as loops, _norm_short as walks
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype).reshape(shape[0], shape[1], -1)
    grad = rng.standard_normal(x.shape).astype(dtype)
    weight, bias = rng.standard_normal((2, shape[1])).astype(dtype)
    run_bytes = x.shape[2] * x.itemsize
    walk = walks.memory_order(x, 1)
    assert walk == (walks.CHANNEL_WALK if run_bytes > walks.SHORT_RUN_BYTES or shape[0] < 2
                    else walks.LANE_WALK if run_bytes <= walks.LANE_RUN_BYTES
                    else walks.RUN_WALK)

    def run(memory_order):
        stats = [np.empty(shape[1]) for _ in range(3)]
        y = np.empty_like(x)
        loops.normalize_forward_kernel(x, weight, bias, shape[1], 1, EPS, True, *stats, y,
                                       memory_order)
        grad_x = np.empty_like(x)
        sums = loops.normalize_backward_kernel(grad, x, weight, shape[1], 1, stats[0],
                                               stats[2], True, True, grad_x, None,
                                               memory_order)
        # with fixed (running) statistics, and with no input gradient asked for
        fixed_grad_x = np.empty_like(x)
        fixed = loops.normalize_backward_kernel(grad, x, weight, shape[1], 1, stats[0],
                                                stats[2], False, True, fixed_grad_x, None,
                                                memory_order)
        sums_only = loops.normalize_backward_kernel(grad, x, weight, shape[1], 1, stats[0],
                                                    stats[2], True, False, grad_x[:0], None,
                                                    memory_order)
        return [y, grad_x, fixed_grad_x], [*stats, *sums, *fixed, *sums_only]

    (plain_outputs, plain_float64s) = run(walks.CHANNEL_WALK)
    # dx is a difference of terms of the size of inv_std * w * g, which can cancel far
    # below them (two values a channel): its rounding is relative to the terms
    terms = np.abs(plain_float64s[2][None, :, None] * weight[None, :, None] * grad).max()
    x_hat = (x - plain_float64s[0][None, :, None]) * plain_float64s[2][None, :, None]
    term_sizes = np.abs(grad).max() * max(1.0, np.abs(x_hat).max())
    for other_walk in {walk, walks.RUN_WALK, walks.LANE_WALK} if shape[0] > 1 else {walk}:
        outputs, float64s = run(other_walk)
        lanes = other_walk == walks.LANE_WALK
        tolerance = (16 if lanes else 4) * np.finfo(dtype).eps
        for image_order, channel_order in zip(outputs, plain_outputs):
            scale = max(np.abs(channel_order).max(initial=1.0), terms if lanes else 0.0)
            np.testing.assert_allclose(image_order, channel_order, rtol=tolerance,
                                       atol=tolerance * scale)
        sums_tolerance = tolerance if lanes else 1e-14
        for index, (image_order, channel_order) in enumerate(zip(float64s, plain_float64s)):
            # a gradient sum can cancel to far below its terms: rounding is relative to
            # the largest value of the vector, not to each element, and where the
            # partial sums are grouped differently (lanes), to the sum of its terms
            scale = np.abs(channel_order).max(initial=1e-300)
            if lanes and index >= 3:
                scale = max(scale, x.shape[0] * x.shape[2] * term_sizes)
            np.testing.assert_allclose(image_order, channel_order, rtol=sums_tolerance,
                                       atol=sums_tolerance * scale)


# ---------------------------------------------------------------------------
# Backward: finite differences in float64
# ---------------------------------------------------------------------------

def check_backward(rng, forward, backward, x, weight, bias):
    """Compare every gradient of ``forward(x, weight, bias)`` with finite differences."""
    y, mean, inv_std = forward(x, weight, bias)
    grad_out = rng.standard_normal(y.shape)
    grad_x, grad_weight, grad_bias = backward(grad_out, x, mean, inv_std, weight)

    def output(*inputs):
        return forward(*inputs)[0]

    inputs = [x, weight, bias]
    np.testing.assert_allclose(grad_x, finite_difference_vjp(output, inputs, grad_out, 0),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_weight, finite_difference_vjp(output, inputs, grad_out, 1),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_bias, finite_difference_vjp(output, inputs, grad_out, 2),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4), (2, 3, 2, 3), (2, 2, 9, 9)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward_finite_differences(rng, shape, training):
    x = rng.standard_normal(shape)
    running_mean, running_var = rng.standard_normal(shape[1]), rng.random(shape[1]) + 0.5

    def forward(x, weight, bias):
        # copies: the running statistics must not drift between evaluations
        return norm.batch_norm_forward(x, weight, bias, running_mean.copy(), running_var.copy(),
                                       training, 0.1, EPS)

    def backward(grad_out, x, mean, inv_std, weight):
        return norm.batch_norm_backward(grad_out, x, mean, inv_std, weight, training)

    check_backward(rng, forward, backward, x, rng.standard_normal(shape[1]),
                   rng.standard_normal(shape[1]))


@pytest.mark.parametrize("shape, normalized_shape", [((4, 6), (6,)), ((2, 3, 2, 3), (2, 3))])
def test_layer_norm_backward_finite_differences(rng, shape, normalized_shape):
    def forward(x, weight, bias):
        return norm.layer_norm_forward(x, normalized_shape, weight, bias, EPS)

    def backward(grad_out, x, mean, inv_std, weight):
        return norm.layer_norm_backward(grad_out, x, mean, inv_std, weight, normalized_shape)

    check_backward(rng, forward, backward, rng.standard_normal(shape),
                   rng.standard_normal(normalized_shape), rng.standard_normal(normalized_shape))


@pytest.mark.parametrize("shape, num_groups", [((2, 4, 2, 3), 2), ((2, 4, 3), 1),
                                               ((2, 4, 3), 4), ((3, 4), 2)])
def test_group_norm_backward_finite_differences(rng, shape, num_groups):
    def forward(x, weight, bias):
        return norm.group_norm_forward(x, num_groups, weight, bias, EPS)

    def backward(grad_out, x, mean, inv_std, weight):
        return norm.group_norm_backward(grad_out, x, mean, inv_std, weight, num_groups)

    check_backward(rng, forward, backward, rng.standard_normal(shape),
                   rng.standard_normal(shape[1]), rng.standard_normal(shape[1]))


@pytest.mark.parametrize("use_input_stats", [True, False])
def test_instance_norm_backward_finite_differences(rng, use_input_stats):
    shape = (2, 3, 2, 3)
    running_mean, running_var = rng.standard_normal(3), rng.random(3) + 0.5

    def forward(x, weight, bias):
        return norm.instance_norm_forward(x, running_mean.copy(), running_var.copy(), weight,
                                          bias, use_input_stats, 0.1, EPS)

    def backward(grad_out, x, mean, inv_std, weight):
        return norm.instance_norm_backward(grad_out, x, mean, inv_std, weight, use_input_stats)

    check_backward(rng, forward, backward, rng.standard_normal(shape), rng.standard_normal(3),
                   rng.standard_normal(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_float32_matches_float64_and_contiguity(rng, dtype):
    x = rng.standard_normal((4, 6, 3, 5))
    grad_out = rng.standard_normal(x.shape)
    weight = rng.standard_normal(6)
    _, mean, inv_std = norm.group_norm_forward(x, 3, weight, None)
    expected = norm.group_norm_backward(grad_out, x, mean, inv_std, weight, 3)
    x_cast = np.asfortranarray(x.astype(dtype))     # non-contiguous in C order
    grad_cast = np.asfortranarray(grad_out.astype(dtype))
    result = norm.group_norm_backward(grad_cast, x_cast, mean, inv_std, weight, 3)
    assert result[0].dtype == dtype
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, num_groups", [((2, 8, 32, 32), 1), ((3, 6, 64, 47), 2),
                                               ((2, 4, 64, 64), 2), ((1, 3, 97, 89), 3)])
def test_group_norm_backward_over_long_runs_writes_dx_ahead_to_the_same_bits(
        rng, dtype, shape, num_groups):
    # runs of LONG_RUN_BYTES and more (group norm on one image per k) prefetch dx for
    # writing as the reduction sums: the same results as without, bit for bit, and
    # float64's within float32 rounding
    from fastdl.kernels._norm_loops import LONG_RUN_BYTES, normalize_backward_kernel
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    grad_out = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal(shape[1]).astype(dtype)
    run_length = shape[1] // num_groups * int(np.prod(shape[2:]))
    assert run_length * x.itemsize >= LONG_RUN_BYTES
    _, mean, inv_std = norm.group_norm_forward(x, num_groups, weight)
    grad_x, grad_weight, grad_bias = norm.group_norm_backward(grad_out, x, mean, inv_std,
                                                              weight, num_groups)
    view = (1, shape[0] * num_groups, run_length)
    plain_grad_x = np.empty(view, dtype)
    plain_weight, plain_bias = normalize_backward_kernel(
        grad_out.reshape(view), x.reshape(view), weight, num_groups, shape[1] // num_groups,
        mean.ravel(), inv_std.ravel(), True, True, plain_grad_x, None, False)
    assert grad_x.tobytes() == plain_grad_x.tobytes()
    assert grad_weight.tobytes() == plain_weight.astype(dtype).tobytes()
    assert grad_bias.tobytes() == plain_bias.astype(dtype).tobytes()
    expected = norm.group_norm_backward(grad_out.astype(np.float64), x.astype(np.float64),
                                        mean, inv_std, weight.astype(np.float64), num_groups)
    for got, want in zip((grad_x, grad_weight, grad_bias), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_needs_flags_and_missing_weight(rng):
    x = rng.standard_normal((4, 3, 5))
    _, mean, inv_std = norm.batch_norm_forward(x, None, None, None, None, True)
    grad_out = rng.standard_normal(x.shape)
    grad_x, grad_weight, grad_bias = norm.batch_norm_backward(grad_out, x, mean, inv_std, None,
                                                              True)
    assert grad_x is not None and grad_weight is None
    np.testing.assert_allclose(grad_bias, grad_out.sum(axis=(0, 2)), rtol=1e-12)
    grad_x, grad_weight, grad_bias = norm.batch_norm_backward(
        grad_out, x, mean, inv_std, np.ones(3), True, needs_grad_x=False, needs_grad_bias=False)
    assert grad_x is None and grad_bias is None
    x_hat = (x - mean.reshape(1, -1, 1)) * inv_std.reshape(1, -1, 1)
    np.testing.assert_allclose(grad_weight, (grad_out * x_hat).sum(axis=(0, 2)), rtol=1e-12)


# ---------------------------------------------------------------------------
# Thread-count reproducibility (PITFALLS 11)
# ---------------------------------------------------------------------------

def run_all_norms(x, grad_out, weight, bias):
    results = []
    n_channels = x.shape[1]
    forwards = [
        (lambda: norm.batch_norm_forward(x, weight, bias, np.zeros(n_channels),
                                         np.ones(n_channels), True),
         lambda f: norm.batch_norm_backward(grad_out, x, f[1], f[2], weight, True)),
        (lambda: norm.batch_norm_forward(x, weight, bias, np.linspace(-1, 1, n_channels),
                                         np.linspace(0.5, 2, n_channels), False),
         lambda f: norm.batch_norm_backward(grad_out, x, f[1], f[2], weight, False)),
        (lambda: norm.group_norm_forward(x, 4, weight, bias),
         lambda f: norm.group_norm_backward(grad_out, x, f[1], f[2], weight, 4)),
        (lambda: norm.instance_norm_forward(x, None, None, weight, bias),
         lambda f: norm.instance_norm_backward(grad_out, x, f[1], f[2], weight)),
        (lambda: norm.layer_norm_forward(x, x.shape[2:], None, None),
         lambda f: norm.layer_norm_backward(grad_out, x, f[1], f[2], None, x.shape[2:])),
    ]
    for forward, backward in forwards:
        outputs = forward()
        results.extend(outputs)
        results.extend(g for g in backward(outputs) if g is not None)
    return results


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# the second shape: runs longer than one span of the sums (1024), rows than one block;
# the third: group norm's runs of 32 KiB (dx prefetched for writing as they are summed)
@pytest.mark.parametrize("shape", [(6, 8, 33, 17), (3, 8, 40, 41), (2, 8, 64, 64)])
def test_bitwise_identical_at_one_and_two_threads(rng, dtype, shape):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    grad_out = rng.standard_normal(x.shape).astype(dtype)
    weight, bias = rng.standard_normal(8).astype(dtype), rng.standard_normal(8).astype(dtype)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = run_all_norms(x, grad_out, weight, bias)
        numba.set_num_threads(2)
        double = run_all_norms(x, grad_out, weight, bias)
    finally:
        numba.set_num_threads(previous)
    assert len(single) == len(double)
    for one, two in zip(single, double):
        assert one.tobytes() == two.tobytes()


def test_chunks_share_items_evenly():
    from fastdl.kernels._norm_pieces import _chunk_bounds, _grad_chunks
    for n_items in range(1, 300):
        n_chunks = _grad_chunks(n_items)
        bounds = [_chunk_bounds(chunk, n_chunks, n_items) for chunk in range(n_chunks)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n_items
        assert all(stop == first for (_, stop), (first, _) in zip(bounds, bounds[1:]))
        sizes = [stop - first for first, stop in bounds]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
# channels and rows that are not a multiple of the 64 chunks (each chunk two or three),
# on short runs (walked in memory order) and long ones
@pytest.mark.parametrize("shape", [(3, 150, 4, 4), (2, 100, 17, 17)])
def test_uneven_chunks_same_bits_at_any_thread_count_and_right(rng, shape):
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    grad_out = rng.standard_normal(shape).astype(np.float32)
    channels = shape[1]
    weight = rng.standard_normal(channels).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)

    def run():
        y, mean, inv_std = norm.batch_norm_forward(x, weight, bias, None, None, True)
        rows = x.reshape(-1, shape[-1])
        row_weight = weight[:shape[-1]]
        rows_y, rows_mean, rows_inv = norm.layer_norm_forward(rows, shape[-1], row_weight)
        return ([y] + list(norm.batch_norm_backward(grad_out, x, mean, inv_std, weight, True))
                + [rows_y] + list(norm.layer_norm_backward(grad_out.reshape(rows.shape), rows,
                                                           rows_mean, rows_inv, row_weight,
                                                           shape[-1])))
    previous = numba.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append(run())
    finally:
        numba.set_num_threads(previous)
    for other in results[1:]:
        assert all(a.tobytes() == b.tobytes() for a, b in zip(results[0], other))
    expected = batch_norm_reference(x.astype(np.float64), weight, bias, EPS)
    np.testing.assert_allclose(results[0][0], expected, **tolerance(np.float32))


# ---------------------------------------------------------------------------
# torch as an extra oracle
# ---------------------------------------------------------------------------

def test_norms_match_torch(rng):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x = rng.standard_normal((4, 6, 5, 3)) * 2 + 1
    weight, bias = rng.standard_normal(6), rng.standard_normal(6)
    grad_out = rng.standard_normal(x.shape)
    cases = [
        (lambda t, w, b: functional.batch_norm(t, None, None, w, b, True),
         lambda: norm.batch_norm_forward(x, weight, bias, None, None, True),
         lambda f: norm.batch_norm_backward(grad_out, x, f[1], f[2], weight, True)),
        (lambda t, w, b: functional.group_norm(t, 3, w, b),
         lambda: norm.group_norm_forward(x, 3, weight, bias),
         lambda f: norm.group_norm_backward(grad_out, x, f[1], f[2], weight, 3)),
        (lambda t, w, b: functional.instance_norm(t, weight=w, bias=b),
         lambda: norm.instance_norm_forward(x, None, None, weight, bias),
         lambda f: norm.instance_norm_backward(grad_out, x, f[1], f[2], weight)),
    ]
    for torch_op, forward, backward in cases:
        tensors = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias)]
        out = torch_op(*tensors)
        out.backward(torch.tensor(grad_out))
        result = forward()
        np.testing.assert_allclose(result[0], out.detach().numpy(), rtol=1e-10, atol=1e-10)
        for ours, tensor in zip(backward(result), tensors):
            np.testing.assert_allclose(ours, tensor.grad.numpy(), rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    x = np.zeros((2, 6, 4, 4))
    with pytest.raises(ValueError, match=r"num_channels \(6\) must be divisible by "
                                         r"num_groups \(4\)"):
        norm.group_norm_forward(x, 4)
    with pytest.raises(ValueError, match="divisible"):
        norm.group_norm_forward(x, 0)
    with pytest.raises(TypeError, match="num_groups must be an int"):
        norm.group_norm_forward(x, 2.0)
    with pytest.raises(ValueError, match=r"weight must have shape \(6,\), got \(5,\)"):
        norm.batch_norm_forward(x, np.ones(5), None, None, None, True)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        norm.group_norm_forward(x, 2, None, np.ones((6, 1)))
    with pytest.raises(ValueError, match=r"running_var must have shape \(6,\), got \(3,\)"):
        norm.batch_norm_forward(x, None, None, np.zeros(6), np.ones(3), True)
    with pytest.raises(ValueError, match="required when not training"):
        norm.batch_norm_forward(x, None, None, None, None, False)
    with pytest.raises(ValueError, match=r"batch_norm: input must be \(N, C\[, \*spatial\]\), "
                                         r"got shape \(5,\)"):
        norm.batch_norm_forward(np.zeros(5), None, None, None, None, True)
    with pytest.raises(ValueError, match=r"instance_norm: input must be \(N, C, \*spatial\)"):
        norm.instance_norm_forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="does not end with normalized_shape"):
        norm.layer_norm_forward(x, (3, 4))
    with pytest.raises(ValueError, match=r"weight must have shape \(4, 4\)"):
        norm.layer_norm_forward(x, (4, 4), np.ones(4))
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        norm.layer_norm_forward(np.zeros((2, 4), dtype=np.int64), 4)
    with pytest.raises(ValueError, match="no elements"):
        norm.layer_norm_forward(np.zeros((2, 0), np.float32), 0)
    with pytest.raises(ValueError, match="no elements"):
        norm.layer_norm_backward(np.zeros((2, 0)), np.zeros((2, 0)), np.zeros(2), np.ones(2),
                                 None, 0)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        norm.group_norm_forward([[1.0, 2.0]], 1)
    with pytest.raises(ValueError, match="grad_out has shape"):
        norm.batch_norm_backward(np.zeros((2, 6)), x, np.zeros(6), np.ones(6), None, True)
    with pytest.raises(ValueError, match="inv_std has 3 values, expected 6"):
        norm.batch_norm_backward(x, x, np.zeros(6), np.ones(3), None, True)


def test_kernels_do_not_modify_inputs(rng):
    x = rng.standard_normal((3, 4, 5))
    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    saved = [a.copy() for a in (x, weight, bias)]
    _, mean, inv_std = norm.group_norm_forward(x, 2, weight, bias)
    grad_out = rng.standard_normal(x.shape)
    saved_grad = grad_out.copy()
    norm.group_norm_backward(grad_out, x, mean, inv_std, weight, 2)
    for array, copy in zip((x, weight, bias, grad_out), saved + [saved_grad]):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("for_write", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_prefetch_leaves_arrays_as_they_are(dtype, for_write):
    """The norms' prefetches (for reading and for writing) compile for any 1-D
    contiguous array (every line, the partial last one too) and change nothing;
    uncompiled they do nothing."""
    import numba
    from fastdl.kernels._prefetch import prefetch, prefetch_for_write
    request = prefetch_for_write if for_write else prefetch

    @numba.njit
    def touch(rows):
        for row in range(rows.shape[0]):
            request(rows[row])
        request(rows[0, :0])
        return rows.sum()

    rows = np.arange(3 * 37, dtype=dtype).reshape(3, 37)
    before = rows.copy()
    assert touch(rows) == before.sum()
    np.testing.assert_array_equal(rows, before)
    assert request(rows[0]) is None


# ---------------------------------------------------------------------------
# Per-channel affine epilogue (eval batch norm after a conv)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7, 1, 1), (3, 20, 900), (5, 4)])
@pytest.mark.parametrize("residual,slope", [(False, None), (True, None), (True, 0.0),
                                            (False, 0.1)])
def test_channel_affine_matches_numpy(rng, dtype, shape, residual, slope):
    x = rng.standard_normal(shape).astype(dtype)
    scale, shift = rng.standard_normal((2, shape[1]))
    extra = rng.standard_normal(shape).astype(dtype) if residual else None
    axes = (1, -1) + (1,) * (len(shape) - 2)
    expected = (x.astype(np.float64) * scale.astype(dtype).reshape(axes)
                + shift.astype(dtype).reshape(axes) + (0 if extra is None else extra))
    if slope is not None:
        expected = np.where(expected > 0, expected, slope * expected)
    out = x.copy()
    assert norm.channel_affine_(out, scale, shift, extra, slope) is out
    np.testing.assert_allclose(out, expected, **tolerance(dtype))


def test_channel_affine_refuses_bad_arguments(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="scale and shift"):
        norm.channel_affine_(x, np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="residual"):
        norm.channel_affine_(x, np.ones(3), np.zeros(3), np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        norm.channel_affine_(x[:, :, ::2], np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="float32/float64"):
        norm.channel_affine_(x.astype(np.int32), np.ones(3), np.zeros(3))
