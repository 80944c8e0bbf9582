"""Convolution kernels against the SciPy reference, adjoint identities and finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastdl.kernels import conv
from fastdl.shapes import conv_output_size
from reference import conv2d_reference, finite_difference_vjp

# (N, C_in, H, W, C_out, k, stride, padding, dilation, groups)
CASES = [
    (2, 3, 7, 9, 4, 3, 1, 1, 1, 1),     # non-square, padding
    (1, 4, 8, 6, 6, 3, 2, 2, 2, 2),     # batch 1, stride 2, padding k-1, dilation 2, groups
    (3, 4, 5, 5, 4, 3, 1, 0, 1, 4),     # depthwise
    (2, 6, 6, 7, 4, 1, 1, 0, 1, 2),     # 1x1 grouped (pointwise fast path)
    (1, 2, 9, 9, 3, 2, 3, 1, 1, 1),     # stride > kernel
    (2, 3, 11, 5, 5, 5, 1, 2, 1, 1),    # odd sizes, 5x5
    (2, 4, 6, 6, 8, 1, 2, 0, 1, 1),     # strided 1x1 (goes through im2col)
]


def _arrays(case, dtype, rng):
    n, c, h, w, c_out, k, stride, padding, dilation, groups = case
    x = rng.normal(size=(n, c, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c // groups, k, k)).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    return x, weight, bias, (stride, stride), (padding, padding), (dilation, dilation), groups


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_forward_matches_scipy(case, dtype, rtol, rng):
    x, weight, bias, stride, padding, dilation, groups = _arrays(case, dtype, rng)
    out = conv.conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
    expected = conv2d_reference(x, weight, bias, stride, padding, dilation, groups)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_backward_kernels_are_adjoints_of_forward(case, dtype, rtol, rng):
    """<conv(x, w), g> = <x, grad_input(g)> = <w, grad_weight(x, g)>, against SciPy's conv."""
    x, weight, _, stride, padding, dilation, groups = _arrays(case, dtype, rng)
    forward = conv2d_reference(x, weight, None, stride, padding, dilation, groups)
    grad_out = rng.normal(size=forward.shape).astype(dtype)
    inner = np.sum(forward * grad_out)
    grad_input = conv.conv2d_grad_input(grad_out, weight, x.shape, stride, padding, dilation,
                                        groups)
    grad_weight = conv.conv2d_grad_weight(x, grad_out, weight.shape, stride, padding,
                                          dilation, groups)
    scale = np.sum(np.abs(forward * grad_out))
    assert abs(np.sum(x.astype(np.float64) * grad_input) - inner) <= rtol * scale
    assert abs(np.sum(weight.astype(np.float64) * grad_weight) - inner) <= rtol * scale
    np.testing.assert_allclose(conv.conv2d_grad_bias(grad_out), grad_out.sum(axis=(0, 2, 3)),
                               rtol=rtol)


