"""Direct convolution (few output channels) against the SciPy reference.

The same cases also run with the direct path switched off, so im2col + GEMM's
forward keeps its coverage for the shapes the direct loop now takes.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastdl.kernels import conv, dense, direct
from fastdl_ext.pool import global_mean_into
from reference import conv2d_reference, from_stored_layout, stored_layout

# (N, C_in, H, W, C_out, kH, kW, padding): C_out not a multiple of the channel
# block, one output channel, rows shorter and longer than a register block,
# non-square kernels and padding, batch 1, LeNet-5's two shapes; output rows of
# 8, 16 and 24 (whole vectors: the dense grid, no dropped columns).
CASES = [
    (2, 1, 28, 28, 6, 5, 5, (2, 2)),
    (3, 6, 14, 14, 16, 5, 5, (0, 0)),
    (1, 3, 7, 9, 5, 3, 3, (1, 1)),
    (2, 2, 5, 23, 1, 3, 2, (0, 1)),
    (1, 4, 17, 3, 7, 2, 3, (2, 0)),
    (2, 3, 4, 4, 3, 4, 4, (3, 3)),
    (1, 2, 1, 40, 9, 1, 5, (0, 2)),
    (1, 3, 8, 8, 5, 3, 3, (1, 1)),
    (2, 2, 6, 16, 7, 3, 3, (1, 1)),
    (1, 2, 5, 26, 4, 3, 3, (0, 0)),
]


def _arrays(case, dtype, rng):
    n, c_in, h, w, c_out, kh, kw, padding = case
    x = rng.normal(size=(n, c_in, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c_in, kh, kw)).astype(dtype)
    return x, weight, padding


def test_applies_to_few_output_channels_single_group_any_stride():
    c = direct.MAX_OUT_CHANNELS
    assert direct.applies((c, 3, 5, 5), (1, 1), (1, 1), 1)
    assert not direct.applies((c + 1, 3, 5, 5), (1, 1), (1, 1), 1)
    assert direct.applies((c, 3, 5, 5), (2, 2), (1, 1), 1)
    assert direct.applies((c, 3, 3, 3), (1, 4), (1, 1), 1)     # unread phases stay zero
    assert direct.applies((c, 3, 1, 1), (2, 2), (1, 1), 1)     # strided shortcut
    # strided: any channel count (im2col is the only other path)
    assert direct.applies((128, 64, 3, 3), (2, 2), (1, 1), 1, (32, 64, 16, 16), (1, 1))
    assert not direct.applies((c, 3, 5, 5), (1, 1), (2, 2), 1)
    assert not direct.applies((c, 2, 5, 5), (1, 1), (1, 1), 2)
    assert not direct.applies((c, 3, 1, 1), (1, 1), (1, 1), 1)
    assert not direct.applies((c, 64, 3, 3), (1, 1), (1, 1), 1)   # taps beyond L1
    assert direct.applies((c, 1, 5, 5), (1, 1), (1, 1), 1, (8, 1, 28, 28), (2, 2))
    assert not direct.applies((c, 1, 5, 5), (1, 1), (1, 1), 1, (1, 1, 512, 512), (2, 2))


def test_packed_weight_layout(rng):
    weight = rng.normal(size=(6, 2, 3, 3))
    packed = direct.pack_weight(weight, 4)
    assert packed.shape == (2, 18, 4)
    flat = weight.reshape(6, -1)
    np.testing.assert_array_equal(packed[1, :, 1], flat[4 + 1])
    np.testing.assert_array_equal(packed[1, :, 2:], 0.0)   # channels 6 and 7 do not exist
    packed = direct.pack_weight(weight, 6)
    assert packed.shape == (1, 18, 6)
    np.testing.assert_array_equal(packed[0].T, flat)


def test_block_shape_wastes_least():
    assert direct.block_channels(16, 140) == 4      # LeNet-5's second conv
    assert direct.block_channels(6, 28 * 32) == 6   # its first
    assert direct.block_channels(3, 32 * 34) == 3   # an RGB conv's input gradient
    assert direct.block_channels(32, 32 * 34) == 4


@pytest.mark.parametrize("co_block", [channels for channels, _ in direct.BLOCK_SHAPES])
@pytest.mark.parametrize("c_out", [1, 3, 5, 6, 7, 13])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_every_register_block_shape_matches_scipy(co_block, c_out, dtype, rtol, rng,
                                                  monkeypatch):
    monkeypatch.setattr(direct, "block_channels", lambda out_channels, grid: co_block)
    x, weight, padding = _arrays((2, 3, 9, 11, c_out, 3, 4, (1, 2)), dtype, rng)
    bias = rng.normal(size=c_out).astype(dtype)
    out = conv.conv2d_forward(x, weight, bias, padding=padding)
    expected = conv2d_reference(x, weight, padding=padding) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_the_compiled_forward_refuses_packed_weights_it_cannot_read(rng):
    from fastdl_ext import direct as compiled
    x = np.zeros((1, 2, 6, 6), np.float32)
    out = np.zeros((1, 5, 4, 4), np.float32)
    weight = rng.normal(size=(5, 2, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="blocks of 5 channels"):
        compiled.direct_forward_into(x, weight.reshape(1, 18, 5), out, 3, 3, (0, 0), (1, 1),
                                     1)
    with pytest.raises(ValueError, match="do not cover 5 channels"):
        compiled.direct_forward_into(x, direct.pack_weight(weight[:4], 4), out, 3, 3, (0, 0),
                                     (1, 1), 1)
    with pytest.raises(ValueError, match="not the conv's output"):   # stride 2 gives 2x2
        compiled.direct_forward_into(x, direct.pack_weight(weight, 4), out, 3, 3, (0, 0),
                                     (2, 2), 1)


@pytest.mark.parametrize("use_direct", [True, False])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_forward_matches_scipy(case, dtype, rtol, use_direct, rng, monkeypatch):
    if not use_direct:
        monkeypatch.setattr(direct, "MAX_OUT_CHANNELS", 0)
        monkeypatch.setattr(direct, "MIN_WINOGRAD_TILES", 0)
    x, weight, padding = _arrays(case, dtype, rng)
    out = conv.conv2d_forward(x, weight, padding=padding)
    expected = conv2d_reference(x, weight, padding=padding)
    assert out.dtype == dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("slope", [None, 0.0, 0.1])
def test_fused_epilogue_matches_unfused(slope, rng):
    x, weight, padding = _arrays(CASES[2], np.float64, rng)
    expected = conv2d_reference(x, weight, padding=padding)
    bias = rng.normal(size=weight.shape[0])
    residual = rng.normal(size=expected.shape)
    out = conv.conv2d_forward(x, weight, bias, padding=padding, residual=residual,
                              negative_slope=slope)
    expected = expected + bias.reshape(1, -1, 1, 1) + residual
    if slope is not None:
        expected = np.where(expected > 0, expected, slope * expected)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_thread_count_does_not_change_the_result(threads, rng):
    x, weight, padding = _arrays((7, 3, 12, 10, 6, 3, 3, (1, 1)), np.float32, rng)
    serial = direct.forward_runner(x.shape, weight, None, padding, 1)(x)
    parallel = direct.forward_runner(x.shape, weight, None, padding, threads)(x)
    np.testing.assert_array_equal(parallel, serial)


@pytest.mark.parametrize("n, threads", [(1, 2), (1, 3), (2, 5), (3, 4)])
@pytest.mark.parametrize("padding", [(1, 1), (0, 2)])
@pytest.mark.parametrize("width", [11, 14, 16])     # output rows of 16: the dense grid
def test_row_bands_of_small_batches_match_one_thread(n, threads, padding, width, rng):
    """A batch smaller than the team is shared in row bands (overlapping register
    blocks at their edges): bitwise the one-thread answer, epilogue included."""
    x = rng.normal(size=(n, 5, 13, width)).astype(np.float32)
    weight = rng.normal(size=(8, 5, 3, 3)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    serial = direct.forward_runner(x.shape, weight, bias, padding, 1, 0.0)
    parallel = direct.forward_runner(x.shape, weight, bias, padding, threads, 0.0)
    residual = rng.normal(size=serial(x).shape).astype(np.float32)
    expected = np.maximum(conv2d_reference(x, weight, bias, padding=padding) + residual, 0)
    np.testing.assert_allclose(serial(x, None, residual), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(parallel(x, None, residual), serial(x, None, residual))


def test_empty_batch(rng):
    weight = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    out = conv.conv2d_forward(np.zeros((0, 2, 8, 8), np.float32), weight, padding=1)
    assert out.shape == (0, 4, 8, 8)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("kernel, padding", [(3, 1), (5, 2), (3, 0)])
def test_grad_input_is_the_adjoint_of_the_forward(kernel, padding, dtype, rtol, rng,
                                                  monkeypatch):
    """<conv(x), g> = <x, grad_input(g)>, through the direct loop for "same" convs
    (flipped weights) and through im2col otherwise; both paths agree."""
    x = rng.normal(size=(2, 3, 7, 9)).astype(dtype)
    weight = rng.normal(size=(5, 3, kernel, kernel)).astype(dtype)
    expected = conv2d_reference(x, weight, padding=(padding, padding))
    grad_out = rng.normal(size=expected.shape).astype(dtype)
    grad_input = conv.conv2d_grad_input(grad_out, weight, x.shape, 1, padding)
    inner = np.sum(expected * grad_out)
    scale = np.sum(np.abs(expected * grad_out))
    assert abs(np.sum(x.astype(np.float64) * grad_input) - inner) <= rtol * scale
    monkeypatch.setattr(direct, "MAX_OUT_CHANNELS", 0)
    monkeypatch.setattr(direct, "MIN_WINOGRAD_TILES", 0)
    through_im2col = conv.conv2d_grad_input(grad_out, weight, x.shape, 1, padding)
    np.testing.assert_allclose(grad_input, through_im2col, rtol=rtol,
                               atol=rtol * np.abs(through_im2col).max())


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("case", [(2, 3, 20, 18, 5, 3, 3, (1, 1)), (3, 1, 28, 28, 6, 5, 5, (2, 2)),
                                  (1, 2, 17, 40, 33, 3, 2, (0, 1))])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_grad_weight_is_the_adjoint_of_the_forward(case, threads, dtype, rtol, rng,
                                                   monkeypatch):
    """<conv(x, w), g> = <w, grad_weight(x, g)>; the direct loop and im2col agree."""
    x, weight, padding = _arrays(case, dtype, rng)
    assert direct.grad_weight_applies(weight.shape, (1, 1), (1, 1), 1, x.shape, padding)
    expected = conv2d_reference(x, weight, padding=padding)
    grad_out = rng.normal(size=expected.shape).astype(dtype)
    grad_weight = direct.grad_weight(x, grad_out, weight.shape, padding, threads)
    assert grad_weight.shape == weight.shape and grad_weight.dtype == dtype
    inner = np.sum(expected * grad_out)
    scale = np.sum(np.abs(expected * grad_out))
    assert abs(np.sum(weight.astype(np.float64) * grad_weight) - inner) <= rtol * scale
    monkeypatch.setattr(direct, "MAX_OUT_CHANNELS", 0)
    monkeypatch.setattr(direct, "MIN_WINOGRAD_TILES", 0)
    monkeypatch.setattr(direct, "MIN_GRAD_GRID", 10 ** 9)
    through_im2col = conv.conv2d_grad_weight(x, grad_out, weight.shape, 1, padding)
    np.testing.assert_allclose(grad_weight, through_im2col, rtol=rtol,
                               atol=rtol * np.abs(through_im2col).max())


@pytest.mark.parametrize("use_direct", [True, False])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_bias_gradient_rides_along_with_the_weight_gradient(use_direct, dtype, rtol, rng,
                                                            monkeypatch):
    if not use_direct:
        monkeypatch.setattr(direct, "MIN_GRAD_GRID", 10 ** 9)
    x, weight, padding = _arrays((5, 3, 20, 18, 6, 3, 3, (1, 1)), dtype, rng)
    grad_out = rng.normal(size=(5, 6, 20, 18)).astype(dtype)
    alone = conv.conv2d_grad_weight_unchecked(x, grad_out, weight.shape, (1, 1), padding,
                                              (1, 1), 1)
    grad_weight, grad_bias = conv.conv2d_grad_weight_unchecked(
        x, grad_out, weight.shape, (1, 1), padding, (1, 1), 1, with_bias=True)
    np.testing.assert_array_equal(grad_weight, alone)
    assert grad_bias.dtype == dtype and grad_bias.shape == (6,)
    np.testing.assert_allclose(grad_bias, grad_out.astype(np.float64).sum(axis=(0, 2, 3)),
                               rtol=rtol)


def test_grad_weight_applies_only_to_long_grids_and_few_channels_or_taps():
    lenet_second = (16, 6, 5, 5)
    assert direct.grad_weight_applies(lenet_second, (1, 1), (1, 1), 1, (64, 6, 14, 14), (0, 0))
    assert not direct.grad_weight_applies(lenet_second, (1, 1), (1, 1), 1, (64, 6, 8, 8), (0, 0))
    assert direct.grad_weight_applies((64, 3, 3, 3), (1, 1), (1, 1), 1, (8, 3, 32, 32), (1, 1))
    assert not direct.grad_weight_applies((65, 3, 3, 3), (1, 1), (1, 1), 1, (8, 3, 32, 32),
                                          (1, 1))
    assert not direct.grad_weight_applies((64, 64, 3, 3), (1, 1), (1, 1), 1, (8, 64, 8, 8),
                                          (1, 1))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c_in=st.integers(1, 8), c_out=st.integers(1, 40),
       kh=st.integers(1, 5), kw=st.integers(1, 5), ph=st.integers(0, 2), pw=st.integers(0, 2),
       extra_h=st.integers(0, 14), extra_w=st.integers(0, 14), seed=st.integers(0, 2 ** 16))
def test_random_shapes_through_the_public_kernels(n, c_in, c_out, kh, kw, ph, pw, extra_h,
                                                   extra_w, seed):
    """Whichever path a shape takes, forward matches SciPy and both gradients are its
    adjoints (float64)."""
    rng = np.random.default_rng(seed)
    h, w = max(1, kh - 2 * ph) + extra_h, max(1, kw - 2 * pw) + extra_w
    x = rng.normal(size=(n, c_in, h, w))
    weight = rng.normal(size=(c_out, c_in, kh, kw))
    expected = conv2d_reference(x, weight, padding=(ph, pw))
    np.testing.assert_allclose(conv.conv2d_forward(x, weight, padding=(ph, pw)), expected,
                               rtol=1e-9, atol=1e-9)
    grad_out = rng.normal(size=expected.shape)
    inner = np.sum(expected * grad_out)
    scale = np.sum(np.abs(expected * grad_out))
    grad_input = conv.conv2d_grad_input(grad_out, weight, x.shape, 1, (ph, pw))
    grad_weight = conv.conv2d_grad_weight(x, grad_out, weight.shape, 1, (ph, pw))
    assert abs(np.sum(x * grad_input) - inner) <= 1e-9 * scale
    assert abs(np.sum(weight * grad_weight) - inner) <= 1e-9 * scale


def test_bad_input_to_the_public_conv_kernels_is_refused(rng):
    """Shapes the compiled loops would run off are refused before any loop runs."""
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    grad_out = np.ones((2, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="input channels"):
        conv.conv2d_forward(np.ones((2, 5, 8, 8), np.float32), weight, padding=1)
    with pytest.raises(ValueError, match="residual"):
        conv.conv2d_forward(x, weight, padding=1, residual=np.ones((2, 4, 8, 9), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        conv.conv2d_forward(x, weight, padding=1, out=np.empty((2, 4, 8, 8)))
    with pytest.raises(ValueError, match="grad_out"):
        conv.conv2d_grad_input(np.ones((2, 4, 9, 8), np.float32), weight, x.shape, 1, 1)
    with pytest.raises(ValueError, match="grad_out"):
        conv.conv2d_grad_weight(x, np.ones((2, 5, 8, 8), np.float32), weight.shape, 1, 1)
    with pytest.raises(ValueError, match="grad_out"):
        conv.conv2d_grad_weight(x, grad_out.astype(np.float64), weight.shape, 1, 1)
    with pytest.raises(ValueError, match="input channels"):
        conv.conv2d_grad_weight(x, grad_out, (4, 2, 3, 3), 1, 1)
    with pytest.raises(TypeError, match="grad_out"):
        conv.conv2d_grad_input(grad_out.tolist(), weight, x.shape, 1, 1)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_small_maps_take_the_direct_path_at_any_channel_count(dtype, rtol, rng):
    """Where Winograd would have few tiles (batch 1, 8²) 64 channels run direct, also
    past the tap limit, and match SciPy with the fused epilogue."""
    x = rng.normal(size=(1, 64, 8, 8)).astype(dtype)
    weight = rng.normal(size=(64, 64, 3, 3)).astype(dtype)
    bias = rng.normal(size=64).astype(dtype)
    residual = rng.normal(size=x.shape).astype(dtype)
    assert weight[0].size > direct.MAX_TAPS and 64 > direct.MAX_OUT_CHANNELS
    assert direct.applies(weight.shape, (1, 1), (1, 1), 1, x.shape, (1, 1))
    assert not direct.applies(weight.shape, (1, 1), (1, 1), 1, (16,) + x.shape[1:], (1, 1))
    expected = np.maximum(conv2d_reference(x, weight, bias, padding=(1, 1)) + residual, 0)
    out = conv.conv2d_forward(x, weight, bias, padding=1, residual=residual,
                              negative_slope=0.0)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def _strided_case(case, dtype, rng):
    """x, weight, padding, stride of ``(n, c_in, h, w, c_out, kh, kw, padding, stride)``."""
    n, c_in, h, w, c_out, kh, kw, padding, stride = case
    x = rng.normal(size=(n, c_in, h, w)).astype(dtype)
    return x, rng.normal(size=(c_out, c_in, kh, kw)).astype(dtype), padding, stride


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("case", [
    # n, c_in, h, w, c_out, kh, kw, padding, stride
    (2, 3, 15, 12, 8, 3, 3, (1, 1), (2, 2)),
    (1, 16, 32, 32, 32, 3, 3, (1, 1), (2, 2)),
    (3, 2, 11, 16, 6, 5, 3, (2, 0), (3, 2)),
    (1, 4, 9, 10, 5, 3, 4, (0, 1), (1, 3)),
    (2, 5, 8, 8, 4, 2, 2, (0, 0), (2, 2)),
    (2, 5, 9, 10, 6, 1, 1, (0, 0), (2, 2)),
    (1, 3, 11, 13, 4, 2, 2, (1, 0), (3, 3)),
    (2, 3, 16, 16, 5, 3, 3, (1, 1), (2, 2)),      # output rows of 8: the dense grid
])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_strided_convs_read_phase_planes(case, threads, dtype, rtol, rng):
    """Strided convs through the phase planes match SciPy, epilogue and bands included."""
    x, weight, padding, stride = _strided_case(case, dtype, rng)
    bias = rng.normal(size=weight.shape[0]).astype(dtype)
    assert direct.applies(weight.shape, stride, (1, 1), 1, x.shape, padding)
    expected = conv2d_reference(x, weight, bias, stride=stride, padding=padding)
    residual = rng.normal(size=expected.shape).astype(dtype)
    run = direct.forward_runner(x.shape, weight, bias, padding, threads, 0.0, stride)
    out = run(x, None, residual)
    expected = np.maximum(expected + residual, 0)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    public = conv.conv2d_forward(x, weight, bias, stride, padding, residual=residual,
                                 negative_slope=0.0)
    np.testing.assert_allclose(public, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("case", [
    (2, 3, 31, 28, 8, 3, 3, (1, 1), (2, 2)),
    (3, 4, 26, 30, 5, 5, 3, (2, 1), (3, 2)),
    (2, 5, 32, 30, 6, 1, 1, (0, 0), (2, 2)),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_strided_grad_weight_is_the_adjoint_of_the_forward(case, threads, dtype, rtol, rng):
    """<conv(x, w), g> = <w, grad_weight(x, g)> through the phase planes, bias included."""
    x, weight, padding, stride = _strided_case(case, dtype, rng)
    assert direct.grad_weight_applies(weight.shape, stride, (1, 1), 1, x.shape, padding)
    expected = conv2d_reference(x, weight, stride=stride, padding=padding)
    grad_out = rng.normal(size=expected.shape).astype(dtype)
    grad_weight, grad_bias = direct.grad_weight(x, grad_out, weight.shape, padding, threads,
                                                True, stride)
    inner = np.sum(expected * grad_out)
    scale = np.sum(np.abs(expected * grad_out))
    assert abs(np.sum(weight.astype(np.float64) * grad_weight) - inner) <= rtol * scale
    np.testing.assert_allclose(grad_bias, grad_out.sum(axis=(0, 2, 3)), rtol=rtol,
                               atol=rtol * np.abs(grad_out).sum(axis=(0, 2, 3)).max())
    with pytest.raises(ValueError, match="not the conv's output"):
        direct.grad_weight(x, grad_out, weight.shape, padding, threads, False, (1, 1))


@pytest.mark.parametrize("n, threads", [(1, 1), (1, 2), (3, 2), (2, 3)])
def test_a_chain_equals_its_convs_one_by_one(n, threads, rng):
    """Convs chained in one parallel region (later ones reading earlier outputs as
    input and residual, a strided one among them) give bitwise the separate calls."""
    x = rng.normal(size=(n, 3, 12, 10)).astype(np.float32)
    first = direct.forward_runner(x.shape, rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
                                  rng.normal(size=8).astype(np.float32), (1, 1), threads, 0.0)
    second = direct.forward_runner(first.out_shape,
                                   rng.normal(size=(8, 8, 3, 3)).astype(np.float32), None,
                                   (1, 1), threads, 0.1)
    third = direct.forward_runner(second.out_shape,
                                  rng.normal(size=(6, 8, 3, 3)).astype(np.float32),
                                  rng.normal(size=6).astype(np.float32), (1, 1), threads, None,
                                  (2, 2))
    a = first(x)
    b = second(a, None, a)
    c = third(b)
    outs = [np.full(r.out_shape, np.nan, np.float32) for r in (first, second, third)]
    direct.run_chain([(first, x, outs[0], None), (second, outs[0], outs[1], outs[0]),
                      (third, outs[1], outs[2], None)], threads)
    for got, want in zip(outs, (a, b, c)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_prepared_chain_runs_again_with_new_first_inputs(threads, rng):
    """A chain laid out once runs with a new first input each time, also where a later
    conv adds that input as its residual, bitwise as a chain made for it."""
    shape = (2, 3, 10, 12)
    first_weight = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    second_weight = rng.normal(size=(3, 8, 3, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    first = direct.forward_runner(shape, first_weight, None, (1, 1), threads, 0.0)
    second = direct.forward_runner(first.out_shape, second_weight, bias, (1, 1), threads, 0.1)
    outs = [np.empty(first.out_shape, np.float32), np.empty(shape, np.float32)]
    expected = [np.empty_like(out) for out in outs]
    x = rng.normal(size=shape).astype(np.float32)
    chain = direct.prepare_chain([(first, x, outs[0], None), (second, outs[0], outs[1], x)],
                                 threads)
    for _ in range(3):
        x = rng.normal(size=shape).astype(np.float32)
        chain.run(x)
        direct.run_chain([(first, x, expected[0], None),
                          (second, expected[0], expected[1], x)], threads)
        for got, want in zip(outs, expected):
            np.testing.assert_array_equal(got, want)
    # and against SciPy: second(relu(first(x))) + bias + x, then leaky ReLU 0.1
    hidden = np.maximum(conv2d_reference(x.astype(np.float64), first_weight.astype(np.float64),
                                         padding=(1, 1)), 0)
    want = conv2d_reference(hidden, second_weight.astype(np.float64), bias.astype(np.float64),
                            padding=(1, 1)) + x
    want = np.where(want > 0, want, 0.1 * want)
    np.testing.assert_allclose(outs[1], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    with pytest.raises(ValueError, match="shape it was prepared for"):
        chain.run(np.zeros((1,) + shape[1:], np.float32))
    with pytest.raises(ValueError, match="float32"):
        chain.run(x.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        chain.run(np.asfortranarray(x))


def test_a_long_chain_is_the_same_when_threads_join_late_or_sleep(rng):
    """More threads than cores, so that some start late or sleep between layers and
    join wherever the others are: every run of a twelve-conv chain (each reading the
    one before as input and the one before that as residual) equals the one-thread run
    bitwise."""
    x = rng.normal(size=(1, 8, 16, 16)).astype(np.float32)
    weights = [rng.normal(size=(8, 8, 3, 3)).astype(np.float32) / 8 for _ in range(12)]

    def chain(threads):
        runners = [direct.forward_runner(x.shape, w, None, (1, 1), threads, 0.0)
                   for w in weights]
        outs = [np.full(x.shape, np.nan, np.float32) for _ in weights]
        specs = [(runners[0], x, outs[0], None)] + [
            (runners[k], outs[k - 1], outs[k], outs[k - 2] if k > 1 else None)
            for k in range(1, len(weights))]
        return specs, outs

    serial_specs, serial = chain(1)
    direct.run_chain(serial_specs, 1)
    specs, outs = chain(4)
    for _ in range(50):
        for out in outs:
            out.fill(np.nan)
        direct.run_chain(specs, 4)
        for got, want in zip(outs, serial):
            np.testing.assert_array_equal(got, want)


def test_the_in_place_read_rule():
    """A dense grid, x stored with the conv's stride and at least its padding as border."""
    rule = direct.reads_in_place
    assert rule(16, (1, 1), (1, 1), (1, 1)) and rule(16, (1, 1), (1, 1), (2, 1, 1, 1))
    assert rule(8, (0, 0), (1, 1), (0, 0))              # plain x, no padding
    assert rule(8, (1, 1), (2, 2), (1, 1, 2, 2)) and rule(8, (0, 0), (2, 2), (1, 1, 2, 2))
    assert not rule(14, (1, 1), (1, 1), (1, 1))          # the wide grid reads past
    assert not rule(0, (0, 0), (1, 1), (0, 0))
    assert not rule(16, (1, 1), (1, 1), (0, 1))          # border below the padding
    assert not rule(8, (1, 1), (2, 2), (1, 1))           # planes of another stride
    assert not rule(8, (1, 1), (1, 1), (1, 1, 2, 2))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 3])
