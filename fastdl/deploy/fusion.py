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
import copy

import numpy as np

from fastdl.kernels.bn_fold import batch_norm_eval_scale


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
    scale64, mean, beta64 = batch_norm_eval_scale(running_mean, running_var, eps, gamma, beta)
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
    scale64, mean, beta64 = batch_norm_eval_scale(running_mean, running_var, eps, gamma, beta)
    fused_weight = weight.astype(np.float64) * scale64[:, None]
    linear_bias = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, np.float64)
    fused_bias = (linear_bias - mean) * scale64 + beta64
    return fused_weight.astype(weight.dtype), fused_bias.astype(weight.dtype)


def _check_eval_bn(bn, kind):
    if not isinstance(bn, kind):
        raise TypeError("fuse: expected %s, got %s" % (kind.__name__, type(bn).__name__))
    if bn.training:
        raise ValueError("fuse: batch norm must be in eval mode (call .eval()); fusion uses "
                         "the running statistics")
    if bn.running_mean is None:
        raise ValueError("fuse: batch norm has no running statistics")


def fuse_conv_bn(conv, bn):
    """A new Conv2d/ConvTranspose2d equal to ``bn(conv(x))`` in eval mode (gains a bias)."""
    # the layers come in here, so that a service that only loads plans never imports them
    from fastdl.nn import BatchNorm2d, Conv2d, ConvTranspose2d, Parameter
    if not isinstance(conv, (Conv2d, ConvTranspose2d)):
        raise TypeError("fuse_conv_bn: expected a Conv2d or ConvTranspose2d, got %s"
                        % type(conv).__name__)
    _check_eval_bn(bn, BatchNorm2d)
    fused = copy.deepcopy(conv)
    weight, bias = fuse_conv_bn_weights(
        conv.weight.array, None if conv.bias is None else conv.bias.array, bn.running_mean,
        bn.running_var, bn.eps, None if bn.weight is None else bn.weight.array,
        None if bn.bias is None else bn.bias.array,
        transposed=isinstance(conv, ConvTranspose2d), groups=conv.groups)
    fused.weight = Parameter(weight)
    fused.bias = Parameter(bias)
    return fused


def fuse_linear_bn(linear, bn):
    """A new Linear equal to ``bn(linear(x))`` with an eval-mode BatchNorm1d."""
    from fastdl.nn import BatchNorm1d, Linear, Parameter
    if not isinstance(linear, Linear):
        raise TypeError("fuse_linear_bn: expected a Linear, got %s" % type(linear).__name__)
    _check_eval_bn(bn, BatchNorm1d)
    fused = copy.deepcopy(linear)
    weight, bias = fuse_linear_bn_weights(
        linear.weight.array, None if linear.bias is None else linear.bias.array,
        bn.running_mean, bn.running_var, bn.eps,
        None if bn.weight is None else bn.weight.array, None if bn.bias is None else
        bn.bias.array)
    fused.weight, fused.bias = Parameter(weight), Parameter(bias)
    return fused
