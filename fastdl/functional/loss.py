"""Differentiable losses, named and ordered as ``torch.nn.functional``; L1/L2 penalties.

Class losses (``cross_entropy``, ``nll_loss``, ``focal_loss``; the binary
``sigmoid_focal_loss`` of RetinaNet) take logits or
log-probabilities with class indices or probabilities; pointwise losses
(``mse_loss``, ``l1_loss``, ``smooth_l1_loss``, ``huber_loss``,
``binary_cross_entropy``, ``binary_cross_entropy_with_logits``,
``soft_margin_loss``, ``kl_div``) compare two arrays element by element;
``cosine_embedding_loss`` compares rows. The
loss kernels return the gradient together with the value, so backward only
scales it by the upstream gradient. Every loss takes ``reduction`` ``'none'``,
``'mean'`` or ``'sum'`` (and torch's deprecated ``size_average``/``reduce``).
"""
import numbers
import warnings

import numpy as np

from fastdl.autograd import Function, Tensor
from fastdl.functional._util import as_tensor, check_float, check_reduction, data_of
from fastdl.kernels import detection as detection_kernels
from fastdl.kernels import loss as kernels
from fastdl.kernels.loss import LossInputError


def legacy_reduction(size_average, reduce, reduction):
    """torch's mapping of the deprecated ``size_average``/``reduce`` to a reduction."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn("size_average and reduce args will be deprecated, please use "
                  "reduction='%s' instead." % ("none" if reduce is False else
                                               "sum" if size_average is False else "mean"),
                  UserWarning, stacklevel=3)
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


# --------------------------------------------------------------------- class losses
class _ClassLoss(Function):
    """Inputs: (prediction, target); the forward kernel also returns d(loss)/d(prediction)."""

    @staticmethod
    def forward(ctx, prediction, target, kernel, reduction, options):
        loss, grad = kernel(prediction, target, reduction=reduction, **options)
        ctx.save_for_backward(grad)
        ctx.reduction = reduction
        ctx.target_grad = None
        if ctx.needs_input_grad[1]:   # only probability targets can require a gradient
            ctx.target_grad = kernels.soft_target_grad(
                prediction, options.get("weight"), options.get("label_smoothing", 0.0),
                reduction)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        scale = grad_output
        if ctx.reduction == "none" and grad.ndim > 1:   # upstream lacks the class axis
            scale = np.expand_dims(grad_output, 1)
        grad_target = None if ctx.target_grad is None else ctx.target_grad * scale
        return grad * scale, grad_target


def _class_loss(op, kernel, input, target, reduction, weight, probabilities=False,
                **options):
    logits = check_float(op, "input", input)
    labels = data_of(target)
    check_reduction(op, reduction)
    weight = data_of(weight)
    kernels.check_classification_target(op, logits, labels, weight,
                                        options.get("ignore_index", -100), probabilities)
    options["weight"] = weight
    soft = probabilities and labels.dtype.kind == "f"
    target = as_tensor(target) if soft else labels
    return _ClassLoss.apply(as_tensor(input), target, kernel, reduction, options)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy from logits, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    input : Tensor (N, C), (N, C, d1, ...) or (C,) of logits
    target : array/Tensor
        Class indices, int (N,), (N, d1, ...) or (); or class probabilities,
        float, shaped like ``input`` (a gradient flows to them if they require it).
    weight : (C,) class weights; with indices ``'mean'`` divides by the sum of the
        targets' weights, with probabilities by the number of samples
    ignore_index : int
        A class index whose samples add nothing (indices only).
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float in [0, 1]
        The target becomes ``(1 - s) y + s / C``.

    Raises
    ------
    TargetIndexError
        (an IndexError and a ValueError) for a class index outside [0, C).
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if not isinstance(label_smoothing, numbers.Real) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError("cross_entropy: label_smoothing must be between 0.0 and 1.0, got %r"
                         % (label_smoothing,))
    return _class_loss("cross_entropy", kernels.cross_entropy_forward_backward, input, target,
                       reduction, weight, True, ignore_index=ignore_index,
                       label_smoothing=float(label_smoothing))


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of log-probabilities, as ``torch.nn.functional.nll_loss``.

    Parameters
    ----------
    input : Tensor (N, C), (N, C, d1, ...) or (C,) of log-probabilities
    target : int array/Tensor (N,), (N, d1, ...) or ()
    weight, ignore_index, reduction : as :func:`cross_entropy`
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    return _class_loss("nll_loss", kernels.nll_loss_forward_backward, input, target,
                       reduction, weight, ignore_index=ignore_index)


def focal_loss(input, target, alpha=None, gamma=2.0, reduction="mean", ignore_index=-100):
    """Multi-class focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` from logits.

    ``gamma = 0`` (with ``alpha=None``) is cross-entropy exactly; gradients stay
    finite for ``gamma < 1`` at saturated logits. ``alpha`` is a float or (C,).
    """
    if not isinstance(gamma, numbers.Real) or gamma < 0:
        raise ValueError("focal_loss: gamma must be a number >= 0, got %r" % (gamma,))
    alpha = data_of(alpha)
    logits = check_float("focal_loss", "input", input)
    classes = logits.shape[1] if logits.ndim > 1 else logits.shape[0]
    if alpha is not None and alpha.ndim == 0:
        alpha = np.full(classes, float(alpha))
    if alpha is not None and alpha.shape != (classes,):
        raise ValueError("focal_loss: alpha must be a float or have shape (%d,), got %s"
                         % (classes, alpha.shape))
    return _class_loss("focal_loss", _focal_kernel, input, target, reduction, alpha,
                       gamma=float(gamma), ignore_index=ignore_index)


def _focal_kernel(logits, target, reduction, weight, **options):
    return kernels.focal_loss_forward_backward(logits, target, weight, reduction=reduction,
                                               **options)


class _SigmoidFocal(Function):
    """Inputs: (logits, targets); the kernel returns the elementwise loss and its gradient."""

    @staticmethod
    def forward(ctx, logits, targets, alpha, gamma, reduction):
        loss, grad = detection_kernels.sigmoid_focal_loss_forward_backward(logits, targets,
                                                                           alpha, gamma)
        ctx.save_for_backward(grad)
        ctx.reduction = reduction
        if reduction == "none":
            return loss
        total = np.sum(loss, dtype=np.float64)
        if reduction == "mean":
            total = total / loss.size if loss.size else np.nan
        return np.asarray(total, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        scale = np.asarray(grad_output, dtype=grad.dtype)
        if ctx.reduction == "mean":
            scale = scale / grad.dtype.type(grad.size)
        return grad * scale, None


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    """RetinaNet's binary focal loss from logits, as ``torchvision.ops.sigmoid_focal_loss``.

    ``loss = alpha_t (1 - p_t)^gamma BCE_with_logits(inputs, targets)`` with
    ``p = sigmoid(inputs)``, ``p_t = p t + (1 - p)(1 - t)`` and
    ``alpha_t = alpha t + (1 - alpha)(1 - t)`` (no weighting when ``alpha < 0``).
    ``gamma = 0, alpha < 0`` is BCE-with-logits exactly; the gradient stays finite
    for ``gamma < 1`` at saturated logits (``p_t = 1``).

    Parameters
    ----------
    inputs : Tensor or ndarray, float32 or float64, any shape (logits)
    targets : same shape, in [0, 1] (receives no gradient)
    alpha : float in [0, 1], or negative to disable
    gamma : float >= 0
    reduction : ``'none'`` | ``'mean'`` | ``'sum'``
    """
    op = "sigmoid_focal_loss"
    logits = check_float(op, "inputs", inputs)
    labels = data_of(targets)
    if labels.shape != logits.shape:
        raise ValueError("%s: targets shape %s must be the same as inputs shape %s"
                         % (op, labels.shape, logits.shape))
    if not isinstance(gamma, numbers.Real) or isinstance(gamma, bool) or not gamma >= 0:
        raise ValueError("%s: gamma must be a number >= 0, got %r" % (op, gamma))
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or alpha > 1 or \
            alpha != alpha:
        raise ValueError("%s: alpha must be in [0, 1] (or negative to disable), got %r"
                         % (op, alpha))
    check_reduction(op, reduction)
    return _SigmoidFocal.apply(as_tensor(inputs), labels.astype(logits.dtype, copy=False),
                               float(alpha), float(gamma), reduction)


# ------------------------------------------------------------------ pointwise losses
def _unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape`` (the inverse of NumPy broadcasting)."""
    if grad.shape == shape:
        return grad
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad


class _Pointwise(Function):
    """Inputs: (input, target); the kernel returns elementwise losses and gradients."""

    @staticmethod
    def forward(ctx, x, y, kind, options, weight, reduction, denominator):
        shape = np.broadcast_shapes(x.shape, y.shape)
        loss, grad_x, grad_y = kernels.pointwise_loss(
            kind, np.broadcast_to(x, shape), np.broadcast_to(y, shape), *options,
            with_target=ctx.needs_input_grad[1])
        if weight is not None:
            weight = np.broadcast_to(weight, shape).astype(x.dtype, copy=False)
            loss, grad_x = loss * weight, grad_x * weight
            grad_y = None if grad_y is None else grad_y * weight
        ctx.save_for_backward(grad_x, grad_y)
        ctx.shapes, ctx.reduction, ctx.denominator = (x.shape, y.shape), reduction, denominator
        if reduction == "none":
            return loss
        total = np.sum(loss, dtype=np.float64)
        if reduction != "sum":
            total = total / denominator if denominator else np.nan
        return np.asarray(total, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        grad_x, grad_y = ctx.saved_tensors
        scale = np.asarray(grad_output, dtype=grad_x.dtype)
        if ctx.reduction not in ("none", "sum"):
            scale = scale / grad_x.dtype.type(ctx.denominator) if ctx.denominator else \
                scale * np.nan
        needs = ctx.needs_input_grad
        grads = [_unbroadcast(g * scale, s) if need and g is not None else None
                 for g, s, need in zip((grad_x, grad_y), ctx.shapes, needs)]
        return tuple(grads)


def _pointwise(op, kind, input, target, reduction, options=(), weight=None, mean_by="numel",
               same_shape=False):
    """Validate, broadcast as torch (a warning when the shapes differ) and apply."""
    x = check_float(op, "input", input)
    y = check_float(op, "target", target)
    if reduction != "batchmean" or op != "kl_div":
        check_reduction(op, reduction)
    if x.shape != y.shape:
        if same_shape:
            raise ValueError("%s: target shape %s must be the same as input shape %s"
                             % (op, y.shape, x.shape))
        try:
            shape = np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            raise ValueError("%s: input shape %s and target shape %s do not broadcast"
                             % (op, x.shape, y.shape)) from None
        warnings.warn("%s: Using a target size %s that is different to the input size %s. "
                      "This will likely lead to incorrect results due to broadcasting. "
                      "Please ensure they have the same size." % (op, y.shape, x.shape),
                      UserWarning, stacklevel=3)
    else:
        shape = x.shape
    weight = data_of(weight)
    if weight is not None:
        try:
            np.broadcast_to(weight, shape)
        except ValueError:
            raise ValueError("%s: weight of shape %s does not broadcast to the input shape %s"
                             % (op, weight.shape, shape)) from None
    if mean_by == "weight" and weight is not None:
        denominator = float(np.sum(np.broadcast_to(weight, shape), dtype=np.float64))
    elif mean_by == "batch" and len(shape) > 0:
        denominator = float(shape[0])
    else:
        denominator = float(np.prod(shape)) if mean_by != "batch" else 1.0
    target = target if isinstance(target, Tensor) else y
    return _Pointwise.apply(as_tensor(input), target, kind, options, weight, reduction,
                            denominator)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Squared error ``(x - y)^2``, as ``torch.nn.functional.mse_loss``.

    With ``weight`` (like ``input``) the mean is ``sum(w l) / sum(w)``.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    return _pointwise("mse_loss", "mse", input, target, reduction, weight=weight,
                      mean_by="weight")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Absolute error ``|x - y|``; its gradient at ``x = y`` is 0 (``sign(0) = 0``)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    return _pointwise("l1_loss", "l1", input, target, reduction, weight=weight,
                      mean_by="weight")


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean",
                   beta=1.0):
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = x - y``).

    ``beta = 0`` is :func:`l1_loss`.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if not isinstance(beta, numbers.Real) or beta < 0:
        raise ValueError("smooth_l1_loss: beta must be a number >= 0, got %r" % (beta,))
    if beta == 0:
        return _pointwise("smooth_l1_loss", "l1", input, target, reduction)
    return _pointwise("smooth_l1_loss", "smooth_l1", input, target, reduction,
                      (float(beta),))


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)`` (``d = x - y``).

    With ``weight`` the mean is over all elements of ``w l``, as torch.
    """
    if not isinstance(delta, numbers.Real) or delta <= 0:
        raise ValueError("huber_loss: delta must be a number > 0, got %r" % (delta,))
    return _pointwise("huber_loss", "huber", input, target, reduction, (float(delta),),
                      weight=weight)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """``-w (y log p + (1 - y) log(1 - p))`` of probabilities ``p`` (each log >= -100).

    Prefer :func:`binary_cross_entropy_with_logits`, which is stable at the tails.

    Raises
    ------
    ValueError
        Target and input shapes differ; an input outside [0, 1] (a
        ``LossInputError``, also a RuntimeError as torch's).
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    p = check_float("binary_cross_entropy", "input", input)
    if p.size and not (np.min(p) >= 0 and np.max(p) <= 1):
        raise LossInputError("binary_cross_entropy: all elements of input should be between "
                             "0 and 1 (it takes probabilities; for logits use "
                             "binary_cross_entropy_with_logits)")
    return _pointwise("binary_cross_entropy", "binary_cross_entropy", input, target,
                      reduction, weight=weight, same_shape=True)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None):
    """Binary cross-entropy of ``sigmoid(input)``, computed from the logits stably.

    ``loss = w ((1 - y) softplus(x) + p_w y softplus(-x))``.

    Parameters
    ----------
    weight : array broadcastable to ``input``
    pos_weight : array broadcastable to ``input`` (e.g. (C,) for (N, C)): the
        weight of positive examples per class.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    x = check_float("binary_cross_entropy_with_logits", "input", input)
    pos_weight = data_of(pos_weight)
    if pos_weight is None:
        pos_weight = np.ones(x.shape, dtype=x.dtype)
    else:
        try:
            pos_weight = np.broadcast_to(pos_weight, x.shape)
        except ValueError:
            raise ValueError("binary_cross_entropy_with_logits: pos_weight of shape %s does "
                             "not broadcast to the input shape %s"
                             % (pos_weight.shape, x.shape)) from None
    return _pointwise("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits",
                      input, target, reduction, (pos_weight,), weight=weight, same_shape=True)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Two-class logistic loss ``log(1 + exp(-y x))`` for targets ``y`` in {-1, 1}."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    return _pointwise("soft_margin_loss", "soft_margin", input, target, reduction)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Kullback-Leibler divergence ``y (log y - x)`` of log-probabilities ``x``.

    Parameters
    ----------
    log_target : bool
        ``target`` holds log-probabilities: ``exp(y) (y - x)``.
    reduction : {'mean', 'batchmean', 'sum', 'none'}
        ``'batchmean'`` divides the sum by ``input.shape[0]`` (the KL divergence
        per sample); ``'mean'`` by the number of elements, as torch (which warns).
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if reduction == "mean":
        warnings.warn("kl_div: reduction 'mean' divides the total loss by both the batch size "
                      "and the support size; 'batchmean' divides only by the batch size, as "
                      "the KL divergence's definition.", UserWarning, stacklevel=2)
    return _pointwise("kl_div", "kl_div", input, target, reduction, (bool(log_target),),
                      mean_by="batch" if reduction == "batchmean" else "numel")


class _CosineEmbedding(Function):
    """Inputs: (x1, x2, target); the rows' cosine and its gradients are kept for backward."""

    @staticmethod
    def forward(ctx, x1, x2, target, margin, reduction):
        # torch adds 1e-12 to each squared norm, so a zero row has cosine 0, not NaN
        dot = np.sum(x1 * x2, axis=-1)
        square1 = np.sum(x1 * x1, axis=-1) + 1e-12
        square2 = np.sum(x2 * x2, axis=-1) + 1e-12
        norm = np.sqrt(square1 * square2)
        cosine = dot / norm
        positive, negative = target == 1, target == -1
        losses = np.where(positive, 1.0 - cosine, 0.0) + np.where(
            negative, np.maximum(cosine - margin, 0.0), 0.0)
        # d(loss)/d(cosine) per row: -1 for similar pairs, 1 for dissimilar beyond the margin
        slope = np.where(positive, -1.0, 0.0) + np.where(negative & (cosine > margin), 1.0, 0.0)
        ctx.save_for_backward(x1, x2, cosine[..., None], norm[..., None], square1[..., None],
                              square2[..., None], slope)
        ctx.reduction = reduction
        if reduction == "none":
            return losses.astype(x1.dtype)
        total = np.sum(losses)
        if reduction == "mean":
            total = total / losses.size if losses.size else np.nan
        return np.asarray(total, dtype=x1.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        x1, x2, cosine, norm, square1, square2, slope = ctx.saved_tensors
        scale = slope * grad_output
        if ctx.reduction == "mean":
            scale = scale / max(slope.size, 1)
        scale = np.asarray(scale)[..., None]
        grad1 = scale * (x2 / norm - cosine * x1 / square1)
        grad2 = scale * (x1 / norm - cosine * x2 / square2)
        needs = ctx.needs_input_grad
        return (grad1.astype(x1.dtype) if needs[0] else None,
                grad2.astype(x2.dtype) if needs[1] else None)


def cosine_embedding_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                          reduction="mean"):
    """``1 - cos(x1, x2)`` for ``y = 1``, ``max(0, cos(x1, x2) - margin)`` for ``y = -1``.

    Parameters
    ----------
    input1, input2 : (N, D) or (D,)
    target : (N,) or () of 1 and -1
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction("cosine_embedding_loss", reduction)
    x1 = check_float("cosine_embedding_loss", "input1", input1)
    x2 = check_float("cosine_embedding_loss", "input2", input2)
    labels = data_of(target)
    if x1.shape != x2.shape or x1.ndim not in (1, 2) or labels.shape != x1.shape[:-1]:
        raise LossInputError("cosine_embedding_loss: expected input1 and input2 of one shape "
                             "(N, D) or (D,) and target (N,) or (), got %s, %s and %s"
                             % (x1.shape, x2.shape, labels.shape))
    return _CosineEmbedding.apply(as_tensor(input1), as_tensor(input2), labels, float(margin),
                                  reduction)


# ------------------------------------------------------------------------ penalties
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