# (kernel, padding, stride, width): read in place (stride 1, a dense grid, the
# padding as border) or copied from the interior (a wide grid, a stride, a border
# other than the padding)
@pytest.mark.parametrize("kernel, padding, stride, width", [
    (3, 1, 1, 16), (5, 2, 1, 8), (3, 1, 1, 10), (3, 1, 2, 16), (1, 0, 2, 16), (3, 0, 1, 10)])
def test_bordered_inputs_outputs_and_residuals_give_the_unbordered_results(
        kernel, padding, stride, width, n, threads, rng):
    """x, residual and out stored inside zero borders (what a plan keeps between chained
    convs, so that the next conv reads its input in place) give bitwise the results
    of plain arrays; the conv writes out's interior only, leaving the border as it
    was."""
    x = rng.normal(size=(n, 8, 12, width)).astype(np.float32)
    weight = rng.normal(size=(8, 8, kernel, kernel)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    run = direct.forward_runner(x.shape, weight, bias, (padding, padding), threads, 0.0,
                                (stride, stride))
    residual = rng.normal(size=run.out_shape).astype(np.float32)
    want = run(x, None, residual)
    reference = conv2d_reference(x.astype(np.float64), weight.astype(np.float64),
                                 bias.astype(np.float64), (stride, stride),
                                 (padding, padding)) + residual
    np.testing.assert_allclose(want, np.maximum(reference, 0), rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())
    for x_border, out_border, residual_border in [((padding, padding), (1, 1), (2, 1)),
                                                  ((1, 2), (0, 0), (0, 0)),
                                                  ((0, 0), (2, 3), (1, 1))]:
        out = stored_layout(np.full(run.out_shape, np.nan, np.float32), out_border)
        direct.run_chain([(run, stored_layout(x, x_border), out, stored_layout(residual, residual_border),
                           (x_border, residual_border, out_border))], threads)
        rows, cols = out_border
        np.testing.assert_array_equal(out[:, :, rows:rows + want.shape[2],
                                          cols:cols + want.shape[3]], want)
        out[:, :, rows:rows + want.shape[2], cols:cols + want.shape[3]] = 0
        assert not out.any()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_chain_on_bordered_buffers_equals_plain_convs(threads, rng):
    """ResNet's pattern on bordered intermediates: each conv reads the one before in
    place and adds the one before that, run after run (the borders stay zero)."""
    x = rng.normal(size=(1, 8, 16, 16)).astype(np.float32)
    runners = [direct.forward_runner(x.shape, rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
                                     / 8, None, (1, 1), threads, 0.0) for _ in range(5)]
    plain = [np.empty(x.shape, np.float32) for _ in runners]
    bordered = [stored_layout(np.zeros(x.shape, np.float32), (1, 1)) for _ in runners[:-1]]
    bordered.append(np.empty(x.shape, np.float32))
    no_border, border = (0, 0), (1, 1)

    def steps(outs, framed):
        return [(runners[0], x, outs[0], None, (no_border, no_border, framed(0)))] + [
            (runners[k], outs[k - 1], outs[k], outs[k - 2] if k > 1 else None,
             (framed(k - 1), framed(k - 2) if k > 1 else no_border, framed(k)))
            for k in range(1, len(runners))]
    direct.run_chain(steps(plain, lambda k: no_border), threads)
    chain = direct.prepare_chain(steps(bordered, lambda k: border if k < len(runners) - 1
                                       else no_border), threads)
    for _ in range(3):
        chain.run(x)
        np.testing.assert_array_equal(bordered[-1], plain[-1])
        for inner, want in zip(bordered[:-1], plain[:-1]):
            np.testing.assert_array_equal(inner[:, :, 1:-1, 1:-1], want)
            inner[:, :, 1:-1, 1:-1] = 0
            assert not inner.any()
            inner[:, :, 1:-1, 1:-1] = want


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 2])
def test_a_conv_after_one_that_read_in_place_pads_into_a_zeroed_border(n, threads, rng):
    """A conv that reads in place keeps its grid where the convs before it padded their
    images: a later conv padding the same layout must zero the border again. (A plan
    of two BasicBlocks, 3 -> 3 then 3 -> 8, was 3.5e-2 off its model: the third conv
    read the second's grid as its border.)"""
    x = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    runners = [direct.forward_runner(x.shape, rng.normal(size=(c_out, 3, 3, 3)).astype(
        np.float32), None, (1, 1), threads, 0.0) for c_out in (3, 3, 8)]
    first = runners[0](x)
    second = runners[1](first, None, x)
    want = runners[2](second)
    outs = [stored_layout(np.zeros(first.shape, np.float32), (1, 1)),
            np.empty(second.shape, np.float32), np.empty(want.shape, np.float32)]
    plain = ((0, 0), (0, 0), (0, 0))
    chain = direct.prepare_chain([(runners[0], x, outs[0], None, ((0, 0), (0, 0), (1, 1))),
                                  (runners[1], outs[0], outs[1], x, ((1, 1), (0, 0), (0, 0))),
                                  (runners[2], outs[1], outs[2], None, plain)], threads)
    for _ in range(2):
        chain.run(x)
        np.testing.assert_array_equal(outs[0][:, :, 1:-1, 1:-1], first)
        np.testing.assert_array_equal(outs[1], second)
        np.testing.assert_array_equal(outs[2], want)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("width", [16, 22])
