"""Winograd F(2×2, 3×3) convolution against the SciPy reference and finite differences.

``MIN_CHANNELS`` is lowered so that small, fast shapes exercise the Winograd loops
directly; one test keeps the real threshold and goes through the public kernels.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastdl.kernels import conv, direct, winograd
from reference import conv2d_reference, finite_difference_vjp

# (N, C_in, H, W, C_out, padding): odd and even sizes, batch 1, padding 0..3,
# maps smaller than one tile row, outputs of one row or column; the last three have
# tile rows of 8 tiles or more, which the transforms take eight at a time on vectors
# (16 tiles: two whole groups; 10 and 14: a group and single tiles, odd widths).
CASES = [
    (2, 3, 7, 9, 5, 1),
    (1, 4, 8, 8, 6, 0),
    (3, 5, 6, 5, 2, 2),
    (1, 2, 3, 3, 3, 0),
    (2, 3, 4, 6, 3, 3),
    (1, 2, 3, 11, 4, 0),
    (2, 1, 13, 10, 1, 1),
    (2, 3, 17, 19, 5, 1),
    (1, 2, 10, 34, 3, 0),
    (1, 3, 9, 25, 4, 2),
]
THREADS = [1, 2, 3]


@pytest.fixture
def small_channels(monkeypatch):
    # the direct loop takes few-channel convs first where it applies: off here
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(direct, "MAX_OUT_CHANNELS", 0)
    monkeypatch.setattr(direct, "MIN_WINOGRAD_TILES", 0)


def _arrays(case, dtype, rng):
    n, c_in, h, w, c_out, padding = case
    x = rng.normal(size=(n, c_in, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c_in, 3, 3)).astype(dtype)
    out_shape = (n, c_out, h + 2 * padding - 2, w + 2 * padding - 2)
    return x, weight, (padding, padding), out_shape


def _reference(x, weight, padding, bias=None):
    return conv2d_reference(x, weight, bias, (1, 1), padding, (1, 1), 1)


def test_applies_only_to_3x3_stride_1_single_group_with_enough_channels():
    c = winograd.MIN_CHANNELS
    assert winograd.applies((c, c, 3, 3), (1, 1), (1, 1), 1)
    assert not winograd.applies((c, c, 3, 3), (2, 2), (1, 1), 1)
    assert not winograd.applies((c, c, 3, 3), (1, 1), (2, 2), 1)
    assert not winograd.applies((2 * c, c, 3, 3), (1, 1), (1, 1), 2)
    assert not winograd.applies((c, c, 5, 5), (1, 1), (1, 1), 1)
    assert not winograd.applies((c, c, 3, 1), (1, 1), (1, 1), 1)
    assert not winograd.applies((c, c - 1, 3, 3), (1, 1), (1, 1), 1)
    assert not winograd.applies((c - 1, c, 3, 3), (1, 1), (1, 1), 1)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_forward_matches_scipy(case, threads, dtype, rtol, rng):
    x, weight, padding, out_shape = _arrays(case, dtype, rng)
    out = np.full(out_shape, np.nan, dtype=dtype)
    winograd.forward(x, weight, out, padding, threads)
    expected = _reference(x, weight, padding)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("slope", [None, 0.0, 0.1])
@pytest.mark.parametrize("case", [(2, 3, 9, 7, 4, 1), (2, 3, 8, 33, 4, 1)])
def test_fused_epilogue_matches_unfused(case, threads, slope, rng):
    x, weight, padding, out_shape = _arrays(case, np.float64, rng)
    bias = rng.normal(size=out_shape[1])
    residual = rng.normal(size=out_shape)
    out = np.empty(out_shape)
    winograd.forward(x, weight, out, padding, threads, bias, residual, slope)
    expected = _reference(x, weight, padding, bias) + residual
    if slope is not None:
        expected = np.where(expected > 0, expected, slope * expected)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_backward_is_the_adjoint_of_scipy_forward(case, threads, dtype, rtol, rng):
    """<conv(x, w), g> = <x, grad_input(g)> = <w, grad_weight(x, g)> with SciPy's conv."""
    x, weight, padding, out_shape = _arrays(case, dtype, rng)
    forward = _reference(x, weight, padding)
    grad_out = rng.normal(size=out_shape).astype(dtype)
    grad_input = winograd.grad_input(grad_out, weight, np.zeros_like(x), padding, threads)
    grad_weight = winograd.grad_weight(x, grad_out, weight.shape, padding, threads)
    inner = np.sum(forward * grad_out)
    scale = np.sum(np.abs(forward * grad_out))
    assert grad_input.dtype == grad_weight.dtype == dtype
    assert abs(np.sum(x.astype(np.float64) * grad_input) - inner) <= rtol * scale
    assert abs(np.sum(weight.astype(np.float64) * grad_weight) - inner) <= rtol * scale


