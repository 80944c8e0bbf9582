"""Fold eval-mode batch normalisation into the preceding convolution or linear layer.

Two levels, as in torch: functions on arrays (``fuse_conv_bn_weights``,
``fuse_linear_bn_weights``) under functions on modules (``fuse_conv_bn``,
``fuse_linear_bn``).

With running statistics ``mean``, ``var`` and affine ``gamma``, ``beta``,
eval-mode BN computes ``gamma * (z - mean) / sqrt(var + eps) + beta``. For
``z = w * x + b`` that is a convolution with

    w' = w * scale,   b' = (b - mean) * scale + beta,   scale = gamma / sqrt(var + eps)

where ``scale`` multiplies each *output channel* of ``w``. For a convolution
that is axis 0 of ``(C_out, C_in/groups, kH, kW)``; for a transposed
convolution the weight is ``(C_in, C_out/groups, kH, kW)`` and output channel
``g * C_out/groups + j`` lives at axis 1 of group ``g``'s block of rows — the
axis other libraries got wrong (pytorch#180995, ultralytics#25364).
"""
import numpy as np


def _bn_scale(running_mean, running_var, eps, gamma, beta):
    """Float64 ``(scale, mean, beta)`` with eval-mode BN equal to ``(z - mean)*scale + beta``."""
    mean = np.asarray(running_mean, dtype=np.float64)
    var = np.asarray(running_var, dtype=np.float64)
    gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma, dtype=np.float64)
    beta = np.zeros_like(mean) if beta is None else np.asarray(beta, dtype=np.float64)
    return gamma / np.sqrt(var + eps), mean, beta


def fuse_conv_bn_weights(weight, bias, running_mean, running_var, eps, gamma=None, beta=None,
                         transposed=False, groups=1):
    """Fold eval-mode BN statistics into convolution weights.

    Parameters
    ----------
    weight : ndarray
        ``(C_out, C_in/groups, kH, kW)``, or ``(C_in, C_out/groups, kH, kW)``
        when ``transposed``.
    bias : ndarray of shape (C_out,) or None
        None (a conv built with ``bias=False``) gains a bias.
    running_mean, running_var : ndarray of shape (C_out,)
    eps : float
    gamma, beta : ndarray of shape (C_out,) or None
        None for a non-affine BN.
    transposed : bool
    groups : int

    Returns
    -------
    fused_weight, fused_bias : ndarray
        Same dtype as ``weight``; the computation is carried in float64.
    """
    weight = np.asarray(weight)
    out_channels = running_mean.shape[0]
    scale64, mean, beta64 = _bn_scale(running_mean, running_var, eps, gamma, beta)
    if transposed:
        in_channels, out_per_group = weight.shape[0], weight.shape[1]
        if out_per_group * groups != out_channels:
            raise ValueError("fuse_conv_bn_weights: transposed weight %s with groups=%d has "
                             "%d output channels, BN has %d"
                             % (weight.shape, groups, out_per_group * groups, out_channels))
        grouped = weight.astype(np.float64).reshape(groups, in_channels // groups,
                                                    out_per_group, *weight.shape[2:])
        grouped = grouped * scale64.reshape(groups, 1, out_per_group, 1, 1)
        fused_weight = grouped.reshape(weight.shape)
    else:
        if weight.shape[0] != out_channels:
            raise ValueError("fuse_conv_bn_weights: weight has %d output channels, BN has %d"
                             % (weight.shape[0], out_channels))
        fused_weight = weight.astype(np.float64) * scale64.reshape(-1, 1, 1, 1)
    conv_bias = np.zeros(out_channels) if bias is None else np.asarray(bias, np.float64)
    fused_bias = (conv_bias - mean) * scale64 + beta64
    return fused_weight.astype(weight.dtype), fused_bias.astype(weight.dtype)


def fuse_linear_bn_weights(weight, bias, running_mean, running_var, eps, gamma=None,
                           beta=None):
    """Fold eval-mode BatchNorm1d statistics into a linear layer ``(out, in)`` weight.

    Returns
    -------
    fused_weight : ndarray of shape (out, in)
    fused_bias : ndarray of shape (out,)
    """
    weight = np.asarray(weight)
    if weight.shape[0] != running_mean.shape[0]:
        raise ValueError("fuse_linear_bn_weights: weight has %d output features, BN has %d"
                         % (weight.shape[0], running_mean.shape[0]))
    scale64, mean, beta64 = _bn_scale(running_mean, running_var, eps, gamma, beta)
    fused_weight = weight.astype(np.float64) * scale64[:, None]
    linear_bias = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, np.float64)
    fused_bias = (linear_bias - mean) * scale64 + beta64
    return fused_weight.astype(weight.dtype), fused_bias.astype(weight.dtype)