@pytest.mark.parametrize("layout", [(1, 1, 2, 2), (0, 0, 2, 2), (1, 0, 2, 1), (0, 2, 3, 2),
                                    (0, 1, 1, 3)])
def test_outputs_written_into_phase_planes_are_the_plain_outputs(layout, width, threads,
                                                                  rng):
    """A conv writes its output (with bias, residual and activation) straight into the
    phase planes a strided conv reads, bitwise the plain output, the border untouched
    (rows of whole vectors and with a scalar tail)."""
    x = rng.normal(size=(2, 8, 12, width)).astype(np.float32)
    weight = rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    run = direct.forward_runner(x.shape, weight, bias, (1, 1), threads, 0.1)
    residual = rng.normal(size=run.out_shape).astype(np.float32)
    want = run(x, None, residual)
    reference = conv2d_reference(x.astype(np.float64), weight.astype(np.float64),
                                 bias.astype(np.float64), (1, 1), (1, 1)) + residual
    reference = np.where(reference > 0, reference, 0.1 * reference)
    np.testing.assert_allclose(want, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    rows, cols = layout[:2]
    out = stored_layout(np.full(run.out_shape, np.nan, np.float32), layout)
    direct.run_chain([(run, x, out, stored_layout(residual, (1, 1)),
                       ((0, 0), (1, 1), layout))], threads)
    np.testing.assert_array_equal(out, stored_layout(want, layout))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 3])
