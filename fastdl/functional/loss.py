"""Differentiable losses: cross-entropy and focal loss from logits, MSE; L1/L2 penalties.

The loss kernels return the gradient together with the value, so backward
only scales it by the upstream gradient.
"""
import numbers

import numpy as np

from fastdl.autograd import Function, Tensor
from fastdl.functional._util import as_tensor, check_float, check_reduction, data_of
from fastdl.kernels import loss as kernels


class _FusedLoss(Function):
    """Inputs: (prediction, target); the forward kernel also returns d(loss)/d(prediction)."""

    @staticmethod
    def forward(ctx, prediction, target, kernel, reduction, options):
        loss, grad = kernel(prediction, target, reduction=reduction, **options)
        ctx.save_for_backward(grad)
        ctx.reduction = reduction
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":  # upstream is shaped like target: add the class axis
            return grad * np.expand_dims(grad_output, 1), None
        return grad * grad_output, None


def _class_loss(op, kernel, input, target, reduction, weight_name, weight, **options):
    logits = check_float(op, "input", input)
    labels = data_of(target)
    check_reduction(op, reduction)
    kernels.check_classification_target(op, logits, labels, None, options.get("ignore_index",
                                                                                -100))
    if weight is not None:
        weight = data_of(weight)
        if weight.ndim != 0 and weight.shape != (logits.shape[1],):
            raise ValueError("%s: %s must have shape (%d,), got %s"
                             % (op, weight_name, logits.shape[1], weight.shape))
    options[weight_name] = weight
    return _FusedLoss.apply(as_tensor(input), labels, kernel, reduction, options)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Softmax cross-entropy from logits, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    input : Tensor (N, C) or (N, C, H, W) of logits
    target : int array/Tensor (N,) or (N, H, W)
    weight : (C,) class weights; ``'mean'`` divides by the sum of the targets' weights
    ignore_index : int
    reduction : {'mean', 'sum', 'none'}
    """
    return _class_loss("cross_entropy", kernels.cross_entropy_forward_backward, input, target,
                       reduction, "weight", weight, ignore_index=ignore_index)


def focal_loss(input, target, alpha=None, gamma=2.0, reduction="mean", ignore_index=-100):
    """Multi-class focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` from logits.

    ``gamma = 0`` (with ``alpha=None``) is cross-entropy exactly; gradients stay
    finite for ``gamma < 1`` at saturated logits.
    """
    if not isinstance(gamma, numbers.Real) or gamma < 0:
        raise ValueError("focal_loss: gamma must be a number >= 0, got %r" % (gamma,))
    return _class_loss("focal_loss", kernels.focal_loss_forward_backward, input, target,
                       reduction, "alpha", alpha, gamma=float(gamma),
                       ignore_index=ignore_index)


class _MSE(Function):
    @staticmethod
    def forward(ctx, x, y, reduction):
        loss, grad = kernels.mse_loss_forward_backward(x, y, reduction)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad = ctx.saved_tensors[0] * grad_output
        needs = ctx.needs_input_grad
        return grad if needs[0] else None, -grad if needs[1] else None, None


def mse_loss(input, target, reduction="mean"):
    """Mean squared error, as ``torch.nn.functional.mse_loss``."""
    x = check_float("mse_loss", "input", input)
    y = check_float("mse_loss", "target", target)
    check_reduction("mse_loss", reduction)
    if x.shape != y.shape:
        raise ValueError("mse_loss: input shape %s and target shape %s differ"
                         % (x.shape, y.shape))
    return _MSE.apply(as_tensor(input), as_tensor(target), reduction)


class _Penalty(Function):
    @staticmethod
    def forward(ctx, kind, *arrays):
        ctx.kind = kind
        ctx.save_for_backward(*arrays)
        if kind == "l1":
            total = sum(float(np.sum(np.abs(a), dtype=np.float64)) for a in arrays)
        else:
            total = sum(0.5 * float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)
        return np.asarray(total, dtype=arrays[0].dtype)

    @staticmethod
    def backward(ctx, grad_output):
        # d/dw |w| = sign(w) with sign(0) = 0 (the seed erratum; pytorch#7172)
        grads = [grad_output * (np.sign(a) if ctx.kind == "l1" else a)
                 for a in ctx.saved_tensors]
        return (None,) + tuple(g.astype(a.dtype, copy=False)
                               for g, a in zip(grads, ctx.saved_tensors))


def _penalty(kind, params):
    params = [p for p in params if isinstance(p, Tensor)]
    if not params:
        raise ValueError("%s_penalty: expected at least one parameter Tensor" % kind)
    return _Penalty.apply(kind, *params)


def l1_penalty(params):
    """``sum |w|`` over ``params``; its gradient is ``sign(w)`` with ``sign(0) = 0``.

    Multiply by λ and add to the loss: SGD then does ``w ← w − ηλ·sign(w)``.
    """
    return _penalty("l1", params)


def l2_penalty(params):
    """``½ sum w²`` over ``params``; its gradient is ``w``.

    Multiply by λ and add to the loss: SGD then does ``w ← w − ηλ·w``.
    """
    return _penalty("l2", params)
