"""Direct convolution (few output channels) against the SciPy reference: when it applies,
the packed weights, one conv forward (epilogue, thread counts, row bands, strides, a
fused 2x2 max pool, image lanes) and the weight gradient; chains of convs are in
``test_kernels_direct_chain.py``, what a chain runs after them in
``test_kernels_direct_head.py``, Winograd's layers in ``test_kernels_direct_winograd.py``.

The same cases also run with the direct path switched off, so im2col + GEMM's
forward keeps its coverage for the shapes the direct loop now takes.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastdl.kernels import conv, direct
from reference import conv2d_reference

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


def test_few_tiles_stay_direct_unless_their_channels_are_many():
    """Below ``MIN_WINOGRAD_TILES`` a stride-1 3x3 conv runs direct, except where its tiles
    times its fewer channels reach ``MIN_WINOGRAD_TILE_CHANNELS`` on ``MIN_FEW_TILES``
    tiles or more (Winograd's products then pay for its transformed weights)."""
    def takes_direct(n, channels, size):
        return direct.applies((channels, channels, 3, 3), (1, 1), (1, 1), 1,
                              (n, channels, size, size), (1, 1))
    assert takes_direct(1, 512, 4)          # 4 tiles
    assert not takes_direct(2, 512, 4)      # 8 tiles x 512
    assert takes_direct(2, 128, 4)          # 8 x 128 = 1024
    assert not takes_direct(1, 256, 8)      # 16 x 256
    assert takes_direct(1, 64, 8)           # 16 x 64
    assert not takes_direct(2, 64, 8)       # 32 x 64 = 2048
    assert not takes_direct(16, 64, 8)      # MIN_WINOGRAD_TILES
    assert takes_direct(64, 32, 32)         # few channels: direct at any tile count


@pytest.mark.parametrize("n, channels, size", [(2, 64, 8), (1, 128, 8), (3, 80, 6)])
def test_few_tiles_with_many_channels_match_the_reference(n, channels, size, rng):
    """The convs this rule sends to Winograd: forward (bias, residual, ReLU) against
    SciPy, and the input gradient against the adjoint identity <conv(x), g> = <x, dx>
    with the reference forward."""
    x = rng.normal(size=(n, channels, size, size)).astype(np.float32)
    weight = (rng.normal(size=(channels, channels, 3, 3)) / 20).astype(np.float32)
    bias = rng.normal(size=channels).astype(np.float32)
    residual = rng.normal(size=x.shape).astype(np.float32)
    assert not direct.applies(weight.shape, (1, 1), (1, 1), 1, x.shape, (1, 1))
    expected = np.maximum(conv2d_reference(x, weight, bias, padding=(1, 1)) + residual, 0)
    out = conv.conv2d_forward(x, weight, bias, padding=1, residual=residual,
                              negative_slope=0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    grad_out = rng.normal(size=x.shape).astype(np.float32)
    grad_input = conv.conv2d_grad_input(grad_out, weight, x.shape, 1, 1)
    probe = rng.normal(size=x.shape)
    forward = conv2d_reference(probe, weight.astype(np.float64), padding=(1, 1))
    np.testing.assert_allclose(np.vdot(probe, grad_input), np.vdot(forward, grad_out),
                               rtol=1e-4)


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