# (kernel, padding, stride, width, layout): a strided conv reads its input's phase
# planes in place, also planes padded more than the conv (the 1x1 shortcut of a ResNet
# reads the planes its 3x3 neighbour's padding laid out); at stride 1 a border wider
# than the padding is read in place too
@pytest.mark.parametrize("kernel, padding, stride, width, layout", [
    (3, 1, 2, 32, (1, 1, 2, 2)), (1, 0, 2, 32, (1, 1, 2, 2)), (3, 1, 2, 16, (2, 2, 2, 2)),
    (3, 0, 3, 24, (0, 0, 3, 3)), (3, 1, 1, 16, (2, 1)), (1, 0, 1, 8, (1, 1))])
def test_phase_planes_are_read_in_place(kernel, padding, stride, width, layout, n, threads,
                                        rng):
    x = rng.normal(size=(n, 8, 12, width)).astype(np.float32)
    weight = rng.normal(size=(8, 8, kernel, kernel)).astype(np.float32)
    run = direct.forward_runner(x.shape, weight, None, (padding, padding), threads, None,
                                (stride, stride))
    want = run(x)
    np.testing.assert_allclose(want, conv2d_reference(
        x.astype(np.float64), weight.astype(np.float64), None, (stride, stride),
        (padding, padding)), rtol=1e-4, atol=1e-3)
    stored = stored_layout(x, layout)
    out = np.full(run.out_shape, np.nan, np.float32)
    direct.run_chain([(run, stored, out, None, (layout, (0, 0), (0, 0)))], threads)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_chain_through_phase_planes_equals_plain_convs(threads, rng):
    """A ResNet transition: a block's last conv writes the phase planes that the next
    block's 3x3 stride-2 conv and its 1x1 stride-2 shortcut both read in place; the
    3x3 conv's output is kept bordered for the conv after it, which adds the shortcut.
    Run after run, bitwise the plain chain, the borders staying zero."""
    x = rng.normal(size=(1, 8, 16, 32)).astype(np.float32)
    # the conv after takes fewer channels than Winograd's layers (a test of their own)
    weights = [rng.normal(size=shape).astype(np.float32) / 8 for shape in
               [(8, 8, 3, 3), (12, 8, 3, 3), (12, 8, 1, 1), (12, 12, 3, 3)]]
    last = direct.forward_runner(x.shape, weights[0], None, (1, 1), threads, 0.0)
    down = direct.forward_runner(x.shape, weights[1], None, (1, 1), threads, 0.0, (2, 2))
    shortcut = direct.forward_runner(x.shape, weights[2], None, (0, 0), threads, None, (2, 2))
    after = direct.forward_runner(down.out_shape, weights[3], None, (1, 1), threads, 0.0)
    plain = [np.empty(last.out_shape, np.float32)] + [
        np.empty(down.out_shape, np.float32) for _ in range(3)]
    direct.run_chain([(last, x, plain[0], x), (down, plain[0], plain[1]),
                      (shortcut, plain[0], plain[2]), (after, plain[1], plain[3], plain[2])],
                     threads)
    wide = [weight.astype(np.float64) for weight in weights]
    block = np.maximum(conv2d_reference(x.astype(np.float64), wide[0], None, (1, 1), (1, 1))
                       + x, 0)
    reference = np.maximum(conv2d_reference(
        np.maximum(conv2d_reference(block, wide[1], None, (2, 2), (1, 1)), 0), wide[3], None,
        (1, 1), (1, 1)) + conv2d_reference(block, wide[2], None, (2, 2), (0, 0)), 0)
    np.testing.assert_allclose(plain[3], reference, rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())
    phased, framed = (1, 1, 2, 2), (1, 1)
    stored = [stored_layout(np.zeros(last.out_shape, np.float32), phased),
              stored_layout(np.zeros(down.out_shape, np.float32), framed),
              np.empty(down.out_shape, np.float32), np.empty(down.out_shape, np.float32)]
    plain_layout = (0, 0)
    chain = direct.prepare_chain([
        (last, x, stored[0], x, (plain_layout, plain_layout, phased)),
        (down, stored[0], stored[1], None, (phased, plain_layout, framed)),
        (shortcut, stored[0], stored[2], None, (phased, plain_layout, plain_layout)),
        (after, stored[1], stored[3], stored[2], (framed, plain_layout, plain_layout))],
        threads)
    for _ in range(3):
        chain.run(x)
        np.testing.assert_array_equal(stored[3], plain[3])
        np.testing.assert_array_equal(stored[2], plain[2])
        for array, layout, want in [(stored[0], phased, plain[0]),
                                    (stored[1], framed, plain[1])]:
            padded = from_stored_layout(array, layout)
            np.testing.assert_array_equal(padded[:, :, 1:-1, 1:-1], want)
            padded[:, :, 1:-1, 1:-1] = 0
            assert not padded.any()


