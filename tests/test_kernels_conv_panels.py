"""Pointwise convs run once on weights packed in panels (``kernels.pointwise``'s tiles,
``conv_once.by_panels``): forward with its epilogue and input gradient against the SciPy
reference, bitwise across thread counts, and the rule that picks them."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastdl
from fastdl.kernels import conv, conv_once, pointwise
from reference import conv2d_reference

# (N, C_in, H, W, C_out): MobileNetV2's narrowing and widening convs, a map that is
# not a multiple of the tiles' vectors, output channels not a multiple of a panel
CASES = [(32, 144, 8, 8, 24), (16, 32, 8, 8, 192), (16, 96, 7, 9, 25), (2, 40, 16, 17, 160)]


def _panels(shape, weight):
    run = conv.conv2d_runner(shape, weight, None, (1, 1), (0, 0), (1, 1), once=True)
    return isinstance(getattr(run, "layer", None), pointwise.PointwiseLayer)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_forward_and_input_gradient_match_scipy(case, dtype, rtol, rng):
    n, c_in, h, w, c_out = case
    x = rng.normal(size=(n, c_in, h, w)).astype(dtype)
    weight = rng.normal(size=(c_out, c_in, 1, 1)).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    assert _panels(x.shape, weight)
    expected = conv2d_reference(x, weight, bias, (1, 1), (0, 0), (1, 1), 1)
    residual = rng.normal(size=expected.shape).astype(dtype)
    got = conv.conv2d_forward(x, weight, bias, residual=residual, negative_slope=0.1)
    expected = expected + residual
    expected = np.where(expected > 0, expected, 0.1 * expected)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    grad_out = rng.normal(size=expected.shape).astype(dtype)
    grad_input = conv.conv2d_grad_input(grad_out, weight, x.shape)
    expected_grad = np.einsum("nmhw,mk->nkhw", grad_out.astype(np.float64),
                              weight[:, :, 0, 0].astype(np.float64))
    np.testing.assert_allclose(grad_input, expected_grad, rtol=rtol,
                               atol=rtol * np.abs(expected_grad).max())


def test_the_input_gradient_of_a_widening_conv_is_a_narrowing_one_on_panels(rng,
                                                                            monkeypatch):
    layers = []
    chain_runner = conv_once.chain_runner

    def spy(layer, threads):
        layers.append(layer)
        return chain_runner(layer, threads)
    monkeypatch.setattr(conv_once, "chain_runner", spy)
    weight = rng.normal(size=(192, 32, 1, 1))
    conv.conv2d_grad_input(rng.normal(size=(16, 192, 8, 8)), weight, (16, 32, 8, 8))
    assert len(layers) == 1 and isinstance(layers[0], pointwise.PointwiseLayer)
    assert layers[0].out_shape == (16, 32, 8, 8)


def test_thread_counts_are_bitwise_equal(rng):
    x = rng.normal(size=(32, 144, 8, 8)).astype(np.float32)
    weight = rng.normal(size=(24, 144, 1, 1)).astype(np.float32)
    grad_out = rng.normal(size=(32, 24, 8, 8)).astype(np.float32)
    wide = rng.normal(size=(144, 24, 1, 1)).astype(np.float32)   # its input gradient
    before = fastdl.get_num_threads()
    outs, grads = [], []
    try:
        for threads in (1, 2, 3, 4):
            fastdl.set_num_threads(threads)
            outs.append(conv.conv2d_forward(x, weight, negative_slope=0.0))
            grads.append(conv.conv2d_grad_input(x, wide, grad_out.shape))
    finally:
        fastdl.set_num_threads(before)
    for out, grad in zip(outs[1:], grads[1:]):
        np.testing.assert_array_equal(out, outs[0])
        np.testing.assert_array_equal(grad, grads[0])


def test_only_far_from_square_pointwise_convs_with_enough_work_take_them():
    weight = np.zeros((24, 144, 1, 1), np.float32)
    assert _panels((32, 144, 8, 8), weight)
    assert not _panels((4, 144, 8, 8), weight)                        # 256 positions
    assert not _panels((64, 144, 1, 1), weight)                       # 1x1 maps
    assert not _panels((32, 96, 8, 8), np.zeros((96, 96, 1, 1), np.float32))   # square
    assert not _panels((32, 16, 32, 32), np.zeros((96, 16, 1, 1), np.float32))  # 16 in
    assert conv_once.by_panels(32, 64, (24, 144, 1, 1), (1, 1), (0, 0), 1)
    assert not conv_once.by_panels(32, 64, (24, 144, 1, 1), (1, 1), (0, 0), 2)   # groups
    assert not conv_once.by_panels(32, 64, (24, 144, 1, 1), (2, 2), (0, 0), 1)   # strided
    assert not conv_once.by_panels(16, 32, (24, 144, 1, 1), (1, 1), (0, 0), 1)   # 1.8M MACs
    plan = conv.conv2d_runner((32, 144, 8, 8), weight, None, (1, 1), (0, 0), (1, 1))
    assert not hasattr(plan, "layer")


@pytest.mark.parametrize("shape, c_out", [((8, 96, 16, 16), 96), ((3, 20, 5, 7), 24)])
def test_pointwise_input_gradient_writes_every_value_of_unzeroed_memory(shape, c_out, rng,
                                                                        monkeypatch):
    """The GEMM tiles of a pointwise conv's input gradient write all of it: it is not
    zeroed first, whatever the memory held."""
    def dirty_empty(shape, dtype=float):
        return np.full(shape, np.nan, dtype=dtype)
    monkeypatch.setattr(conv.np, "empty", dirty_empty)
    grad_out = rng.normal(size=(shape[0], c_out) + shape[2:]).astype(np.float32)
    weight = rng.normal(size=(c_out, shape[1], 1, 1)).astype(np.float32)
    assert not conv_once.by_panels(shape[0], shape[2] * shape[3], (shape[1], c_out, 1, 1),
                                   (1, 1), (0, 0), 1)
    grad_input = conv.conv2d_grad_input(grad_out, weight, shape)
    expected = np.einsum("nmhw,mk->nkhw", grad_out.astype(np.float64),
                         weight[:, :, 0, 0].astype(np.float64))
    np.testing.assert_allclose(grad_input, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_eager_paths_run_concurrently_from_python_threads(rng):
    """Each eager call builds its own one-step chain or tile scratch: calls from several
    Python threads at once give the single-threaded bits (depthwise chain, pointwise
    panels, few-position tiles)."""
    import threading
    cases = [(rng.normal(size=(8, 48, 16, 16)).astype(np.float32),
              rng.normal(size=(48, 1, 3, 3)).astype(np.float32), 48),
             (rng.normal(size=(16, 144, 8, 8)).astype(np.float32),
              rng.normal(size=(24, 144, 1, 1)).astype(np.float32), 1),
             (rng.normal(size=(1, 64, 4, 4)).astype(np.float32),
              rng.normal(size=(96, 64, 3, 3)).astype(np.float32), 1)]

    def forward(x, weight, groups):
        padding = weight.shape[2] // 2
        return conv.conv2d_forward(x, weight, None, 1, padding, 1, groups)
    expected = [forward(*case) for case in cases]
    mismatches = []

    def work():
        for _ in range(10):
            for case, want in zip(cases, expected):
                if not np.array_equal(forward(*case), want):
                    mismatches.append(case[1].shape)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not mismatches


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["depthwise", "panels", "tiles"]), n=st.integers(1, 4),
       size=st.integers(2, 9), channels=st.integers(32, 64), factor=st.integers(2, 4),
       widen=st.booleans(), stride=st.integers(1, 2), slope=st.sampled_from([None, 0.0, 0.1]),
       with_residual=st.booleans(), double=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_property_random_eager_paths_match_scipy_at_any_thread_count(
        kind, n, size, channels, factor, widen, stride, slope, with_residual, double, seed):
    """Random convs of each path a conv run once takes (the depthwise chain, pointwise
    panels, few-position tiles), against the SciPy reference (NumPy's einsum for the
    pointwise convs), and the same bits for 1 to 4 threads."""
    dtype = np.float64 if double else np.float32
    rng = np.random.default_rng(seed)
    groups, padding = 1, 0
    if kind == "depthwise":
        weight_shape, groups, padding = (channels, 1, 3, 3), channels, 1
    elif kind == "panels":
        n, stride = n * 8, 1          # enough positions in all for the panels
        other = channels * factor if widen else max(1, channels // factor)
        weight_shape = (other, channels, 1, 1)
    else:
        n, size = 1, min(size, 8)     # 64 positions or fewer
        weight_shape, padding = (64 + channels, channels // 4, 3, 3), 1
    x = rng.normal(size=(n, weight_shape[1] * groups, size, size)).astype(dtype)
    weight = rng.normal(size=weight_shape).astype(dtype)
    bias = rng.normal(size=weight_shape[0]).astype(dtype)
    if kind == "panels":
        expected = (np.einsum("nkhw,mk->nmhw", x.astype(np.float64),
                              weight[:, :, 0, 0].astype(np.float64))
                    + bias[None, :, None, None])
    else:
        expected = conv2d_reference(x, weight, bias, (stride,) * 2, (padding,) * 2, (1, 1),
                                    groups)
    residual = rng.normal(size=expected.shape).astype(dtype) if with_residual else None
    if residual is not None:
        expected = expected + residual
    if slope is not None:
        expected = np.where(expected > 0, expected, slope * expected)
    before = fastdl.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3, 4):
            fastdl.set_num_threads(threads)
            outs.append(conv.conv2d_forward(x, weight, bias, stride, padding, 1, groups,
                                            residual=residual, negative_slope=slope))
    finally:
        fastdl.set_num_threads(before)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(outs[0], expected, rtol=rtol,
                               atol=rtol * max(1.0, np.abs(expected).max()))
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
