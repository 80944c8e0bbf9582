"""Losses from logits, forward and backward fused: cross-entropy, focal, MSE.

One row kernel serves cross-entropy and focal loss (cross-entropy is focal
loss with ``gamma = 0``): per row it takes the max-shifted log-sum-exp, the
target's log-probability ``log p_t`` (never ``log`` of a probability that
underflowed), the loss and the gradient with respect to the logits, in one
pass. Per-pixel inputs ``(N, C, H, W)`` are handled as rows of a
``(N*H*W, C)`` view with the class axis moved last.

Focal loss ``-a_t (1 - p_t)^g log p_t`` has the logit gradient
``a_t (1 - p_t)^g (1 - g p_t log(p_t) / (1 - p_t)) (softmax - onehot)``.
The factor ``log(p_t) / (1 - p_t)`` tends to -1 as ``p_t -> 1``; it is
evaluated with ``expm1`` and its limit, so ``g < 1`` stays finite where the
textbook form gives ``0 * inf`` (kornia#918).

Sums over rows are taken in a fixed order after the parallel loop, so the loss
is bitwise the same at any thread count.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange
from fastdl.kernels.activation import row_peak

__all__ = ["cross_entropy_forward_backward", "focal_loss_forward_backward",
           "mse_loss_forward_backward", "check_classification_target"]


def _focal_rows(logits, target, class_weight, ignore_index, gamma, losses, weights, grad):
    for row in prange(logits.shape[0]):
        label = target[row]
        if label == ignore_index:
            losses[row] = 0.0
            weights[row] = 0.0
            for j in range(logits.shape[1]):
                grad[row, j] = 0.0
            continue
        peak, peak_index = row_peak(logits[row])
        rest = 0.0
        for j in range(logits.shape[1]):
            if j != peak_index:
                rest += np.exp(logits[row, j] - peak)
        log_total = np.log1p(rest)  # log(sum exp(z - peak)), exact for the dominant entry
        log_p = logits[row, label] - peak - log_total
        weight = class_weight[label]
        if gamma == 0.0:
            modulation = 1.0
            scale = weight
        else:
            p = np.exp(log_p)
            one_minus_p = -np.expm1(log_p)
            ratio = log_p / one_minus_p if one_minus_p > 0.0 else -1.0
            modulation = one_minus_p ** gamma
            scale = weight * modulation * (1.0 - gamma * p * ratio)
        losses[row] = -weight * modulation * log_p
        weights[row] = weight
        for j in range(logits.shape[1]):
            grad[row, j] = scale * np.exp(logits[row, j] - peak - log_total)
        grad[row, label] -= scale


_FOCAL_ROWS = jit(_focal_rows, parallel=True)


def _class_rows(logits):
    """(rows, C) view with the class axis last, and how to put a row-array back."""
    if logits.ndim == 2:
        return np.ascontiguousarray(logits), lambda rows: rows
    n, c = logits.shape[:2]
    moved = np.moveaxis(logits, 1, -1)
    rows = np.ascontiguousarray(moved).reshape(-1, c)

    def restore(matrix):
        return np.ascontiguousarray(np.moveaxis(matrix.reshape(moved.shape), -1, 1))
    return rows, restore


def _fused(logits, target, class_weight, ignore_index, gamma, reduction, mean_by_weight):
    rows, restore = _class_rows(logits)
    labels = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    if class_weight is None:
        class_weight = np.ones(rows.shape[1], dtype=np.float64)
    class_weight = np.ascontiguousarray(class_weight, dtype=np.float64)
    losses = np.empty(rows.shape[0], dtype=np.float64)
    weights = np.empty(rows.shape[0], dtype=np.float64)
    grad = np.empty_like(rows)
    _FOCAL_ROWS(rows, labels, class_weight, int(ignore_index), float(gamma), losses, weights,
                grad)
    if reduction == "none":
        return losses.astype(logits.dtype).reshape(np.shape(target)), restore(grad)
    total = float(np.sum(losses))
    if reduction == "sum":
        return np.asarray(total, dtype=logits.dtype), restore(grad)
    denominator = float(np.sum(weights)) if mean_by_weight else float(np.count_nonzero(
        labels != ignore_index))
    if denominator == 0.0:  # every target ignored: torch returns nan for mean
        return np.asarray(np.nan, dtype=logits.dtype), restore(grad * 0)
    grad /= grad.dtype.type(denominator)
    return np.asarray(total / denominator, dtype=logits.dtype), restore(grad)


def cross_entropy_forward_backward(logits, target, weight=None, ignore_index=-100,
                                   reduction="mean"):
    """Softmax cross-entropy from logits and its gradient with respect to the logits.

    Parameters
    ----------
    logits : ndarray (N, C) or (N, C, H, W), float32/float64
    target : int ndarray (N,) or (N, H, W), values in [0, C) or ``ignore_index``
    weight : ndarray (C,) or None
        Class weights; ``'mean'`` divides by the sum of the targets' weights (torch).
    reduction : {'mean', 'sum', 'none'}

    Returns
    -------
    loss : 0-d ndarray, or per-sample losses shaped like ``target`` for ``'none'``
    grad_logits : ndarray like ``logits``
        d(loss)/d(logits); for ``'none'``, row ``i`` is d(loss_i)/d(logits_i).
    """
    return _fused(logits, target, weight, ignore_index, 0.0, reduction, True)


def focal_loss_forward_backward(logits, target, alpha=None, gamma=2.0, reduction="mean",
                                ignore_index=-100):
    """Multi-class focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` and its logit gradient.

    Parameters
    ----------
    logits : ndarray (N, C) or (N, C, H, W)
    target : int ndarray (N,) or (N, H, W)
    alpha : None, float, or ndarray (C,)
        Weight of each class (a float weighs every class alike).
    gamma : float >= 0
        ``gamma = 0`` is cross-entropy exactly.
    reduction : {'mean', 'sum', 'none'}
        ``'mean'`` divides by the number of non-ignored targets.

    Returns
    -------
    loss, grad_logits : as :func:`cross_entropy_forward_backward`.
    """
    if alpha is not None and np.ndim(alpha) == 0:
        alpha = np.full(logits.shape[1], float(alpha))
    return _fused(logits, target, alpha, ignore_index, gamma, reduction, False)


def mse_loss_forward_backward(x, y, reduction="mean"):
    """Mean squared error and its gradient with respect to ``x``.

    Returns
    -------
    loss : 0-d ndarray, or elementwise for ``'none'``
    grad_x : ndarray like ``x``
    """
    diff = x - y
    if reduction == "none":
        return diff * diff, 2 * diff
    total = np.sum(diff.astype(np.float64) ** 2)
    if reduction == "sum":
        return np.asarray(total, dtype=x.dtype), 2 * diff
    return np.asarray(total / max(diff.size, 1), dtype=x.dtype), diff * (2.0 / max(diff.size, 1))


def check_classification_target(op, logits, target, weight=None, ignore_index=-100):
    """Validate logits/target/weight for cross-entropy-type losses (clear errors)."""
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError("%s: input must be float32 or float64, got %s" % (op, logits.dtype))
    if logits.ndim not in (2, 4):
        raise ValueError("%s: input must be (N, C) or (N, C, H, W), got shape %s"
                         % (op, logits.shape))
    if target.dtype.kind not in "iu":
        raise TypeError("%s: target must hold integer class indices, got %s"
                        % (op, target.dtype))
    expected = (logits.shape[0],) + logits.shape[2:]
    if target.shape != expected:
        raise ValueError("%s: target must have shape %s for input %s, got %s"
                         % (op, expected, logits.shape, target.shape))
    classes = logits.shape[1]
    valid = target[target != ignore_index]
    if valid.size and (valid.min() < 0 or valid.max() >= classes):
        raise ValueError("%s: target values must be in [0, %d) (or ignore_index=%d), got "
                         "min %d max %d" % (op, classes, ignore_index, valid.min(),
                                            valid.max()))
    if weight is not None and np.shape(weight) != (classes,):
        raise ValueError("%s: weight must have shape (%d,), got %s"
                         % (op, classes, np.shape(weight)))