def test_phase_planes_are_checked(rng):
    x = rng.normal(size=(1, 4, 8, 16)).astype(np.float32)
    weight = rng.normal(size=(4, 4, 3, 3)).astype(np.float32)
    strided = direct.forward_runner(x.shape, weight, None, (1, 1), 2, None, (2, 2))
    plain = direct.forward_runner(x.shape, weight, None, (1, 1), 2)
    phased = (1, 1, 2, 2)
    stored = stored_layout(x, phased)
    # read in place only: by a conv of the planes' stride, padded at most as much, on a
    # dense grid
    with pytest.raises(ValueError, match="read in place only"):
        direct.run_chain([(plain, stored, np.zeros(plain.out_shape, np.float32), None,
                           (phased, (0, 0), (0, 0)))], 2)
    wide = direct.forward_runner((1, 4, 8, 12), weight, None, (1, 1), 2, None, (2, 2))
    with pytest.raises(ValueError, match="read in place only"):
        direct.run_chain([(wide, stored_layout(x[..., :12], phased),
                           np.zeros(wide.out_shape, np.float32), None,
                           (phased, (0, 0), (0, 0)))], 2)
    padded = direct.forward_runner(x.shape, weight, None, (2, 2), 2, None, (2, 2))
    with pytest.raises(ValueError, match="read in place only"):
        direct.run_chain([(padded, stored, np.zeros(padded.out_shape, np.float32), None,
                           (phased, (0, 0), (0, 0)))], 2)
    # planes that do not split the channels, a phased residual, a layout of 3 values
    with pytest.raises(ValueError, match="cannot be stored"):
        direct.run_chain([(strided, stored[:, :6], np.zeros(strided.out_shape, np.float32),
                           None, (phased, (0, 0), (0, 0)))], 2)
    out = np.zeros(plain.out_shape, np.float32)
    with pytest.raises(ValueError, match="residual cannot be stored in phase planes"):
        direct.run_chain([(plain, x, out, stored, ((0, 0), phased, (0, 0)))], 2)
    with pytest.raises(ValueError, match="3 layouts"):
        direct.run_chain([(plain, x, out, None, ((0, 0), (0, 0), (1, 1, 2)))], 2)
    # nor does a classifier head read phase planes
    chain = direct.prepare_chain([(plain, x, stored_layout(out, phased), None,
                                   ((0, 0), (0, 0), phased))], 2)
    with pytest.raises(ValueError, match="unbordered"):
        chain.set_head(np.zeros((1, 4), np.float32), np.zeros((3, 4), np.float32), None,
                       np.zeros((1, 3), np.float32))


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("n, threads", [(1, 1), (1, 2), (3, 2)])
@pytest.mark.parametrize("with_bias, slope", [(True, None), (False, 0.1)])
def test_a_chain_head_is_the_global_mean_then_a_dense_layer(with_bias, slope, n, threads,
                                                             dtype, rtol, rng):
    x = rng.normal(size=(n, 4, 8, 8)).astype(dtype)
    weight = rng.normal(size=(8, 4, 3, 3)).astype(dtype)
    first = direct.forward_runner(x.shape, weight, None, (1, 1), threads, 0.0)
    second = direct.forward_runner(first.out_shape, weight[:, :4].repeat(2, axis=1), None,
                                   (1, 1), threads, None)
    hidden, last = np.empty(first.out_shape, dtype), np.empty(second.out_shape, dtype)
    chain = direct.prepare_chain([(first, x, hidden, None), (second, hidden, last, None)],
                                 threads)
    dense = rng.normal(size=(5, 8)).astype(dtype)
    bias = rng.normal(size=5).astype(dtype) if with_bias else None
    means, out = np.full((n, 8), np.nan, dtype), np.full((n, 5), np.nan, dtype)
    chain.set_head(means, dense, bias, out, slope is not None, slope or 0.0)
    chain.run(x)
    pooled = np.empty(n * 8, dtype)   # the global average pool's own loop
    global_mean_into(last.reshape(n * 8, -1), pooled, threads)
    np.testing.assert_array_equal(means.ravel(), pooled)
    want_means = last.astype(np.float64).mean(axis=(2, 3))
    want = want_means @ dense.T.astype(np.float64) + (bias if with_bias else 0)
    if slope is not None:
        want = np.where(want > 0, want, slope * want)
    np.testing.assert_allclose(means, want_means, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol * np.abs(want).max())


