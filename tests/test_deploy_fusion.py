"""Conv/linear–BN folding against the unfused pair computed independently with SciPy."""
import numpy as np
import pytest
from scipy import signal

from fastdl.deploy.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights


def reference_conv2d(x, weight, bias, groups):
    """Stride-1, unpadded grouped cross-correlation via scipy.signal.correlate."""
    n, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    out_per_group = c_out // groups
    out = np.zeros((n, c_out, h - kh + 1, w - kw + 1))
    for image in range(n):
        for oc in range(c_out):
            g = oc // out_per_group
            for ic in range(c_in_g):
                out[image, oc] += signal.correlate(x[image, g * c_in_g + ic], weight[oc, ic],
                                                   mode="valid")
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def reference_conv_transpose2d(x, weight, groups):
    """Stride-1 transposed conv: scatter each input pixel through the kernel."""
    n, c_in, h, w = x.shape
    _, out_per_group, kh, kw = weight.shape
    in_per_group = c_in // groups
    out = np.zeros((n, out_per_group * groups, h + kh - 1, w + kw - 1))
    for image in range(n):
        for ic in range(c_in):
            g = ic // in_per_group
            for j in range(out_per_group):
                out[image, g * out_per_group + j] += signal.convolve(x[image, ic], weight[ic, j])
    return out


def eval_batch_norm(z, mean, var, eps, gamma, beta):
    shape = (1, -1) + (1,) * (z.ndim - 2)
    y = (z - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if gamma is not None:
        y = y * gamma.reshape(shape) + beta.reshape(shape)
    return y


def random_bn(rng, channels, affine):
    mean = rng.normal(size=channels)
    var = rng.uniform(0.1, 3.0, size=channels)
    gamma = rng.normal(size=channels) if affine else None
    beta = rng.normal(size=channels) if affine else None
    return mean, var, gamma, beta


@pytest.mark.parametrize("groups, c_in, c_out, has_bias, affine, eps", [
    (1, 3, 4, True, True, 1e-5),
    (1, 3, 4, False, True, 1e-3),     # bias=False conv gains a bias
    (2, 4, 6, True, True, 1e-5),      # grouped
    (4, 4, 4, False, True, 1e-5),     # depthwise
    (1, 2, 3, True, False, 0.1),      # non-affine BN
])
def test_conv_bn_fusion_equals_unfused_pair(rng, groups, c_in, c_out, has_bias, affine, eps):
    x = rng.normal(size=(2, c_in, 6, 5))
    weight = rng.normal(size=(c_out, c_in // groups, 3, 3))
    bias = rng.normal(size=c_out) if has_bias else None
    mean, var, gamma, beta = random_bn(rng, c_out, affine)
    expected = eval_batch_norm(reference_conv2d(x, weight, bias, groups), mean, var, eps,
                               gamma, beta)
    fused_w, fused_b = fuse_conv_bn_weights(weight, bias, mean, var, eps, gamma, beta,
                                            groups=groups)
    np.testing.assert_allclose(reference_conv2d(x, fused_w, fused_b, groups), expected,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("groups, c_in, out_per_group", [(1, 3, 4), (2, 4, 3), (3, 3, 1)])
def test_transposed_conv_bn_fusion_scales_axis_one_per_group(rng, groups, c_in, out_per_group):
    x = rng.normal(size=(1, c_in, 4, 3))
    weight = rng.normal(size=(c_in, out_per_group, 2, 3))
    c_out = out_per_group * groups
    bias = rng.normal(size=c_out)
    mean, var, gamma, beta = random_bn(rng, c_out, affine=True)
    unfused = reference_conv_transpose2d(x, weight, groups) + bias.reshape(1, -1, 1, 1)
    expected = eval_batch_norm(unfused, mean, var, 1e-5, gamma, beta)
    fused_w, fused_b = fuse_conv_bn_weights(weight, bias, mean, var, 1e-5, gamma, beta,
                                            transposed=True, groups=groups)
    got = reference_conv_transpose2d(x, fused_w, groups) + fused_b.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_float32_fusion_keeps_dtype_and_accuracy(rng):
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    mean, var, gamma, beta = (a.astype(np.float32) for a in random_bn(rng, 4, True))
    fused_w, fused_b = fuse_conv_bn_weights(weight, None, mean, var, 1e-5, gamma, beta)
    assert fused_w.dtype == fused_b.dtype == np.float32
    x = rng.normal(size=(1, 3, 5, 5))
    expected = eval_batch_norm(reference_conv2d(x, weight.astype(np.float64), None, 1),
                               mean, var, 1e-5, gamma, beta)
    np.testing.assert_allclose(reference_conv2d(x, fused_w, fused_b, 1), expected, rtol=1e-5,
                               atol=1e-5)


def test_linear_bn_fusion(rng):
    x = rng.normal(size=(5, 7))
    weight, bias = rng.normal(size=(3, 7)), rng.normal(size=3)
    mean, var, gamma, beta = random_bn(rng, 3, True)
    expected = eval_batch_norm(x @ weight.T + bias, mean, var, 1e-5, gamma, beta)
    fused_w, fused_b = fuse_linear_bn_weights(weight, bias, mean, var, 1e-5, gamma, beta)
    np.testing.assert_allclose(x @ fused_w.T + fused_b, expected, rtol=1e-12)


def test_channel_mismatch_raises(rng):
    with pytest.raises(ValueError, match="output channels"):
        fuse_conv_bn_weights(rng.normal(size=(4, 3, 3, 3)), None, np.zeros(5), np.ones(5), 1e-5)
    with pytest.raises(ValueError, match="output features"):
        fuse_linear_bn_weights(rng.normal(size=(4, 3)), None, np.zeros(5), np.ones(5), 1e-5)
