"""Differentiable batch, layer, group and instance normalisation; ``normalize`` (Lp) and
``local_response_norm``.

The four differ only in the kernels they call; one ``Function`` pattern
serves them: the forward saves its input with the statistics it used (``mean``,
``inv_std``; the kernels recompute ``x_hat`` rather than store it), and the
backward asks the kernel for exactly the gradients needed.
"""
import numbers

import numpy as np

from fastdl import tensor_deferred
from fastdl._checks import is_int
from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, contiguous, data_of
from fastdl.functional.padding import pad
from fastdl.functional.pooling import avg_pool2d
from fastdl.kernels import norm as kernels
from fastdl.kernels.bn_fold import batch_norm_eval_scale


class _Normalization(Function):
    """Inputs: (x, weight, bias); subclasses bind ``_forward``/``_backward``."""

    new_grads = True   # the kernels allocate every gradient they return

    @staticmethod
    def backward(ctx, grad):
        x, mean, inv_std, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        return ctx.backward_kernel(contiguous(grad), x, mean, inv_std, weight, *ctx.extra,
                                   needs_grad_x=needs[0],
                                   needs_grad_weight=needs[1] and weight is not None,
                                   needs_grad_bias=needs[2])


class BatchNorm(_Normalization):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps,
                num_batches_tracked):
        x = contiguous(x)   # saved for the backward as the kernel saw it
        y, mean, inv_std = kernels.batch_norm_forward(x, weight, bias,
                                                       running_mean, running_var, training,
                                                       momentum, eps, num_batches_tracked)
        ctx.save_for_backward(x, mean, inv_std, weight)
        ctx.backward_kernel, ctx.extra = kernels.batch_norm_backward, (training,)
        return y


def _fold_into_conv(input, running_mean, running_var, weight, bias, eps):
    """Eval-mode batch norm of a conv's deferred output (``tensor_deferred``), folded into
    the conv; None where it is not one."""
    if type(input) is not tensor_deferred.DeferredTensor or running_mean is None \
            or running_var is None:
        return None
    epilogue = tensor_deferred.foldable(input, data_of(running_mean).shape[0])
    if epilogue is None:
        return None
    scale, mean, beta = batch_norm_eval_scale(
        data_of(running_mean), data_of(running_var), eps, data_of(weight), data_of(bias))
    return tensor_deferred.with_affine(epilogue, scale, beta - mean * scale)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, num_batches_tracked=None):
    """Batch normalisation, as ``torch.nn.functional.batch_norm``.

    Training normalises with the batch mean and biased variance and updates
    ``running_mean``/``running_var`` in place (unbiased variance); eval uses
    the running statistics.
    """
    if not training:
        folded = _fold_into_conv(input, running_mean, running_var, weight, bias, eps)
        if folded is not None:
            return folded
    check_float("batch_norm", "input", input)
    return BatchNorm.apply(as_tensor(input), as_tensor(weight), as_tensor(bias),
                           data_of(running_mean), data_of(running_var), training, momentum,
                           eps, num_batches_tracked)


class LayerNorm(_Normalization):
    @staticmethod
    def forward(ctx, x, weight, bias, normalized_shape, eps):
        x = contiguous(x)   # saved for the backward as the kernel saw it
        y, mean, inv_std = kernels.layer_norm_forward(x, normalized_shape, weight,
                                                       bias, eps)
        ctx.save_for_backward(x, mean, inv_std, weight)
        ctx.backward_kernel, ctx.extra = kernels.layer_norm_backward, (normalized_shape,)
        return y


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the trailing ``normalized_shape``."""
    check_float("layer_norm", "input", input)
    return LayerNorm.apply(as_tensor(input), as_tensor(weight), as_tensor(bias),
                           normalized_shape, eps)


class GroupNorm(_Normalization):
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        x = contiguous(x)   # saved for the backward as the kernel saw it
        y, mean, inv_std = kernels.group_norm_forward(x, num_groups, weight, bias,
                                                       eps)
        ctx.save_for_backward(x, mean, inv_std, weight)
        ctx.backward_kernel, ctx.extra = kernels.group_norm_backward, (num_groups,)
        return y


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation: C split into ``num_groups`` groups (C % G must be 0)."""
    check_float("group_norm", "input", input)
    return GroupNorm.apply(as_tensor(input), as_tensor(weight), as_tensor(bias), num_groups,
                           eps)