def _one_conv_chain(x, rng):
    """A chain of one 3x3 conv to 6 channels on ``x``: (runner, its output, chain)."""
    run = direct.forward_runner(x.shape, rng.normal(size=(6, x.shape[1], 3, 3)).astype(
        x.dtype), None, (1, 1), 2)
    out = np.empty(run.out_shape, x.dtype)
    return run, out, direct.prepare_chain([(run, x, out, None)], 2)


def test_a_chain_head_is_checked(rng):
    x = rng.normal(size=(2, 4, 8, 8)).astype(np.float32)
    run, out, chain = _one_conv_chain(x, rng)
    weight = np.zeros((3, 6), np.float32)
    for means, head_weight, bias, logits, match in [
            (np.zeros((2, 5), np.float32), weight, None, np.zeros((2, 3), np.float32),
             "do not fit"),
            (np.zeros((2, 6), np.float32), weight, None, np.zeros((2, 4), np.float32),
             "do not fit"),
            (np.zeros((2, 6), np.float32), weight, np.zeros(4, np.float32),
             np.zeros((2, 3), np.float32), "bias must have 3"),
            (np.zeros((2, 6)), weight, None, np.zeros((2, 3), np.float32), "float32")]:
        with pytest.raises(ValueError, match=match):
            chain.set_head(means, head_weight, bias, logits)
    framed = stored_layout(out, (1, 1))
    chain = direct.prepare_chain([(run, x, framed, None, ((0, 0), (0, 0), (1, 1)))], 2)
    with pytest.raises(ValueError, match="unbordered"):
        chain.set_head(np.zeros((2, 6), np.float32), weight, None,
                       np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [4, 9, 64])