@pytest.mark.parametrize("case", CASES[:5])
def test_backward_matches_finite_differences(case, rng):
    x, weight, padding, out_shape = _arrays(case, np.float64, rng)
    grad_out = rng.normal(size=out_shape)

    def forward(x_, w_):
        return _reference(x_, w_, padding)
    np.testing.assert_allclose(
        winograd.grad_input(grad_out, weight, np.zeros_like(x), padding, 2),
        finite_difference_vjp(forward, [x, weight], grad_out, 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        winograd.grad_weight(x, grad_out, weight.shape, padding, 2),
        finite_difference_vjp(forward, [x, weight], grad_out, 1), rtol=1e-6, atol=1e-7)


# padding 0-2: grad_input runs as Winograd's forward of the flipped weights; 3 crops
# and takes the input-gradient loop
@pytest.mark.parametrize("padding", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_public_kernels_take_winograd_above_the_threshold(dtype, rtol, padding, rng):
    """Above both real thresholds the public kernels dispatch here and agree with SciPy."""
    c = max(winograd.MIN_CHANNELS, direct.MAX_OUT_CHANNELS + 1)
    x = rng.normal(size=(2, c, 18, 16)).astype(dtype)   # enough tiles for Winograd
    weight = rng.normal(size=(c + 1, c, 3, 3)).astype(dtype)
    bias = rng.normal(size=c + 1).astype(dtype)
    assert winograd.applies(weight.shape, (1, 1), (1, 1), 1)
    assert not direct.applies(weight.shape, (1, 1), (1, 1), 1, x.shape, (padding, padding))
    assert not direct.applies((c, c + 1, 3, 3), (1, 1), (1, 1), 1)   # grad_input's
    expected = _reference(x, weight, (padding, padding), bias)
    out = conv.conv2d_forward(x, weight, bias, 1, padding)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    grad_out = rng.normal(size=out.shape).astype(dtype)
    inner = np.sum((expected - bias.reshape(1, -1, 1, 1)) * grad_out)
    scale = np.sum(np.abs(expected * grad_out))
    grad_input = conv.conv2d_grad_input(grad_out, weight, x.shape, 1, padding)
    grad_weight = conv.conv2d_grad_weight(x, grad_out, weight.shape, 1, padding)
    assert abs(np.sum(x.astype(np.float64) * grad_input) - inner) <= rtol * scale
    assert abs(np.sum(weight.astype(np.float64) * grad_weight) - inner) <= rtol * scale


def test_transposed_conv_through_winograd_is_the_adjoint(small_channels, rng):
    x = rng.normal(size=(2, 3, 6, 5))
    weight = rng.normal(size=(3, 4, 3, 3))          # (C_in, C_out, k, k) for transposed
    out = conv.conv_transpose2d_forward(x, weight, None, 1, 1)
    probe = rng.normal(size=out.shape)
    # conv_transpose is conv2d's adjoint: <T(x), p> = <x, conv2d(p, weight)>.
    adjoint = _reference(probe, weight, (1, 1))
    assert np.isclose(np.sum(out * probe), np.sum(x * adjoint), rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), c_in=st.integers(1, 4), c_out=st.integers(1, 4),
       h=st.integers(1, 12), w=st.integers(1, 12), padding=st.integers(0, 3),
       threads=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_property_random_shapes(n, c_in, c_out, h, w, padding, threads, seed):
    if min(h, w) + 2 * padding < 3:
        return
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c_in, h, w))
    weight = rng.normal(size=(c_out, c_in, 3, 3))
    pads = (padding, padding)
    expected = _reference(x, weight, pads)
    out = np.empty_like(expected)
    winograd.forward(x, weight, out, pads, threads)
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)
    grad_out = rng.normal(size=out.shape)
    grad_input = winograd.grad_input(grad_out, weight, np.zeros_like(x), pads, threads)
    grad_weight = winograd.grad_weight(x, grad_out, weight.shape, pads, threads)
    inner = np.sum(expected * grad_out)
    assert np.isclose(np.sum(x * grad_input), inner, rtol=1e-9, atol=1e-9)
    assert np.isclose(np.sum(weight * grad_weight), inner, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transformed_weights_are_g_w_gt_at_any_thread_count(dtype, rng, monkeypatch):
    monkeypatch.setattr(winograd, "_THREADED_FILTERS", 1)   # threads for small weights too
    weight = rng.normal(size=(37, 19, 3, 3)).astype(dtype)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    expected = np.einsum("ai,ocij,bj->aboc", g, weight.astype(np.float64), g).reshape(16, -1)
    one = winograd.transform_weight(weight, 1)
    assert one.dtype == dtype and one.shape[0] == 16
    np.testing.assert_allclose(one[:, :37 * 19], expected,
                               rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6)
    assert not one[:, 37 * 19:].any()      # the padding between planes stays zero
    for threads in (2, 3, 64):
        np.testing.assert_array_equal(winograd.transform_weight(weight, threads), one)


@pytest.mark.parametrize("flipped", [False, True])
def test_transform_writes_every_value_of_memory_it_was_not_given_zeroed(flipped, rng,
                                                                         monkeypatch):
    """The transformed weights are not zeroed first: every matrix value is written and
    the gaps between the planes zeroed, whatever the memory held."""
    def dirty_empty(shape, dtype=float):
        return np.full(shape, np.nan, dtype=dtype)
    monkeypatch.setattr(winograd.np, "empty", dirty_empty)
    weight = rng.normal(size=(21, 13, 3, 3)).astype(np.float32)
    u = winograd.transform_weight(weight, 2, flipped)
    assert not np.isnan(u).any()
    assert not u[:, 21 * 13:].any()
    monkeypatch.undo()
    np.testing.assert_array_equal(u, winograd.transform_weight(weight, 2, flipped))


@pytest.mark.parametrize("threads, parts", [(1, 1), (2, 2), (2, 3), (1, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_parts_are_written_not_added_to(threads, parts, dtype, rng):
    """Each thread's first block writes its part of the weight gradient and parts that
    took no block (more parts than threads, or than blocks) come back zero: the parts
    are not zeroed first, whatever the memory held."""
    from fastdl_ext import winograd as compiled
    n, c_in, c_out, size = 3, 5, 7, 6
    x = rng.normal(size=(n, c_in, size, size)).astype(dtype)
    grad_out = rng.normal(size=(n, c_out, size, size)).astype(dtype)
    # the weight gradient by NumPy's windows: sum over images and positions of g * x
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    expected = np.einsum("nchwij,nohw->ocij", windows, grad_out.astype(np.float64))
    for rows in (1, 100):   # several blocks a thread; one block in all
        partial = np.full((parts, 16, c_out * c_in + 16), np.nan, dtype)
        compiled.winograd_grad_weight_into(x, grad_out, partial, (1, 1), rows, threads)
        assert not np.isnan(partial[:, :, :c_out * c_in]).any()
        partial[:, :, c_out * c_in:] = 0
        grad_w = np.empty((c_out, c_in, 3, 3), dtype)
        compiled.weight_from_transformed_into(partial, grad_w)
        tolerance = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(grad_w, expected, rtol=tolerance,
                                   atol=tolerance * np.abs(expected).max())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_weights_beyond_l2_take_blocks_of_many_tiles(threads, dtype, rtol, rng):
    """128 -> 144 channels: the transformed weights exceed ``_BLOCK_BYTES``, so a block
    takes at least ``_MIN_STREAMED_TILES`` tiles (by L2 alone it would take fewer), and
    the three loops still match SciPy."""
    n, c_in, c_out, size = 16, 128, 144, 8
    itemsize = np.dtype(dtype).itemsize
    assert 16 * c_in * c_out * itemsize > winograd._BLOCK_BYTES
    assert winograd._BLOCK_BYTES // (16 * (c_in + c_out) * itemsize) < \
        winograd._MIN_STREAMED_TILES
    rows = winograd._rows_per_block(n, size, size, c_in, c_out, itemsize, threads)
    assert rows * size // 2 >= winograd._MIN_STREAMED_TILES
    x = rng.normal(size=(n, c_in, size, size)).astype(dtype)
    weight = (rng.normal(size=(c_out, c_in, 3, 3)) / 30).astype(dtype)
    # NumPy's windows and one contraction: SciPy's per-channel-pair loop takes ~10 s here
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    expected = np.einsum("nchwij,ocij->nohw", windows, weight.astype(np.float64),
                         optimize=True)
    out = np.empty(expected.shape, dtype=dtype)
    winograd.forward(x, weight, out, (1, 1), threads)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    grad_out = rng.normal(size=out.shape).astype(dtype)
    inner = np.sum(expected * grad_out)
    scale = np.sum(np.abs(expected * grad_out))
    grad_input = winograd.grad_input(grad_out, weight, np.zeros_like(x), (1, 1), threads)
    grad_weight = winograd.grad_weight(x, grad_out, weight.shape, (1, 1), threads)
    assert abs(np.sum(x.astype(np.float64) * grad_input) - inner) <= rtol * scale
    assert abs(np.sum(weight.astype(np.float64) * grad_weight) - inner) <= rtol * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_from_transformed_is_gt_d_g_of_the_summed_parts(dtype, rng):
    """The weight gradient's last step, over 3 parts and 13 x 11 filters (not a whole
    number of the loop's steps), against NumPy and bitwise at 1-3 threads."""
    c_out, c_in = 13, 11
    partial = winograd._planes((3,), c_out, c_in, dtype)
    partial[:, :, :c_out * c_in] = rng.normal(size=(3, 16, c_out * c_in))
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    summed = partial.astype(np.float64).sum(axis=0)[:, :c_out * c_in].reshape(4, 4, c_out, c_in)
    expected = np.einsum("ai,aboc,bj->ocij", g, summed, g)
    results = []
    for threads in (1, 2, 3):
        weight = np.full((c_out, c_in, 3, 3), np.nan, dtype=dtype)
        winograd._ext.weight_from_transformed_into(partial, weight, threads)
        results.append(weight)
    np.testing.assert_allclose(results[0], expected,
                               rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-5)
    for weight in results[1:]:
        np.testing.assert_array_equal(weight, results[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flipped_transform_reads_the_turned_swapped_filters(dtype, rng, monkeypatch):
    """``flipped`` equals the transform of a flipped, channel-swapped copy, bit for bit,
    and so the input gradient through it equals Winograd's forward of that copy."""
    monkeypatch.setattr(winograd, "_THREADED_FILTERS", 1)
    weight = rng.normal(size=(24, 17, 3, 3)).astype(dtype)
    copy = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(winograd.transform_weight(weight, threads, True),
                                      winograd.transform_weight(copy, 1))
    grad_out = rng.normal(size=(2, 24, 8, 10)).astype(dtype)
    by_copy = winograd.forward_runner(grad_out.shape, copy, None, (1, 1), 2)(grad_out)
    flipped = winograd.forward_runner(grad_out.shape, weight, None, (1, 1), 2,
                                      flipped=True)(grad_out)
    np.testing.assert_array_equal(flipped, by_copy)
    x_shape = (2, 17, 8, 10)
    expected = conv2d_reference(grad_out, copy, None, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(flipped, expected, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-4 * np.abs(expected).max())
    assert flipped.shape == x_shape


@pytest.mark.parametrize("case", CASES[::2])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("slope", [None, 0.1])
@pytest.mark.parametrize("packed", [False, True])
def test_one_shared_block_equals_the_blocks_bitwise(case, dtype, rtol, slope, packed, rng):
    """``winograd_forward_shared_into`` (the threads share one block's steps) gives the
    blocked loop's bits at 1-3 threads, with its epilogue, by OpenBLAS's GEMM or by the
    register tiles (``packed``), and matches SciPy."""
    x, weight, padding, out_shape = _arrays(case, dtype, rng)
    bias = rng.normal(size=out_shape[1]).astype(dtype)
    residual = rng.normal(size=out_shape).astype(dtype)
    u = winograd.transform_weight(weight, packed=packed)
    blocked = np.empty(out_shape, dtype=dtype)
    winograd._ext.winograd_forward_into(x, u, blocked, padding, 1, 2, packed, bias, residual,
                                        slope is not None, slope or 0.0)
    for threads in (1, 2, 3):
        shared = np.full(out_shape, np.nan, dtype=dtype)
        winograd._ext.winograd_forward_shared_into(x, u, shared, padding, threads, packed,
                                                   bias, residual, slope is not None,
                                                   slope or 0.0)
        np.testing.assert_array_equal(shared, blocked)
    expected = _reference(x, weight, padding, bias) + residual
    if slope is not None:
        expected = np.where(expected > 0, expected, slope * expected)
    np.testing.assert_allclose(blocked, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_large_weights_on_few_tiles_share_one_block(rng):
    """The runner takes the shared block where the transformed weights pass
    ``_SHARED_WEIGHT_BYTES`` on at most ``_MAX_SHARED_TILES`` tiles, and its output is
    the SciPy conv's."""
    c_in, c_out = 160, 416                      # 16 * 160 * 416 * 4 bytes > 4 MiB
    assert winograd._shares_one_block(2, 6, 6, c_in, c_out, 4)
    assert not winograd._shares_one_block(2, 6, 6, 128, 128, 4)
    assert not winograd._shares_one_block(64, 6, 6, c_in, c_out, 4)
    x = rng.normal(size=(2, c_in, 6, 6)).astype(np.float32)
    weight = (rng.normal(size=(c_out, c_in, 3, 3)) / 40).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    expected = np.einsum("nchwij,ocij->nohw", windows, weight.astype(np.float64),
                         optimize=True)
    out = winograd.forward_runner(x.shape, weight, None, (1, 1), 2)(x)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("flipped", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_into_panels_lays_out_what_pack_would(flipped, dtype, rng):
    from fastdl.kernels import pointwise
    weight = rng.normal(size=(13, 6, 3, 3)).astype(dtype)
    plain = winograd.transform_weight(weight, 2, flipped)
    packed = winograd.transform_weight(weight, 2, flipped, packed=True)
    rows, depth = (6, 13) if flipped else (13, 6)
    size = winograd._ext.packed_size(rows, depth)
    assert size == -(-rows // 8) * 8 * depth   # panels of 8 rows, the last one's tail zero
    for xi in range(16):
        matrix = plain[xi, :rows * depth].reshape(rows, depth, 1, 1)
        np.testing.assert_array_equal(packed[xi, :size], pointwise.pack(matrix).ravel())
    with pytest.raises(ValueError, match="packed u must be"):
        winograd._ext.transform_weight_into(weight, plain[:, :size - 1], 1, flipped, True)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_forward_by_panels_matches_the_reference_at_any_thread_count(dtype, rtol, rng):
    """The blocks' 16 products by the register tiles on packed weights (odd channel
    counts: a last panel of zero rows; tiles that end in part of a vector)."""
    x = rng.normal(size=(3, 11, 9, 7)).astype(dtype)
    weight = rng.normal(size=(13, 11, 3, 3)).astype(dtype)
    bias = rng.normal(size=13).astype(dtype)
    padding = (1, 1)
    out_shape = (3, 13, 9, 7)
    residual = rng.normal(size=out_shape).astype(dtype)
    expected = _reference(x, weight, padding, bias) + residual
    expected = np.where(expected > 0, expected, 0.1 * expected)
    u = winograd.transform_weight(weight, 1, packed=True)
    results = []
    for rows, threads in ((1, 1), (2, 2), (5, 3)):
        out = np.full(out_shape, np.nan, dtype=dtype)
        winograd._ext.winograd_forward_into(x, u, out, padding, rows, threads, True, bias,
                                            residual, True, 0.1)
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
        results.append(out)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    with pytest.raises(ValueError, match="winograd_forward_into: packed u must be"):
        winograd._ext.winograd_forward_into(x, np.ascontiguousarray(u[:, :100]), out, padding,
                                            1, 1, True)
    with pytest.raises(ValueError, match="winograd_forward_shared_into: packed u must be"):
        winograd._ext.winograd_forward_shared_into(x, np.ascontiguousarray(u[:, :100]), out,
                                                   padding, 1, True)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), c_in=st.integers(1, 20), c_out=st.integers(1, 20),
       h=st.integers(2, 12), w=st.integers(2, 12), padding=st.integers(0, 1),
       rows=st.integers(1, 4), threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_property_forward_by_panels_matches_the_reference(n, c_in, c_out, h, w, padding,
                                                          rows, threads, seed):
    """Random shapes, block sizes and thread counts: the packed forward against SciPy's
    reference, and bitwise the same as one thread with one row a block."""
    if h + 2 * padding < 3 or w + 2 * padding < 3:
        return
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c_in, h, w)).astype(np.float32)
    weight = rng.normal(size=(c_out, c_in, 3, 3)).astype(np.float32)
    pads = (padding, padding)
    expected = _reference(x.astype(np.float64), weight.astype(np.float64), pads)
    u = winograd.transform_weight(weight, 1, packed=True)
    out, single = (np.full(expected.shape, np.nan, np.float32) for _ in range(2))
    winograd._ext.winograd_forward_into(x, u, out, pads, rows, threads, True)
    winograd._ext.winograd_forward_into(x, u, single, pads, 1, 1, True)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_array_equal(out, single)
