"""Depthwise convolution (groups == input channels): the direct loops of
kernels/depthwise.py against the SciPy/NumPy references, torch and finite differences."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastdl
import fastdl.functional as F
from fastdl.kernels import conv, depthwise
from fastdl.shapes import conv_output_size
from fastdl.testing import gradcheck
from reference import conv2d_grads_reference, conv2d_reference

TOLERANCES = {np.float32: 1e-5, np.float64: 1e-12}

# (N, C, H, W, multiplier, kernel, stride, padding)
CASES = [
    (3, 5, 7, 9, 1, 3, (1, 1), (1, 1)),      # odd sizes, "same"
    (1, 4, 13, 20, 1, 3, (2, 2), (1, 1)),    # batch 1, stride 2
    (3, 3, 8, 11, 1, 3, (1, 1), (0, 0)),     # valid
    (3, 6, 9, 10, 1, 3, (2, 2), (2, 2)),     # padding 2 at stride 2
    (2, 4, 6, 6, 2, 3, (1, 1), (2, 2)),      # multiplier 2, padding k - 1
    (2, 3, 12, 17, 1, 5, (1, 1), (2, 2)),    # 5x5
    (1, 8, 15, 15, 1, 5, (2, 2), (2, 2)),    # 5x5 stride 2
    (3, 2, 11, 7, 3, 5, (2, 1), (0, 1)),     # per-axis stride and padding, multiplier 3
    (1, 2, 5, 40, 1, 3, (1, 2), (3, 0)),     # padding beyond k - 1 crops the input gradient
]


def _arrays(case, dtype, rng):
    n, c, h, w, multiplier, k = case[:6]
    x = rng.normal(size=(n, c, h, w)).astype(dtype)
    weight = rng.normal(size=(c * multiplier, 1, k, k)).astype(dtype)
    bias = rng.normal(size=c * multiplier).astype(dtype)
    return x, weight, bias


def _out_shape(x, weight, stride, padding):
    return (x.shape[0], weight.shape[0]) + tuple(
        conv_output_size(x.shape[2 + a], weight.shape[2], stride[a], padding[a], 1)
        for a in (0, 1))


def _assert_close(actual, expected, dtype):
    tolerance = TOLERANCES[dtype]
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual, expected, rtol=tolerance,
                               atol=tolerance * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_gradients_match_reference(case, dtype, rng):
    x, weight, bias = _arrays(case, dtype, rng)
    stride, padding, groups = case[6], case[7], x.shape[1]
    assert depthwise.applies(weight.shape, stride, padding, (1, 1), groups, x.shape)
    out = conv.conv2d_forward(x, weight, bias, stride, padding, 1, groups)
    _assert_close(out, conv2d_reference(x, weight, bias, stride, padding, (1, 1), groups),
                  dtype)
    grad_out = rng.normal(size=out.shape).astype(dtype)
    grad_input, grad_weight = conv2d_grads_reference(x, weight, grad_out, stride, padding,
                                                     groups)
    _assert_close(conv.conv2d_grad_input(grad_out, weight, x.shape, stride, padding, 1,
                                         groups), grad_input, dtype)
    _assert_close(conv.conv2d_grad_weight(x, grad_out, weight.shape, stride, padding, 1,
                                          groups), grad_weight, dtype)
    got_weight, got_bias = conv.conv2d_grad_weight_unchecked(x, grad_out, weight.shape, stride,
                                                             padding, (1, 1), groups,
                                                             with_bias=True)
    _assert_close(got_weight, grad_weight, dtype)
    _assert_close(got_bias, grad_out.astype(np.float64).sum(axis=(0, 2, 3)), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_epilogue(dtype, rng):
    x, weight, bias = _arrays((2, 6, 9, 12, 1, 3), dtype, rng)
    reference = conv2d_reference(x, weight, bias, (1, 1), (1, 1), (1, 1), 6)
    residual = rng.normal(size=reference.shape).astype(dtype)
    out = conv.conv2d_forward(x, weight, bias, 1, 1, 1, 6, residual=residual,
                              negative_slope=0.1)
    expected = reference + residual
    _assert_close(out, np.where(expected > 0, expected, 0.1 * expected), dtype)
    relu = F.conv2d_relu(fastdl.Tensor(x), fastdl.Tensor(weight), fastdl.Tensor(bias), 2, 1,
                         1, 6).numpy()
    _assert_close(relu, np.maximum(conv2d_reference(x, weight, bias, (2, 2), (1, 1), (1, 1),
                                                    6), 0), dtype)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_counts_are_bitwise_equal(threads, dtype, rng):
    x, weight, bias = _arrays((3, 37, 19, 21, 1, 3), dtype, rng)
    for stride, padding in [((1, 1), (1, 1)), ((2, 2), (1, 1)), ((2, 1), (2, 0))]:
        run = {t: depthwise.forward_runner(x.shape, weight, bias, stride, padding, t)
               for t in (1, threads)}
        out = run[1](x)
        assert np.array_equal(out, run[threads](x))
        grad_out = rng.normal(size=out.shape).astype(dtype)
        assert np.array_equal(depthwise.grad_input(grad_out, weight, x.shape, stride, padding, 1),
                              depthwise.grad_input(grad_out, weight, x.shape, stride, padding,
                                                   threads))
        one = depthwise.grad_weight(x, grad_out, weight.shape, stride, padding, 1, True)
        many = depthwise.grad_weight(x, grad_out, weight.shape, stride, padding, threads, True)
        assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])


def test_stride_1_same_input_gradients_take_the_forward_loops():
    """A depthwise conv's input gradient runs as the forward of the turned filters where
    that is itself a "same" depthwise conv and the work pays for the chain; elsewhere
    the input-gradient loops."""
    def by_forward(weight_shape, stride, padding, input_shape):
        work = input_shape[0] * weight_shape[0] * input_shape[2] * input_shape[3] * 9
        return conv._depthwise_grad_input_by_forward(weight_shape, stride, padding,
                                                     input_shape, work)
    assert by_forward((8, 1, 3, 3), (1, 1), (1, 1), (8, 8, 16, 16))
    assert by_forward((8, 1, 5, 5), (1, 1), (2, 2), (8, 8, 16, 16))
    assert by_forward((960, 1, 3, 3), (1, 1), (1, 1), (1, 960, 4, 4))    # small map
    assert not by_forward((16, 1, 3, 3), (1, 1), (1, 1), (1, 16, 4, 4))  # little work
    assert not by_forward((576, 1, 3, 3), (1, 1), (1, 1), (1, 576, 8, 8))  # one image
    assert not by_forward((8, 1, 3, 3), (1, 1), (0, 0), (8, 8, 16, 16))  # valid
    assert not by_forward((8, 1, 3, 3), (1, 1), (1, 0), (8, 8, 16, 16))
    assert not by_forward((8, 1, 3, 3), (2, 2), (1, 1), (8, 8, 16, 16))  # strided
    assert not by_forward((16, 1, 3, 3), (1, 1), (1, 1), (8, 8, 16, 16))  # multiplier 2


@pytest.mark.parametrize("shape, kernel", [((8, 96, 16, 16), 3), ((32, 160, 4, 4), 3),
                                           ((9, 24, 32, 32), 3), ((8, 7, 9, 13), 5),
                                           ((1, 960, 4, 4), 3), ((2, 24, 8, 8), 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_gradient_by_the_forward_loops_matches_reference(shape, kernel, dtype, rng):
    """The turned forward (MobileNetV2's map sizes, and odd ones) against the tap-by-tap
    reference, and bitwise the same for 1, 2 and 3 threads."""
    padding = (kernel // 2, kernel // 2)
    x, weight, _ = _arrays(shape + (1, kernel), dtype, rng)
    grad_out = rng.normal(size=_out_shape(x, weight, (1, 1), padding)).astype(dtype)
    expected, _ = conv2d_grads_reference(x, weight, grad_out, (1, 1), padding, shape[1])
    results = []
    before = fastdl.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fastdl.set_num_threads(threads)
            results.append(conv.conv2d_grad_input(grad_out, weight, x.shape, 1, padding, 1,
                                                  shape[1]))
    finally:
        fastdl.set_num_threads(before)
    _assert_close(results[0], expected, dtype)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 10), c=st.integers(2, 40), size=st.sampled_from([2, 3, 4, 5, 8, 11]),
       kernel=st.sampled_from([3, 5]), threads=st.integers(1, 3), double=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_random_batches_through_the_chain_and_channel_blocks_match_reference(
        n, c, size, kernel, threads, double, seed):
    """Random batches, channel counts (blocks of 16 with remainders) and thread counts:
    the input gradient (by the forward's chain from batch 8 or on small maps) and the
    weight gradient (16 channels at a time) against the reference."""
    dtype = np.float64 if double else np.float32
    rng = np.random.default_rng(seed)
    padding = (kernel // 2, kernel // 2)
    x, weight, _ = _arrays((n, c, size, size, 1, kernel), dtype, rng)
    grad_out = rng.normal(size=_out_shape(x, weight, (1, 1), padding)).astype(dtype)
    grad_input, grad_weight = conv2d_grads_reference(x, weight, grad_out, (1, 1), padding, c)
    before = fastdl.get_num_threads()
    try:
        fastdl.set_num_threads(threads)
        _assert_close(conv.conv2d_grad_input(grad_out, weight, x.shape, 1, padding, 1, c),
                      grad_input, dtype)
        _assert_close(conv.conv2d_grad_weight(x, grad_out, weight.shape, 1, padding, 1, c),
                      grad_weight, dtype)
    finally:
        fastdl.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_and_read_only_inputs(dtype, rng):
    x, weight, bias = _arrays((3, 4, 10, 9, 1, 3), dtype, rng)
    expected = conv.conv2d_forward(x, weight, bias, 2, 1, 1, 4)
    grad_out = rng.normal(size=expected.shape).astype(dtype)
    strided_x = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    strided_grad = np.asfortranarray(grad_out)
    frozen = [a.copy() for a in (x, weight, bias, grad_out)]
    for array in frozen:
        array.flags.writeable = False
    for inputs in ((strided_x, weight, bias, strided_grad), frozen):
        assert np.array_equal(conv.conv2d_forward(inputs[0], inputs[1], inputs[2], 2, 1, 1, 4),
                              expected)
        assert np.array_equal(
            conv.conv2d_grad_input(inputs[3], inputs[1], x.shape, 2, 1, 1, 4),
            conv.conv2d_grad_input(grad_out, weight, x.shape, 2, 1, 1, 4))
        assert np.array_equal(
            conv.conv2d_grad_weight(inputs[0], inputs[3], weight.shape, 2, 1, 1, 4),
            conv.conv2d_grad_weight(x, grad_out, weight.shape, 2, 1, 1, 4))
    assert np.array_equal(frozen[0], x) and np.array_equal(frozen[3], grad_out)


def test_inf_in_columns_no_output_reads(rng):
    """The weight gradient's whole-vector tails read zeros, never an unread inf."""
    x, weight, _ = _arrays((2, 3, 6, 6, 1, 3), np.float32, rng)
    x[:, :, :, 5] = np.inf   # stride 2, no padding: column 5 is read by no output
    grad_out = rng.normal(size=_out_shape(x, weight, (2, 2), (0, 0))).astype(np.float32)
    grad_weight = conv.conv2d_grad_weight(x, grad_out, weight.shape, 2, 0, 1, 3)
    x[:, :, :, 5] = 0
    assert np.array_equal(grad_weight, conv.conv2d_grad_weight(x, grad_out, weight.shape, 2, 0,
                                                               1, 3))


@pytest.mark.parametrize("stride, padding, kernel", [(1, 1, 3), (2, 1, 3), (2, 2, 5),
                                                     (1, 0, 3)])
def test_gradcheck_through_conv2d(stride, padding, kernel, rng):
    x = fastdl.Tensor(rng.normal(size=(2, 3, 7, 6)), requires_grad=True)
    weight = fastdl.Tensor(rng.normal(size=(6, 1, kernel, kernel)), requires_grad=True)
    bias = fastdl.Tensor(rng.normal(size=6), requires_grad=True)
    assert gradcheck(lambda a, b, c: F.conv2d(a, b, c, stride, padding, 1, 3), [x, weight, bias])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, padding, kernel, multiplier, batch",
                         list(itertools.product([1, 2], [0, 1, 2], [3, 5], [1, 2], [1, 3]))[::3])
def test_matches_torch(dtype, stride, padding, kernel, multiplier, batch, rng):
    torch = pytest.importorskip("torch")
    channels = 5
    x, weight, bias = _arrays((batch, channels, 11, 14, multiplier, kernel), dtype, rng)
    inputs = [fastdl.Tensor(a, requires_grad=True) for a in (x, weight, bias)]
    peers = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    out = F.conv2d(*inputs, stride, padding, 1, channels)
    peer = torch.nn.functional.conv2d(*peers, stride, padding, 1, channels)
    grad_out = rng.normal(size=out.shape).astype(dtype)
    out.backward(grad_out)
    peer.backward(torch.tensor(grad_out))
    _assert_close(out.numpy(), peer.detach().numpy(), dtype)
    for mine, theirs in zip(inputs, peers):
        _assert_close(mine.grad, theirs.grad.numpy(), dtype)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(2, 9), h=st.integers(1, 23), w=st.integers(1, 37),
       multiplier=st.integers(1, 2), kernel=st.sampled_from([3, 5]),
       stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
       double=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_random_shapes_match_reference(n, c, h, w, multiplier, kernel, stride, padding,
                                       double, seed):
    if h + 2 * padding[0] < kernel or w + 2 * padding[1] < kernel:
        return
    dtype = np.float64 if double else np.float32
    rng = np.random.default_rng(seed)
    x, weight, bias = _arrays((n, c, h, w, multiplier, kernel), dtype, rng)
    out = conv.conv2d_forward(x, weight, bias, stride, padding, 1, c)
    _assert_close(out, conv2d_reference(x, weight, bias, stride, padding, (1, 1), c), dtype)
    grad_out = rng.normal(size=out.shape).astype(dtype)
    grad_input, grad_weight = conv2d_grads_reference(x, weight, grad_out, stride, padding, c)
    _assert_close(conv.conv2d_grad_input(grad_out, weight, x.shape, stride, padding, 1, c),
                  grad_input, dtype)
    _assert_close(conv.conv2d_grad_weight(x, grad_out, weight.shape, stride, padding, 1, c),
                  grad_weight, dtype)


def test_depthwise_transposed_conv_matches_reference(rng):
    """conv_transpose2d with groups == channels is the depthwise conv's input gradient."""
    x = rng.normal(size=(2, 4, 5, 6))
    weight = rng.normal(size=(4, 1, 3, 3))
    out = F.conv_transpose2d(fastdl.Tensor(x), fastdl.Tensor(weight), None, 2, 1, 1, 4).numpy()
    expected, _ = conv2d_grads_reference(np.zeros((2, 4) + out.shape[2:]), weight, x, (2, 2),
                                         (1, 1), 4)
    _assert_close(out, expected, np.float64)


def test_other_convs_keep_their_paths():
    assert not depthwise.applies((6, 1, 5, 5), (1, 1), (0, 0), (1, 1), 1, (64, 1, 28, 28))
    assert not depthwise.applies((8, 2, 3, 3), (1, 1), (1, 1), (1, 1), 4, (2, 8, 9, 9))
    assert not depthwise.applies((8, 1, 3, 3), (1, 1), (1, 1), (2, 2), 8, (2, 8, 9, 9))
    assert not depthwise.applies((8, 1, 3, 3), (3, 3), (1, 1), (1, 1), 8, (2, 8, 9, 9))
    assert not depthwise.applies((8, 1, 7, 7), (1, 1), (3, 3), (1, 1), 8, (2, 8, 9, 9))