def test_dense_layers_after_a_chain_equal_the_standalone_layers(n, threads, rng):
    """A LeNet's classifier run in the chain's parallel region, after its convs: each
    layer bitwise the standalone packed dense layer (the same register kernel) and,
    in float64, NumPy's product; run after run, with new inputs."""
    x = rng.normal(size=(n, 2, 8, 8)).astype(np.float32)
    conv = direct.forward_runner(x.shape, rng.normal(size=(6, 2, 3, 3)).astype(np.float32),
                                 None, (1, 1), threads, 0.0)
    features = np.empty(conv.out_shape, np.float32)
    chain = direct.prepare_chain([(conv, x, features, None)], threads)
    layers, source = [], features.reshape(n, -1)
    for inputs, outputs, with_bias, slope in [(384, 50, True, 0.0), (50, 30, False, 0.1),
                                              (30, 10, True, None)]:
        layer = dense.LinearRunner((rng.normal(size=(outputs, inputs)) / np.sqrt(inputs))
                                   .astype(np.float32), rng.normal(size=outputs).astype(
                                       np.float32) if with_bias else None, slope)
        out = np.full((n, outputs), np.nan, np.float32)
        layers.append((layer, source, out))
        source = out
    chain.set_dense([(source, layer.panels, layer.panel_bias, out, layer.activate,
                      layer.slope) for layer, source, out in layers])
    for _ in range(2):
        x[:] = rng.normal(size=x.shape)
        chain.run(x)
        want = conv(x).reshape(n, -1)
        for layer, _, out in layers:
            reference = want.astype(np.float64) @ layer.weight.T.astype(np.float64) + (
                0 if layer.bias is None else layer.bias)
            if layer.activate:
                reference = np.where(reference > 0, reference, layer.slope * reference)
            want = layer(want, None, 1)
            np.testing.assert_array_equal(out, want)
            np.testing.assert_allclose(out, reference, rtol=1e-5,
                                       atol=1e-5 * np.abs(reference).max())


def test_dense_layers_after_a_chain_are_checked(rng):
    x = rng.normal(size=(4, 2, 8, 8)).astype(np.float32)
    _, features, chain = _one_conv_chain(x, rng)
    layer = dense.LinearRunner(rng.normal(size=(10, 384)).astype(np.float32),
                               rng.normal(size=10).astype(np.float32))
    flat, out = features.reshape(4, -1), np.empty((4, 10), np.float32)
    for args, match in [
            ((flat[:, :300], layer.panels, layer.panel_bias, out), "C-contiguous"),
            ((flat[:, :300].copy(), layer.panels, layer.panel_bias, out), "do not fit"),
            ((flat, layer.panels, layer.panel_bias, np.empty((3, 10), np.float32)),
             "do not fit"),
            ((flat, layer.panels, layer.panel_bias, np.empty((4, 30), np.float32)),
             "do not fit"),
            ((flat, layer.panels, layer.panel_bias[:10], out), "whole panels"),
            ((flat.astype(np.float64), layer.panels, None, out), "float32")]:
        with pytest.raises(ValueError, match=match):
            chain.set_dense([args + (False, 0.0)])
    with pytest.raises(ValueError, match="must be \\(x, panels, bias, out, activate, slope\\)"):
        chain.set_dense([(flat, layer.panels, layer.panel_bias, out)])
    chain.set_dense([(flat, layer.panels, layer.panel_bias, out, False, 0.0)])
    with pytest.raises(ValueError, match="dense layers already"):
        chain.set_head(np.zeros((4, 6), np.float32), np.zeros((3, 6), np.float32), None,
                       np.zeros((4, 3), np.float32))
    chain.set_dense([])   # none again: the chain runs its convs alone
    out.fill(np.nan)
    chain.run(x)
    assert np.isnan(out).all()
    _, _, wide = _one_conv_chain(x.astype(np.float64), rng)
    with pytest.raises(ValueError, match="float32 chain"):
        wide.set_dense([(flat, layer.panels, layer.panel_bias, out, False, 0.0)])


