"""Convolutions run once on few positions: register tiles over output channels
(``fastdl_ext.conv_channels``) against the SciPy reference, across thread counts."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastdl
import fastdl_ext.conv
import fastdl_ext.conv_channels
from fastdl.kernels import conv, conv_once
from fastdl.shapes import conv_output_size
from reference import conv2d_reference

# (N, C_in, H, W, C_out, k, stride, padding, dilation): ResNet-18's 4x4 stage at batch
# 1, a stride-2 conv and its 1x1 shortcut, dilation, two images, output channels not a
# multiple of the tile's rows, a map smaller than the kernel's reach with padding, a
# depth over one block of the tiles' sums (9 * 40 > 256), 8x8 at batch 1 (64 positions),
# a strided conv of one image with 256 positions, positions not a multiple of 16, a
# pointwise conv with many weights on a 4x4 map at batch 1
CASES = [
    (1, 48, 4, 4, 96, 3, 1, 1, 1),
    (1, 20, 8, 8, 70, 3, 2, 1, 1),
    (1, 24, 8, 8, 64, 1, 2, 0, 1),
    (1, 6, 5, 5, 65, 3, 1, 2, 3),
    (2, 5, 4, 3, 66, 2, 1, 0, 1),
    (1, 3, 2, 2, 64, 5, 1, 2, 1),
    (1, 40, 4, 4, 67, 3, 1, 1, 1),
    (1, 9, 8, 8, 64, 3, 1, 1, 1),
    (1, 7, 32, 32, 64, 3, 2, 1, 1),
    (3, 4, 7, 7, 64, 3, 2, 1, 1),
    (1, 256, 4, 4, 260, 1, 1, 0, 1),
]


def _case(case, dtype, rng):
    n, c_in, h, w, c_out, k, stride, padding, dilation = case
    x = rng.normal(size=(n, c_in, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c_in, k, k)).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    return x, weight, bias, (stride,) * 2, (padding,) * 2, (dilation,) * 2


def _takes_channels(x, weight, stride, padding, dilation):
    run = conv.conv2d_runner(x.shape, weight, None, stride, padding, dilation, once=True)
    return getattr(run, "__qualname__", "").startswith("channels_runner")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
def test_eager_forward_matches_scipy_with_its_epilogue(case, dtype, rtol, slope, rng):
    x, weight, bias, stride, padding, dilation = _case(case, dtype, rng)
    assert _takes_channels(x, weight, stride, padding, dilation)
    expected = conv2d_reference(x, weight, bias, stride, padding, dilation, 1)
    residual = rng.normal(size=expected.shape).astype(dtype)
    plain = conv.conv2d_forward(x, weight, bias, stride, padding, dilation)
    np.testing.assert_allclose(plain, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    fused = conv.conv2d_forward(x, weight, bias, stride, padding, dilation,
                                residual=residual, negative_slope=slope)
    expected = expected + residual
    if slope is not None:
        expected = np.where(expected > 0, expected, slope * expected)
    assert fused.dtype == dtype
    np.testing.assert_allclose(fused, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("case", CASES[:3])
def test_thread_counts_are_bitwise_equal(case, rng):
    x, weight, bias, stride, padding, dilation = _case(case, np.float32, rng)
    before = fastdl.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            fastdl.set_num_threads(threads)
            outs.append(conv.conv2d_forward(x, weight, bias, stride, padding, dilation,
                                            negative_slope=0.0))
    finally:
        fastdl.set_num_threads(before)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_only_runners_used_once_take_it(rng):
    """Plans reuse their runners (the direct loops' packing is then paid once), and
    larger maps, few channels, groups and pointwise convs keep their own paths."""
    x, weight = rng.normal(size=(1, 16, 4, 4)), rng.normal(size=(64, 16, 3, 3))
    pairs = ((1, 1), (1, 1), (1, 1))
    assert _takes_channels(x, weight, *pairs)
    assert _takes_channels(np.zeros((1, 16, 8, 8)), weight, *pairs)           # 64 positions
    plan = conv.conv2d_runner(x.shape, weight, None, *pairs)
    assert not getattr(plan, "__qualname__", "").startswith("channels_runner")
    assert not _takes_channels(np.zeros((1, 16, 9, 9)), weight, *pairs)       # 81 positions
    assert not _takes_channels(np.zeros((2, 16, 8, 8)), weight, *pairs)       # 128 of 2
    strided = ((2, 2), (1, 1), (1, 1))
    assert _takes_channels(np.zeros((1, 16, 32, 32)), weight, *strided)       # 256, one image
    assert not _takes_channels(np.zeros((1, 16, 34, 34)), weight, *strided)   # 289
    assert not _takes_channels(np.zeros((2, 16, 16, 16)), weight, *strided)   # two images
    assert not _takes_channels(np.zeros((1, 16, 32, 32)), weight[:, :, :1, :1],
                               (2, 2), (0, 0), (1, 1))                        # 1x1 kernel
    assert not _takes_channels(x, weight[:63], *pairs)                         # few channels
    many = np.zeros((256, 256, 1, 1))
    unpadded = ((1, 1), (0, 0), (1, 1))
    assert _takes_channels(np.zeros((1, 256, 4, 4)), many, *unpadded)      # pointwise, 16
    assert not _takes_channels(np.zeros((1, 256, 8, 8)), many, *unpadded)  # pointwise, 64
    assert not _takes_channels(np.zeros((1, 255, 4, 4)), many[:, :255], *unpadded)
    assert not _takes_channels(x, weight[:, :, :1, :1], (1, 1), (0, 0), (1, 1))
    assert not conv_once.by_channels(1, 16, (64, 8, 3, 3), (1, 1), (1, 1), 2)


def test_read_only_inputs_give_the_same_bits(rng):
    x, weight, bias, stride, padding, dilation = _case(CASES[1], np.float32, rng)
    residual = rng.normal(size=conv.conv2d_forward(x, weight, None, stride, padding,
                                                   dilation).shape).astype(np.float32)
    expected = conv.conv2d_forward(x, weight, bias, stride, padding, dilation,
                                   residual=residual, negative_slope=0.1)
    for array in (x, weight, bias, residual):
        array.setflags(write=False)
    np.testing.assert_array_equal(conv.conv2d_forward(x, weight, bias, stride, padding,
                                                      dilation, residual=residual,
                                                      negative_slope=0.1), expected)


def test_the_compiled_loops_check_their_shapes():
    cols, weight = np.zeros((9, 32)), np.zeros((64, 9))
    out = np.zeros((1, 64, 20))
    fastdl_ext.conv_channels.conv2d_channels_into(cols, weight, out, 2)
    for bad in ((cols[:8], weight, out), (cols, weight, out[:, :63]),
                (np.zeros((9, 16)), weight, out),            # narrower than N * P
                (np.zeros((9, 24)), weight, out[:, :, :16])):  # not a multiple of 16
        with pytest.raises(ValueError):
            fastdl_ext.conv_channels.conv2d_channels_into(*bad, 2)
    with pytest.raises(ValueError):
        fastdl_ext.conv_channels.conv2d_channels_into(cols, weight, out, 2, bias=np.zeros(63))
    with pytest.raises(ValueError):
        fastdl_ext.conv.unfold_into(np.zeros((1, 2, 4, 4)), np.zeros((17, 16)), (3, 3),
                                    (1, 1), (1, 1), (1, 1), 4, 4)
    with pytest.raises(ValueError):
        fastdl_ext.conv.unfold_into(np.zeros((2, 2, 4, 4)), np.zeros((18, 16)), (3, 3),
                                    (1, 1), (1, 1), (1, 1), 4, 4)
    for out_h, out_w in ((5, 4), (4, 9), (40, 40)):   # not the conv's output: refused
        with pytest.raises(ValueError, match="output size"):
            fastdl_ext.conv.unfold_into(np.zeros((1, 2, 4, 4)), np.zeros((18, 1600)), (3, 3),
                                        (1, 1), (1, 1), (1, 1), out_h, out_w)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_unfold_matches_numpy_windows_with_zero_columns_after(threads, rng):
    """The column matrix of every image side by side, stride 1 and 2 (the halves), with
    padding and dilation, and the columns past N * P zero whatever was there."""
    for stride, padding, dilation in (((1, 1), (1, 1), (1, 1)), ((2, 2), (1, 1), (1, 1)),
                                      ((2, 1), (0, 2), (2, 1)), ((2, 2), (0, 0), (1, 1))):
        x = rng.normal(size=(3, 5, 7, 6))
        out_h = conv_output_size(7, 3, stride[0], padding[0], dilation[0])
        out_w = conv_output_size(6, 3, stride[1], padding[1], dilation[1])
        padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
        expected = np.empty((5, 3, 3, 3, out_h, out_w))
        for i in range(3):
            for j in range(3):
                top, left = i * dilation[0], j * dilation[1]
                expected[:, i, j] = padded[:, :, top:top + stride[0] * (out_h - 1) + 1:stride[0],
                                           left:left + stride[1] * (out_w - 1) + 1:stride[1]
                                           ].transpose(1, 0, 2, 3)
        positions = 3 * out_h * out_w
        cols = np.full((45, positions + 13), np.nan)
        fastdl_ext.conv.unfold_into(x, cols, (3, 3), stride, padding, dilation, out_h, out_w,
                                    threads)
        np.testing.assert_array_equal(cols[:, :positions], expected.reshape(45, positions))
        np.testing.assert_array_equal(cols[:, positions:], 0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c_in=st.integers(1, 6), c_out=st.integers(64, 100),
       size=st.integers(1, 5), k=st.integers(1, 3), stride=st.integers(1, 2),
       padding=st.integers(0, 2), dilation=st.integers(1, 2), seed=st.integers(0, 2 ** 16))
def test_property_random_thin_convs(n, c_in, c_out, size, k, stride, padding, dilation, seed):
    if size + 2 * padding < dilation * (k - 1) + 1:
        return
    positions = conv_output_size(size, k, stride, padding, dilation) ** 2
    if n * positions > conv_once.THIN_COLUMNS:
        return   # (the strided single-image rule is the CASES' and the rule test's)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c_in, size, size))
    weight = rng.normal(size=(c_out, c_in, k, k))
    pairs = ((stride,) * 2, (padding,) * 2, (dilation,) * 2)
    if conv._is_pointwise((k, k), *pairs[:2]):
        return
    assert _takes_channels(x, weight, *pairs)
    np.testing.assert_allclose(conv.conv2d_forward(x, weight, None, *pairs),
                               conv2d_reference(x, weight, None, *pairs, 1),
                               rtol=1e-10, atol=1e-10)
