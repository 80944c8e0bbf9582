"""What a chain of direct convs runs after its convs, in the same call: a classifier
head (the global mean, then a dense layer) at small batches, dense layers in the
parallel region from 4 images on."""
import numpy as np
import pytest

from fastdl.kernels import dense, direct
from fastdl_ext.pool import global_mean_into
from reference import stored_layout


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