def test_borders_are_checked(rng):
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    run = direct.forward_runner(x.shape, rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                                None, (1, 1), 2)
    out = np.zeros((2, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="3 layouts"):
        direct.run_chain([(run, x, out, None, ((1, 1), (0, 0)))], 2)
    with pytest.raises(ValueError, match="cannot be stored with a border"):
        direct.run_chain([(run, x, out, None, ((5, 0), (0, 0), (0, 0)))], 2)
    with pytest.raises(ValueError, match="cannot be stored with a border"):
        direct.run_chain([(run, x, out, None, ((0, 0), (0, 0), (-1, 0)))], 2)
    # the interior, not the stored array, must be the conv's output
    with pytest.raises(ValueError, match="not the conv's output"):
        direct.run_chain([(run, x, out, None, ((0, 0), (0, 0), (1, 1)))], 2)
    pooled = run.pooled()
    with pytest.raises(ValueError, match="no borders"):
        direct.run_chain([(pooled, stored_layout(x, (1, 1)), np.zeros((2, 4, 4, 4), np.float32),
                           None, ((1, 1), (0, 0), (0, 0)))], 2)


def test_a_chain_refuses_outputs_and_residuals_of_the_wrong_shape(rng):
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    run = direct.forward_runner(x.shape, rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                                rng.normal(size=4).astype(np.float32), (1, 1), 2)
    with pytest.raises(ValueError, match="not the conv's output"):
        direct.run_chain([(run, x, np.zeros((2, 4, 7, 8), np.float32), None)], 2)
    with pytest.raises(ValueError, match="must match the conv's output"):
        direct.run_chain([(run, x, np.zeros((1, 4, 8, 8), np.float32), None)], 2)
    with pytest.raises(ValueError, match="must match the conv's output"):
        direct.run_chain([(run, x, np.zeros((2, 4, 8, 8), np.float32),
                           np.zeros((2, 4, 8, 7), np.float32))], 2)
    read_only = np.zeros((2, 4, 8, 8), np.float32)
    read_only.flags.writeable = False
    for bad_x, out in [(x.astype(np.float64), np.zeros((2, 4, 8, 8))),   # packed is float32
                       (x[:, :, :, ::-1], np.zeros((2, 4, 8, 8), np.float32)),
                       (x, np.zeros((2, 4, 8, 8), np.float32).transpose(0, 1, 3, 2)),
                       (x, read_only)]:
        with pytest.raises(ValueError, match="must be a C-contiguous"):
            direct.run_chain([(run, bad_x, out, None)], 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        direct.run_chain([(run, x.astype(np.int32), read_only, None)], 2)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("n, threads", [(1, 1), (1, 2), (1, 3), (4, 2)])   # row bands too
@pytest.mark.parametrize("slope", [None, 0.0, 0.1])
@pytest.mark.parametrize("shape", [(3, 28, 28, 6, 5, 2), (6, 14, 14, 16, 5, 0),
                                   (4, 16, 16, 8, 3, 1)])   # LeNet's convs; a dense grid
def test_a_pooled_runner_is_the_conv_then_its_max_pool(shape, slope, n, threads, dtype,
                                                       rtol, rng):
    """The 2x2 max pool computed in the conv's epilogue equals pooling its output."""
    from reference import max_pool2d_reference
    c_in, h, w, c_out, k, pad = shape
    x = rng.normal(size=(n, c_in, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c_in, k, k)).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    x[0, 0, :2, :2] = np.nan                       # NaN wins its windows, as pooling's
    run = direct.forward_runner(x.shape, weight, bias, (pad, pad), threads, slope)
    pooled = run.pooled()
    assert pooled.out_shape == run.out_shape[:2] + (run.out_shape[2] // 2,
                                                    run.out_shape[3] // 2)
    expected = max_pool2d_reference(run(x), (2, 2), (2, 2), (0, 0))
    got = pooled(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
    chained = [np.empty(run.out_shape, dtype), np.empty(pooled.out_shape, dtype)]
    direct.run_chain([(run, x, chained[0], None), (pooled, x, chained[1], None)], threads)
    np.testing.assert_array_equal(chained[1], got)


def test_only_what_commutes_with_the_max_is_pooled_in_the_epilogue(rng):
    weight = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    assert direct.forward_runner((1, 2, 9, 9), weight, None, (1, 1), 1).pooled() is None
    assert direct.forward_runner((1, 2, 8, 8), weight, None, (1, 1), 1, -0.5).pooled() is None
    pooled = direct.forward_runner((1, 2, 8, 8), weight, None, (1, 1), 1).pooled()
    assert pooled.pooled() is None
    x = rng.normal(size=(1, 2, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="no residual"):
        pooled(x, None, np.zeros((1, 4, 4, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, threads", [(8, 1), (9, 2), (17, 3)])
@pytest.mark.parametrize("shape", [(6, 14, 14, 16, 5, 0), (1, 28, 28, 6, 5, 2),
                                   (3, 7, 13, 5, 3, 1), (2, 9, 9, 7, 2, 1)])
@pytest.mark.parametrize("pool", [False, True])
def test_image_lanes_match_one_image_at_a_time(shape, pool, n, threads, dtype, rng):
    """Batches of 8 and more whose output rows are not whole vectors run on image
    lanes (a vector holds one position of 8 images, a group may be short): bitwise
    the image-by-image answer, epilogue and fused pooling included."""
    from reference import max_pool2d_reference
    c_in, h, w, c_out, k, pad = shape
    x = rng.normal(size=(n, c_in, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c_in, k, k)).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    x[n - 1, 0, :3, :3] = np.nan                  # NaN stays in its own image
    run = direct.forward_runner(x.shape, weight, bias, (pad, pad), threads, 0.1)
    one = direct.forward_runner((1,) + x.shape[1:], weight, bias, (pad, pad), 1, 0.1)
    if pool:
        run, one = run.pooled(), one.pooled()
        if run is None:                            # an odd output: nothing to pool
            return
        residual = residual_one = None
    else:
        residual = rng.normal(size=run.out_shape).astype(dtype)
        residual_one = list(residual[:, None])
    got = run(x, None, residual)
    expected = np.concatenate([one(x[i:i + 1], None, None if residual_one is None else
                                   residual_one[i]) for i in range(n)])
    np.testing.assert_array_equal(got, expected)
    # SciPy's FFT correlation would spread the NaN: the last image is left out
    reference = conv2d_reference(np.nan_to_num(x), weight, bias, padding=(pad, pad))
    if pool:
        reference = max_pool2d_reference(reference, (2, 2), (2, 2), (0, 0))
    else:
        reference = reference + residual
    reference = np.where(reference > 0, reference, 0.1 * reference)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got[:-1], reference[:-1], rtol=rtol,
                               atol=rtol * np.abs(reference[:-1]).max())
    assert np.isnan(got[-1]).any() and not np.isnan(got[-1]).all()