@pytest.mark.parametrize("case", CASES[:4])
def test_backward_kernels_match_finite_differences(case, rng):
    x, weight, _, stride, padding, dilation, groups = _arrays(case, np.float64, rng)

    def forward(x_, w_):
        return conv2d_reference(x_, w_, None, stride, padding, dilation, groups)
    grad_out = rng.normal(size=forward(x, weight).shape)
    np.testing.assert_allclose(
        conv.conv2d_grad_input(grad_out, weight, x.shape, stride, padding, dilation, groups),
        finite_difference_vjp(forward, [x, weight], grad_out, 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        conv.conv2d_grad_weight(x, grad_out, weight.shape, stride, padding, dilation, groups),
        finite_difference_vjp(forward, [x, weight], grad_out, 1), rtol=1e-6, atol=1e-7)


def test_non_contiguous_input_is_handled(rng):
    base = rng.normal(size=(2, 3, 10, 12))
    x = base[:, :, ::2, 1::2]
    weight = rng.normal(size=(5, 3, 3, 3))[:, :, ::-1]
    out = conv.conv2d_forward(x, weight, None, 1, 1)
    np.testing.assert_allclose(out, conv2d_reference(x, weight, None, (1, 1), (1, 1)),
                               rtol=1e-10)


@pytest.mark.parametrize("groups, output_padding, stride", [(1, 0, 1), (2, 1, 2), (3, 0, 2)])
def test_transposed_conv_is_adjoint_of_conv(groups, output_padding, stride, rng):
    x = rng.normal(size=(2, 6, 4, 5))
    weight = rng.normal(size=(6, 2, 3, 3))  # (C_in, C_out/groups, k, k)
    bias = rng.normal(size=2 * groups)
    out = conv.conv_transpose2d_forward(x, weight, bias, stride, 1, output_padding, groups)
    expected_h = (4 - 1) * stride - 2 + 3 + output_padding
    assert out.shape == (2, 2 * groups, expected_h, (5 - 1) * stride - 2 + 3 + output_padding)
    # conv_transpose(x) is the adjoint of conv with the same weight: <T(x), y> = <x, conv(y)>.
    y = rng.normal(size=out.shape)
    conv_y = conv2d_reference(y, weight, None, (stride, stride), (1, 1), (1, 1), groups)
    assert np.isclose(np.sum((out - bias.reshape(1, -1, 1, 1)) * y), np.sum(x * conv_y),
                      rtol=1e-10)
    grad_x = conv.conv_transpose2d_grad_input(y, weight, stride, 1, groups)
    np.testing.assert_allclose(grad_x, conv_y, rtol=1e-10, atol=1e-12)
    grad_w = conv.conv_transpose2d_grad_weight(x, y, weight.shape, stride, 1, groups)
    assert np.isclose(np.sum(grad_w * weight), np.sum(x * conv_y), rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c_group=st.integers(1, 3), groups=st.integers(1, 2),
       out_group=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       k=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       padding=st.integers(0, 3), seed=st.integers(0, 2 ** 16))
def test_property_random_shapes(n, c_group, groups, out_group, h, w, k, stride, dilation,
                                padding, seed):
    span = dilation * (k - 1) + 1
    if h + 2 * padding < span or w + 2 * padding < span:
        return
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c_group * groups, h, w))
    weight = rng.normal(size=(out_group * groups, c_group, k, k))
    args = ((stride, stride), (padding, padding), (dilation, dilation), groups)
    out = conv.conv2d_forward(x, weight, None, *args)
    assert out.shape[2:] == (conv_output_size(h, k, stride, padding, dilation),
                             conv_output_size(w, k, stride, padding, dilation))
    np.testing.assert_allclose(out, conv2d_reference(x, weight, None, *args), rtol=1e-9,
                               atol=1e-9)
    grad_out = rng.normal(size=out.shape)
    grad_input = conv.conv2d_grad_input(grad_out, weight, x.shape, *args)
    assert np.isclose(np.sum(x * grad_input), np.sum(out * grad_out), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("x_shape, w_shape, kwargs, error, match", [
    ((2, 3, 8), (4, 3, 3, 3), {}, ValueError, "4-D"),
    ((2, 4, 8, 8), (4, 3, 3, 3), {}, ValueError, "weight has 3 input channels per group but "
                                                  "input has 4 channels"),
    ((2, 3, 8, 8), (4, 1, 3, 3), {"groups": 2}, ValueError, "divisible by groups"),
    ((2, 3, 2, 2), (4, 3, 5, 5), {}, ValueError, "larger than the padded input"),
    ((2, 3, 8, 8), (4, 3, 3, 3), {"stride": 0}, ValueError, "stride"),
    ((2, 3, 8, 8), (4, 3, 3, 3), {"dilation": -1}, ValueError, "dilation"),
    ((2, 3, 8, 8), (4, 3, 3, 3), {"padding": -1}, ValueError, "padding"),
    ((2, 3, 8, 8), (4, 3, 3, 3), {"stride": 1.5}, TypeError, "stride"),
])
def test_bad_arguments_raise_before_any_kernel(x_shape, w_shape, kwargs, error, match):
    x, weight = np.zeros(x_shape), np.zeros(w_shape)
    arguments = dict(stride=1, padding=0, dilation=1, groups=1)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        conv.check_conv2d_args("conv2d", x, weight, None, **arguments)


def test_bad_dtypes_raise():
    with pytest.raises(TypeError, match="float32 or float64"):
        conv.check_conv2d_args("conv2d", np.zeros((1, 1, 4, 4), np.int64),
                               np.zeros((1, 1, 3, 3)), None, 1, 0, 1, 1)
    with pytest.raises(TypeError, match="share one dtype"):
        conv.check_conv2d_args("conv2d", np.zeros((1, 1, 4, 4), np.float32),
                               np.zeros((1, 1, 3, 3)), None, 1, 0, 1, 1)


@pytest.mark.parametrize("n, k, s, p, d, expected", [
    (32, 3, 1, 1, 1, 32), (28, 5, 1, 0, 1, 24), (16, 3, 2, 1, 1, 8), (7, 3, 2, 0, 2, 2),
    (1, 1, 1, 0, 1, 1)])
def test_conv_output_size_formula(n, k, s, p, d, expected):
    assert conv_output_size(n, k, s, p, d) == expected
    assert expected == len(range(0, n + 2 * p - d * (k - 1), s))


def test_conv_output_size_rejects_bad_input():
    with pytest.raises(ValueError, match="stride"):
        conv_output_size(8, 3, stride=0)
    with pytest.raises(ValueError, match="exceeds"):
        conv_output_size(2, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_fused_activation_keeps_nan_and_matches_unfused(dtype, slope, rng):
    x = rng.normal(size=(2, 3, 9, 8)).astype(dtype)
    x[0, 0, 4, 4] = np.nan
    weight = rng.normal(size=(4, 3, 3, 3)).astype(dtype)
    bias = rng.normal(size=4).astype(dtype)
    plain = conv.conv2d_forward(x, weight, bias, 1, 1)
    fused = conv.conv2d_forward(x, weight, bias, 1, 1, negative_slope=slope)
    expected = np.where(plain > 0, plain, slope * plain)
    assert np.isnan(fused).sum() == np.isnan(plain).sum() > 0
    np.testing.assert_array_equal(fused, expected)


# Small maps batch several whole images into one GEMM; stride 2 unfolds through each
# row's even and odd pixels. Pads 0-3 (odd and even), odd and even sizes, rectangular
# kernels, groups; batches that leave a short last work item; 2 threads where the
# work is large enough.
IMAGE_CASES = [
    # (N, C_in, H, W, C_out, (kh, kw), stride, padding, groups)
    (5, 3, 9, 8, 4, (3, 3), 2, 1, 1),
    (6, 4, 8, 11, 6, (2, 3), 2, 0, 2),
    (4, 2, 7, 7, 3, (4, 5), 2, 3, 1),
    (7, 5, 10, 9, 2, (3, 1), 2, 2, 1),
    (4, 3, 9, 9, 4, (3, 3), 3, 1, 1),
    (9, 32, 16, 16, 32, (3, 3), 2, 1, 1),
]


@pytest.mark.parametrize("case", IMAGE_CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-5), (np.float64, 1e-11)])
def test_whole_image_items_match_the_reference(case, dtype, rtol, rng):
    from fastdl_ext import conv as compiled
    n, c, h, w, c_out, kernel, stride, padding, groups = case
    x = rng.normal(size=(n, c, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c // groups) + kernel).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    pairs = (stride, stride), (padding, padding), (1, 1)
    expected = conv2d_reference(x, weight, bias, *pairs, groups)
    scale = np.abs(expected).max()
    for images, threads in ((2, 1), (3, 2), (n, 1)):
        out = np.full(expected.shape, np.nan, dtype)
        compiled.conv2d_forward_images_into(x, weight, out, *pairs, groups, images, threads,
                                            bias)
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * scale)
    # the public backward kernels (images batched where the rule says so) through the
    # adjoint identities <conv(x, w), g> = <x, grad_input> = <w, grad_weight>
    grad_out = rng.normal(size=expected.shape).astype(dtype)
    grad_input = conv.conv2d_grad_input(grad_out, weight, x.shape, *pairs, groups)
    grad_weight = conv.conv2d_grad_weight(x, grad_out, weight.shape, *pairs, groups)
    for images, threads in ((2, 1), (3, 2)):
        by_items = np.full(x.shape, np.nan, dtype)   # each item zeroes its own images
        compiled.conv2d_grad_input_images_into(grad_out, weight, by_items, *pairs, groups,
                                               images, threads)
        np.testing.assert_allclose(by_items, grad_input, rtol=rtol, atol=rtol * scale)
    forward = conv2d_reference(x.astype(np.float64), weight.astype(np.float64), None, *pairs,
                               groups)
    inner = np.sum(forward * grad_out)
    total = np.sum(np.abs(forward * grad_out))
    assert abs(np.sum(x.astype(np.float64) * grad_input) - inner) <= rtol * total
    assert abs(np.sum(weight.astype(np.float64) * grad_weight) - inner) <= rtol * total


# one group: the packed-panel forward; maps whose output is whole vectors of positions,
# a vector and a part (the spilled run), and less than one; kernels and strides the
# images path takes (3x3 and 1x1 at stride 2, 5x5 at stride 1)
PACKED_CASES = [
    # (N, C_in, H, W, C_out, (kh, kw), stride, padding)
    (5, 3, 9, 8, 4, (3, 3), 2, 1),
    (4, 2, 7, 7, 3, (4, 5), 2, 3),
    (3, 24, 16, 16, 20, (3, 3), 2, 1),       # 8x8: four vectors
    (3, 10, 14, 14, 17, (3, 3), 2, 1),       # 7x7: three vectors and a part
    (4, 16, 18, 18, 9, (1, 1), 2, 0),        # 9x9 shortcut
    (2, 6, 9, 9, 33, (5, 5), 1, 2),
    (5, 12, 8, 8, 20, (3, 3), 2, 1),         # 4x4: whole vectors, tiles across images
    (4, 6, 16, 16, 9, (3, 3), 2, 1),         # 8x8: four vectors an image, across too
]


@pytest.mark.parametrize("case", PACKED_CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-5), (np.float64, 1e-11)])
def test_packed_panels_forward_matches_the_reference(case, dtype, rtol, rng):
    from fastdl.kernels import pointwise
    from fastdl_ext import conv as compiled
    n, c, h, w, c_out, kernel, stride, padding = case
    x = rng.normal(size=(n, c, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c) + kernel).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    pairs = (stride, stride), (padding, padding), (1, 1)
    expected = conv2d_reference(x, weight, bias, *pairs, 1)
    residual = rng.normal(size=expected.shape).astype(dtype)
    with_residual = expected + residual
    activated = np.where(with_residual > 0, with_residual, 0.1 * with_residual)
    scale = np.abs(activated).max()
    packed = pointwise.pack(weight.reshape(c_out, -1, 1, 1))
    for images, threads in ((2, 1), (3, 2), (n, 1), (1, 2)):
        out = np.full(expected.shape, np.nan, dtype)
        compiled.conv2d_forward_images_into(x, weight, out, *pairs, 1, images, threads, bias,
                                            packed=packed)
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * scale)
        fused = np.full(expected.shape, np.nan, dtype)
        compiled.conv2d_forward_images_into(x, weight, fused, *pairs, 1, images, threads, bias,
                                            residual, True, 0.1, packed)
        np.testing.assert_allclose(fused, activated, rtol=rtol, atol=rtol * scale)
        if images == 2 and threads == 1:
            first = fused
        else:   # each output sums its products in order whatever the items and threads
            np.testing.assert_array_equal(fused, first)
    with pytest.raises(ValueError, match="packed must hold"):
        compiled.conv2d_forward_images_into(x, weight, out, *pairs, 1, 1, 1,
                                            packed=np.ascontiguousarray(packed[:, :-1]))
    with pytest.raises(ValueError, match="for 2 groups"):   # the tiles take one group
        compiled.conv2d_forward_images_into(x, weight, out, *pairs, 2, 1, 1, packed=packed)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 6), c=st.integers(1, 10), c_out=st.integers(1, 20),
       out_size=st.sampled_from([(4, 4), (8, 8), (4, 8), (2, 8), (4, 12)]),
       kernel=st.sampled_from([1, 3, 5]), stride=st.integers(1, 2), padding=st.integers(0, 2),
       images=st.integers(2, 6), threads=st.integers(1, 3), dtype=st.sampled_from(
           [np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_property_tiles_across_images_match_the_reference(n, c, c_out, out_size, kernel,
                                                         stride, padding, images, threads,
                                                         dtype, seed):
    """Outputs of whole vectors an image (16 float32, 8 float64 positions: the tiles run
    across images) against the reference, epilogue included, and bitwise the same as
    items of one image (the tiles within each image)."""
    from fastdl.kernels import pointwise
    from fastdl_ext import conv as compiled
    rng = np.random.default_rng(seed)
    h, w = ((size - 1) * stride + kernel - 2 * padding for size in out_size)
    if min(h, w) < 1:
        return
    x = rng.normal(size=(n, c, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c, kernel, kernel)).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    pairs = (stride, stride), (padding, padding), (1, 1)
    expected = conv2d_reference(x.astype(np.float64), weight.astype(np.float64), bias,
                                *pairs, 1)
    assert expected.shape[2:] == out_size
    residual = rng.normal(size=expected.shape).astype(dtype)
    expected = expected + residual
    expected = np.where(expected > 0, expected, 0.1 * expected)
    packed = pointwise.pack(weight.reshape(c_out, -1, 1, 1))
    results = []
    for count in (min(images, n), 1):
        out = np.full(expected.shape, np.nan, dtype)
        compiled.conv2d_forward_images_into(x, weight, out, *pairs, 1, count, threads, bias,
                                            residual, True, 0.1, packed)
        results.append(out)
    np.testing.assert_allclose(results[0], expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    np.testing.assert_array_equal(results[0], results[1])


def test_pack_lays_out_panels_on_any_thread_count(rng):
    """``pointwise.pack``: ``packed[b, k, r] = weight[b * ROWS + r, k]``, zeros past the
    rows, scaled rows with ``scale``; weights past ``_THREADED_PACK`` are packed by the
    threads, to the same values."""
    from fastdl import runtime
    from fastdl.kernels import pointwise
    rows = pointwise.ROWS
    for m, k in ((13, 7), (515, 600)):
        weight = rng.normal(size=(m, k, 1, 1)).astype(np.float32)
        scale = rng.normal(size=m).astype(np.float32)
        padded = np.zeros((-(-m // rows) * rows, k), np.float32)
        padded[:m] = weight.reshape(m, k)
        expected = padded.reshape(-1, rows, k).transpose(0, 2, 1)
        previous = runtime.get_num_threads()
        runtime.set_num_threads(2)
        try:
            np.testing.assert_array_equal(pointwise.pack(weight), expected)
            scaled = pointwise.pack(weight, scale)
        finally:
            runtime.set_num_threads(previous)
        padded[:m] *= scale[:, None]
        np.testing.assert_array_equal(scaled, padded.reshape(-1, rows, k).transpose(0, 2, 1))
    assert 515 * 600 >= pointwise._THREADED_PACK


def test_images_forward_takes_the_packed_panels_where_they_pay(monkeypatch, rng):
    from fastdl_ext import conv as compiled
    taken = []
    original = compiled.conv2d_forward_images_into

    def recorded(*args, **kwargs):
        taken.append("panels" if kwargs.get("packed") is not None else "OpenBLAS")
        return original(*args, **kwargs)
    monkeypatch.setattr(conv._ext, "conv2d_forward_images_into", recorded)
    weight = rng.normal(size=(128, 8, 3, 3)).astype(np.float32)

    def path(n, size, once=True):
        taken.clear()
        x = rng.normal(size=(n, 8, size, size)).astype(np.float32)
        run = conv.conv2d_runner(x.shape, weight, None, (2, 2), (1, 1), (1, 1), 1, once=once)
        expected = conv2d_reference(x, weight, None, (2, 2), (1, 1), (1, 1), 1)
        np.testing.assert_allclose(run(x), expected, rtol=1e-4,
                                   atol=1e-4 * np.abs(expected).max())
        return taken[-1] if taken else None
    assert path(32, 16) == "panels"                 # 64 positions an image
    assert path(32, 8) == "panels"                  # 16: one vector
    assert path(32, 6) == "OpenBLAS"                # 9: under a vector
    assert path(4, 16) == "OpenBLAS"                # 256 in all, run once
    assert path(4, 16, once=False) == "panels"      # packed once, for every call


@pytest.mark.parametrize("stride", [1, 2])
def test_whole_image_items_on_two_threads_equal_one_thread(stride, rng):
    # many items of one image each, so both threads are inside the loop at once: each
    # item's scratch must be its own thread's (a shared pointer frees twice or mixes
    # two items' columns), and the result must not depend on the thread count
    from fastdl_ext import conv as compiled
    n, c, size, c_out = 32, 64, 16, 64
    x = rng.normal(size=(n, c, size, size)).astype(np.float32)
    weight = rng.normal(size=(c_out, c, 3, 3)).astype(np.float32)
    pairs = (stride, stride), (1, 1), (1, 1)
    out_size = (size - 1) // stride + 1
    grad_out = rng.normal(size=(n, c_out, out_size, out_size)).astype(np.float32)

    def run(threads):
        out = np.empty(grad_out.shape, np.float32)
        compiled.conv2d_forward_images_into(x, weight, out, *pairs, 1, 1, threads)
        grad_input = np.full(x.shape, np.nan, np.float32)
        compiled.conv2d_grad_input_images_into(grad_out, weight, grad_input, *pairs, 1, 1,
                                               threads)
        partial = np.zeros((threads, 1, c * 9, c_out), np.float32)   # (threads, g, K, C_out)
        compiled.conv2d_grad_weight_images_into(x, grad_out, partial, weight.shape, *pairs,
                                                1, 1, threads)
        return out, grad_input, partial.sum(axis=0)[0].T.reshape(weight.shape)
    one = run(1)
    expected = conv2d_reference(x.astype(np.float64), weight.astype(np.float64), None,
                                *pairs, 1)
    np.testing.assert_allclose(one[0], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # the gradients by the adjoint identity <conv(x, w), g> = <x, dx> = <w, dw>
    inner = np.sum(expected * grad_out)
    total = np.sum(np.abs(expected * grad_out))
    assert abs(np.sum(x.astype(np.float64) * one[1]) - inner) <= 1e-5 * total
    assert abs(np.sum(weight.astype(np.float64) * one[2]) - inner) <= 1e-5 * total
    for _ in range(3):
        for single, double in zip(one, run(2)):
            np.testing.assert_allclose(double, single, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(run(2)[0], one[0])
    np.testing.assert_array_equal(run(2)[1], one[1])


@pytest.mark.parametrize("parts, groups, depth, outs", [(1, 1, 27, 6), (2, 1, 2304, 512),
                                                      (3, 2, 17, 33), (2, 3, 16, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_from_parts_sums_in_order_and_turns(parts, groups, depth, outs, dtype, rng):
    """The threads' parts of an im2col weight gradient, summed and turned in tiles: the
    values of NumPy's sum over the parts and transposed copy, for any thread count."""
    from fastdl_ext import conv as compiled
    partial = rng.normal(size=(parts, groups, depth, outs)).astype(dtype)
    expected = partial.sum(axis=0).transpose(0, 2, 1)
    for threads in (1, 2, 3):
        weight = np.full((groups, outs, depth), np.nan, dtype)
        compiled.weight_from_parts_into(partial, weight, threads)
        np.testing.assert_array_equal(weight, expected)
    with pytest.raises(ValueError, match="weight must be"):
        compiled.weight_from_parts_into(partial, np.empty((groups, depth, outs + 1), dtype))


def test_images_per_item_balances_threads():
    # 64 positions of 576 taps: 4 images an item at batch 32 (8 items, 4 a thread)
    assert conv._images_per_item(32, 576, 64, 4, 2) == 4
    assert conv._images_per_item(3, 576, 64, 4, 2) == 1            # an image a thread
    assert conv._images_per_item(1, 576, 64, 4, 2) == 0            # tiles split it
    assert conv._images_per_item(32, 576, 1024, 4, 2) == 0         # over the budget
    assert conv._images_per_item(32, 27, 1024, 4, 2) == 0          # wide enough alone
    assert conv._images_per_item(32, 27, 1024, 4, 2, halves=True) == 8
    assert conv._images_per_item(32, 1, 16, 4, 2, pointwise=True) == 0
    n, threads = 33, 2
    images = conv._images_per_item(n, 576, 64, 4, threads)
    items = -(-n // images)
    assert -(-items // threads) * images <= 18                     # 17 is the ideal


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 12), c_out=st.integers(1, 20),
       h=st.integers(3, 14), w=st.integers(3, 14), kernel=st.sampled_from([1, 2, 3, 5]),
       stride=st.integers(1, 3), padding=st.integers(0, 2), images=st.integers(1, 5),
       threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_property_packed_panels_forward_matches_the_reference(n, c, c_out, h, w, kernel,
                                                              stride, padding, images,
                                                              threads, seed):
    """The packed-panel forward against the reference on random shapes: rows that leave
    a part of a panel, outputs of a part of a vector or several, items of any size."""
    from fastdl.kernels import pointwise
    from fastdl_ext import conv as compiled
    rng = np.random.default_rng(seed)
    if (h + 2 * padding - kernel) < 0 or (w + 2 * padding - kernel) < 0:
        return
    x = rng.normal(size=(n, c, h, w)).astype(np.float32)
    weight = rng.normal(size=(c_out, c, kernel, kernel)).astype(np.float32)
    bias = rng.normal(size=c_out).astype(np.float32)
    pairs = (stride, stride), (padding, padding), (1, 1)
    expected = conv2d_reference(x.astype(np.float64), weight.astype(np.float64), bias,
                                *pairs, 1)
    out = np.full(expected.shape, np.nan, np.float32)
    compiled.conv2d_forward_images_into(
        x, weight, out, *pairs, 1, min(images, n), threads, bias,
        packed=pointwise.pack(weight.reshape(c_out, -1, 1, 1)))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