class InstanceNorm(_Normalization):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, use_input_stats, momentum,
                eps):
        x = contiguous(x)   # saved for the backward as the kernel saw it
        y, mean, inv_std = kernels.instance_norm_forward(x, running_mean,
                                                          running_var, weight, bias,
                                                          use_input_stats, momentum, eps)
        ctx.save_for_backward(x, mean, inv_std, weight)
        ctx.backward_kernel, ctx.extra = kernels.instance_norm_backward, (use_input_stats,)
        return y


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance normalisation: statistics per (sample, channel)."""
    check_float("instance_norm", "input", input)
    return InstanceNorm.apply(as_tensor(input), as_tensor(weight), as_tensor(bias),
                              data_of(running_mean), data_of(running_var), use_input_stats,
                              momentum, eps)


class Normalize(Function):
    """``x / max(||x||_p, eps)`` along ``dim``."""

    @staticmethod
    def forward(ctx, x, p, dim, eps):
        if p == 2:
            norm = np.sqrt(np.sum(x * x, axis=dim, keepdims=True))
        else:
            norm = np.sum(np.abs(x) ** p, axis=dim, keepdims=True) ** (1.0 / p)
        denom = np.maximum(norm, x.dtype.type(eps))
        ctx.save_for_backward(x, norm, denom)
        ctx.p, ctx.dim, ctx.eps = p, dim, eps
        return x / denom

    @staticmethod
    def backward(ctx, grad):
        x, norm, denom = ctx.saved_tensors
        p = ctx.p
        above = norm > ctx.eps   # below eps the denominator is the constant eps
        safe_norm = np.where(above, norm, 1)
        # d||x||_p / dx = sign(x) |x|^(p-1) / ||x||_p^(p-1)
        norm_grad = x / safe_norm if p == 2 else (
            np.sign(x) * np.abs(x) ** (p - 1) / safe_norm ** (p - 1))
        dot = np.sum(grad * x, axis=ctx.dim, keepdims=True)
        grad_x = grad / denom - np.where(above, dot / (denom * denom), 0) * norm_grad
        return grad_x.astype(grad.dtype, copy=False), None, None, None


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """``input / max(||input||_p, eps)`` along ``dim``, as ``torch.nn.functional.normalize``.

    Raises
    ------
    ValueError
        ``p`` not a positive finite number.
    IndexError
        ``dim`` out of range.
    """
    x = check_float("normalize", "input", input)
    if out is not None:
        raise NotImplementedError("normalize: out= is not supported")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p < float("inf"):
        raise ValueError("normalize: p must be a positive finite number, got %r" % (p,))
    ndim = max(x.ndim, 1)
    if not is_int(dim) or not -ndim <= dim < ndim:
        raise IndexError("normalize: Dimension out of range (expected to be in range of "
                         "[%d, %d], but got %r)" % (-ndim, ndim - 1, dim))
    return Normalize.apply(as_tensor(input), float(p), int(dim) % ndim, float(eps))


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """``x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta``, as torch's
    (AlexNet's LRN; the window is zero-padded at the channel ends).

    Raises
    ------
    ValueError
        Fewer than 3 dimensions, or ``size`` not a positive int.
    """
    x = check_float("local_response_norm", "input", input)
    if x.ndim < 3:
        raise ValueError("local_response_norm: Expected 3D or higher dimensionality input "
                         "(got %d dimensions)" % x.ndim)
    if not is_int(size) or size < 1:
        raise ValueError("local_response_norm: size must be a positive int, got %r" % (size,))
    tensor = as_tensor(input)
    n, c = x.shape[:2]
    squares = (tensor * tensor).reshape((n, 1, c, -1))
    squares = pad(squares, (0, 0, size // 2, (size - 1) // 2))
    mean = avg_pool2d(squares, (size, 1), stride=1).reshape(x.shape)
    return tensor / (mean * alpha + k) ** beta
