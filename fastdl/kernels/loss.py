"""Losses over classes, forward and backward fused: cross-entropy, focal, NLL.

One row kernel serves cross-entropy and focal loss (cross-entropy is focal
loss with ``gamma = 0``): per row it takes the max-shifted log-sum-exp, the
target's log-probability ``log p_t`` (never ``log`` of a probability that
underflowed), the loss and the gradient with respect to the logits, in one
pass. A second row kernel takes a dense coefficient row ``a`` instead of a
class index: the loss ``-sum_c a_c log p_c`` and its logit gradient
``sum(a) p - a`` serve probability targets and label smoothing. Inputs
``(N, C, d1, ...)`` are handled as rows of a ``(N*d1*..., C)`` view with the
class axis moved last; an unbatched ``(C,)`` input is one row.

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
           "nll_loss_forward_backward", "soft_target_grad", "pointwise_loss",
           "mse_loss_forward_backward",
           "check_classification_target", "LossInputError", "TargetIndexError"]


class TargetIndexError(IndexError, ValueError):
    """A class index outside ``[0, C)``: an IndexError, as torch raises, and a ValueError."""


class LossInputError(ValueError, RuntimeError):
    """Input outside a loss's domain or of a shape it cannot take: a ValueError, and a
    RuntimeError as torch raises for these."""


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


def _dense_rows(logits, coefficients, losses, grad):
    for row in prange(logits.shape[0]):
        peak, peak_index = row_peak(logits[row])
        rest = 0.0
        for j in range(logits.shape[1]):
            if j != peak_index:
                rest += np.exp(logits[row, j] - peak)
        log_total = np.log1p(rest)
        loss = 0.0
        mass = 0.0
        for j in range(logits.shape[1]):
            coefficient = coefficients[row, j]
            if coefficient != 0.0:   # a class without mass adds nothing, even at logit -inf
                loss -= coefficient * (logits[row, j] - peak - log_total)
                mass += coefficient
        losses[row] = loss
        for j in range(logits.shape[1]):
            grad[row, j] = mass * np.exp(logits[row, j] - peak - log_total) - coefficients[row, j]


_FOCAL_ROWS = jit(_focal_rows, parallel=True)
_DENSE_ROWS = jit(_dense_rows, parallel=True)


def _class_rows(logits):
    """(rows, C) view with the class axis last, and how to put a row-array back."""
    if logits.ndim == 1:
        return np.ascontiguousarray(logits).reshape(1, -1), lambda rows: rows.reshape(-1)
    if logits.ndim == 2:
        return np.ascontiguousarray(logits), lambda rows: rows
    c = logits.shape[1]
    moved = np.moveaxis(logits, 1, -1)
    rows = np.ascontiguousarray(moved).reshape(-1, c)

    def restore(matrix):
        return np.ascontiguousarray(np.moveaxis(matrix.reshape(moved.shape), -1, 1))
    return rows, restore


def _finish(losses, grad, restore, reduction, denominator, loss_shape, dtype):
    """Reduce per-row losses; scale the gradient for ``'mean'`` (torch: nan if nothing counts)."""
    if reduction == "none":
        return losses.astype(dtype).reshape(loss_shape), restore(grad)
    total = float(np.sum(losses))
    if reduction == "sum":
        return np.asarray(total, dtype=dtype), restore(grad)
    if denominator == 0.0:
        return np.asarray(np.nan, dtype=dtype), restore(grad * 0)
    grad /= grad.dtype.type(denominator)
    return np.asarray(total / denominator, dtype=dtype), restore(grad)


def _class_weight(weight, classes):
    if weight is None:
        return np.ones(classes, dtype=np.float64)
    return np.ascontiguousarray(weight, dtype=np.float64).reshape(classes)


def _fused(logits, target, class_weight, ignore_index, gamma, reduction, mean_by_weight):
    rows, restore = _class_rows(logits)
    labels = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    class_weight = _class_weight(class_weight, rows.shape[1])
    losses = np.empty(rows.shape[0], dtype=np.float64)
    weights = np.empty(rows.shape[0], dtype=np.float64)
    grad = np.empty_like(rows)
    _FOCAL_ROWS(rows, labels, class_weight, int(ignore_index), float(gamma), losses, weights,
                grad)
    denominator = float(np.sum(weights)) if mean_by_weight else float(np.count_nonzero(
        labels != ignore_index))
    return _finish(losses, grad, restore, reduction, denominator, np.shape(target),
                   logits.dtype)


def _dense(logits, coefficients, reduction, denominator, loss_shape):
    rows, restore = _class_rows(logits)
    losses = np.empty(rows.shape[0], dtype=np.float64)
    grad = np.empty_like(rows)
    _DENSE_ROWS(rows, np.ascontiguousarray(coefficients, dtype=np.float64), losses, grad)
    return _finish(losses, grad, restore, reduction, denominator, loss_shape, logits.dtype)


def _smoothed_coefficients(labels, class_weight, ignore_index, label_smoothing):
    """Rows ``(1-s) w_t onehot(t) + (s/C) w`` (zero where ignored) and each row's ``w_t``."""
    classes = class_weight.shape[0]
    valid = labels != ignore_index
    safe = np.where(valid, labels, 0)
    coefficients = np.zeros((labels.shape[0], classes), dtype=np.float64)
    coefficients[valid] = (label_smoothing / classes) * class_weight
    target_weight = np.where(valid, class_weight[safe], 0.0)
    coefficients[np.arange(labels.shape[0]), safe] += (1.0 - label_smoothing) * target_weight
    return coefficients, target_weight


def cross_entropy_forward_backward(logits, target, weight=None, ignore_index=-100,
                                   reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy from logits and its gradient with respect to the logits.

    Parameters
    ----------
    logits : ndarray (N, C), (N, C, d1, ...) or (C,), float32/float64
    target : ndarray
        Class indices, int (N,), (N, d1, ...) or () with values in [0, C) or
        ``ignore_index``; or class probabilities, float, shaped like ``logits``.
    weight : ndarray (C,) or None
        Class weights; with indices ``'mean'`` divides by the sum of the targets'
        weights (torch), with probabilities by the number of rows.
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float in [0, 1]
        Mixes the target with the uniform distribution: ``(1-s) y + s/C``.

    Returns
    -------
    loss : 0-d ndarray, or per-sample losses shaped like ``target`` for ``'none'``
        (without the class axis for probability targets)
    grad_logits : ndarray like ``logits``
        d(loss)/d(logits); for ``'none'``, row ``i`` is d(loss_i)/d(logits_i).
    """
    classes = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    if target.dtype.kind == "f":
        probabilities, _ = _class_rows(target)
        if label_smoothing:
            probabilities = probabilities * (1.0 - label_smoothing) + label_smoothing / classes
        coefficients = probabilities * _class_weight(weight, classes)
        loss_shape = logits.shape[:1] + logits.shape[2:] if logits.ndim > 1 else ()
        return _dense(logits, coefficients, reduction, float(probabilities.shape[0]),
                      loss_shape)
    if not label_smoothing:
        return _fused(logits, target, weight, ignore_index, 0.0, reduction, True)
    labels = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    coefficients, target_weight = _smoothed_coefficients(
        labels, _class_weight(weight, classes), ignore_index, float(label_smoothing))
    return _dense(logits, coefficients, reduction, float(np.sum(target_weight)),
                  np.shape(target))


def soft_target_grad(logits, weight=None, label_smoothing=0.0, reduction="mean"):
    """d(loss)/d(target) of cross-entropy with probability targets: ``-(1-s) w_c log p_c``.

    For ``'mean'`` divided by the number of rows; for ``'none'`` row ``i`` is
    d(loss_i)/d(target_i). Shaped like ``logits``.
    """
    rows, restore = _class_rows(logits)
    shifted = rows - np.max(rows, axis=1, keepdims=True)
    log_p = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    grad = -(1.0 - label_smoothing) * _class_weight(weight, rows.shape[1]) * log_p
    if reduction == "mean":
        grad /= rows.shape[0]
    return restore(grad.astype(logits.dtype, copy=False))


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


def nll_loss_forward_backward(log_probs, target, weight=None, ignore_index=-100,
                              reduction="mean"):
    """Negative log-likelihood ``-w_t x[t]`` of log-probabilities and its input gradient.

    Parameters
    ----------
    log_probs : ndarray (N, C), (N, C, d1, ...) or (C,)
    target : int ndarray (N,), (N, d1, ...) or (); values in [0, C) or ``ignore_index``
    weight : ndarray (C,) or None
        ``'mean'`` divides by the sum of the targets' weights (torch).
    reduction : {'mean', 'sum', 'none'}

    Returns
    -------
    loss, grad_log_probs : as :func:`cross_entropy_forward_backward`.
    """
    rows, restore = _class_rows(log_probs)
    labels = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    valid = labels != ignore_index
    safe = np.where(valid, labels, 0)
    target_weight = np.where(valid, _class_weight(weight, rows.shape[1])[safe], 0.0)
    picked = rows[np.arange(rows.shape[0]), safe].astype(np.float64)
    losses = np.where(valid, -target_weight * picked, 0.0)
    grad = np.zeros_like(rows)
    grad[np.arange(rows.shape[0]), safe] = -target_weight
    return _finish(losses, grad, restore, reduction, float(np.sum(target_weight)),
                   np.shape(target), log_probs.dtype)


# ----------------------------------------------------------------- pointwise losses
# One parallel loop per loss over flat arrays of one shape writes the elementwise
# loss and d(loss)/d(input), and d(loss)/d(target) when ``with_target`` (the
# difference losses need no target loop: theirs is minus the input's). Every
# log-probability and softplus is taken in a form that cannot overflow.

def _squared(x, y, loss, grad_x):
    for i in prange(x.shape[0]):
        diff = x[i] - y[i]
        loss[i] = diff * diff
        grad_x[i] = 2.0 * diff


def _absolute(x, y, loss, grad_x):
    for i in prange(x.shape[0]):
        diff = x[i] - y[i]
        loss[i] = abs(diff)
        grad_x[i] = np.sign(diff)   # sign(0) = 0 (PITFALLS 8, pytorch#7172)


def _huber(x, y, delta, loss, grad_x):
    for i in prange(x.shape[0]):
        diff = x[i] - y[i]
        size = abs(diff)
        if size < delta:
            loss[i] = 0.5 * diff * diff
            grad_x[i] = diff
        else:
            loss[i] = delta * (size - 0.5 * delta)
            grad_x[i] = delta * np.sign(diff)


def _smooth_l1(x, y, beta, loss, grad_x):
    for i in prange(x.shape[0]):
        diff = x[i] - y[i]
        size = abs(diff)
        if size < beta:
            loss[i] = 0.5 * diff * diff / beta
            grad_x[i] = diff / beta
        else:
            loss[i] = size - 0.5 * beta
            grad_x[i] = np.sign(diff)


def _softplus(z):
    """``log(1 + exp(z))`` without overflow."""
    return max(z, 0.0) + np.log1p(np.exp(-abs(z)))


_softplus_inline = jit(_softplus, inline="always")


def _binary_cross_entropy(p, y, with_target, loss, grad_p, grad_y):
    for i in prange(p.shape[0]):
        # torch clamps each log at -100, so p = 0 or 1 gives a finite loss
        log_p = max(np.log(p[i]), -100.0)
        log_q = max(np.log1p(-p[i]), -100.0)
        loss[i] = -(y[i] * log_p + (1.0 - y[i]) * log_q)
        grad_p[i] = (p[i] - y[i]) / max(p[i] * (1.0 - p[i]), 1e-12)   # torch's EPSILON
        if with_target:
            grad_y[i] = log_q - log_p


def _bce_with_logits(z, y, pos_weight, with_target, loss, grad_z, grad_y):
    # (1-y) softplus(z) + w_p y softplus(-z): no cancellation at either tail
    for i in prange(z.shape[0]):
        up, down = _softplus_inline(z[i]), _softplus_inline(-z[i])
        loss[i] = (1.0 - y[i]) * up + pos_weight[i] * y[i] * down
        grad_z[i] = (1.0 - y[i]) * np.exp(-down) - pos_weight[i] * y[i] * np.exp(-up)
        if with_target:
            grad_y[i] = pos_weight[i] * down - up


def _soft_margin(z, y, with_target, loss, grad_z, grad_y):
    for i in prange(z.shape[0]):
        margin = y[i] * z[i]
        loss[i] = _softplus_inline(-margin)
        sigmoid_neg = np.exp(-_softplus_inline(margin))   # sigmoid(-margin)
        grad_z[i] = -y[i] * sigmoid_neg
        if with_target:
            grad_y[i] = -z[i] * sigmoid_neg


def _kl_div(x, t, log_target, with_target, loss, grad_x, grad_t):
    for i in prange(x.shape[0]):
        if log_target:
            p = np.exp(t[i])
            loss[i] = p * (t[i] - x[i])
            grad_x[i] = -p
            if with_target:
                grad_t[i] = p * (t[i] - x[i] + 1.0)
        else:
            # xlogy(t, t) - t x: 0 where t = 0, as torch
            entropy = t[i] * np.log(t[i]) if t[i] != 0.0 else 0.0
            loss[i] = entropy - t[i] * x[i]
            grad_x[i] = -t[i]
            if with_target:
                grad_t[i] = np.log(t[i]) + 1.0 - x[i]


_POINTWISE = {name: jit(fn, parallel=True) for name, fn in (
    ("mse", _squared), ("l1", _absolute), ("huber", _huber), ("smooth_l1", _smooth_l1),
    ("binary_cross_entropy", _binary_cross_entropy),
    ("binary_cross_entropy_with_logits", _bce_with_logits),
    ("soft_margin", _soft_margin), ("kl_div", _kl_div))}
_DIFFERENCE = ("mse", "l1", "huber", "smooth_l1")


def pointwise_loss(kind, x, y, *options, with_target=False):
    """Elementwise loss and its gradients, for one of the pointwise losses.

    Parameters
    ----------
    kind : {'mse', 'l1', 'huber', 'smooth_l1', 'binary_cross_entropy',
            'binary_cross_entropy_with_logits', 'soft_margin', 'kl_div'}
    x, y : ndarray, one shape and float dtype
        Input (probabilities for BCE, logits for the ``_with_logits`` and soft
        margin losses, log-probabilities for KL) and target.
    *options
        ``huber``: ``delta``; ``smooth_l1``: ``beta > 0``;
        ``binary_cross_entropy_with_logits``: ``pos_weight`` (ndarray like
        ``x``); ``kl_div``: ``log_target``.
    with_target : bool
        Also return d(loss)/d(target).

    Returns
    -------
    loss, grad_x : ndarrays like ``x``
    grad_y : ndarray like ``x``, or None without ``with_target``
    """
    shape = x.shape
    x = np.ascontiguousarray(x).reshape(-1)
    y = np.ascontiguousarray(y, dtype=x.dtype).reshape(-1)
    options = [np.ascontiguousarray(o, dtype=x.dtype).reshape(-1) if isinstance(o, np.ndarray)
               else o for o in options]
    loss, grad_x = np.empty_like(x), np.empty_like(x)
    if kind in _DIFFERENCE:
        _POINTWISE[kind](x, y, *options, loss, grad_x)
        grad_y = -grad_x if with_target else None
    else:
        grad_y = np.empty_like(x) if with_target else np.empty(0, dtype=x.dtype)
        _POINTWISE[kind](x, y, *options, bool(with_target), loss, grad_x, grad_y)
        grad_y = grad_y.reshape(shape) if with_target else None
    return loss.reshape(shape), grad_x.reshape(shape), (
        None if grad_y is None else grad_y.reshape(shape))


def mse_loss_forward_backward(x, y, reduction="mean"):
    """Mean squared error and its gradient with respect to ``x``.

    Returns
    -------
    loss : 0-d ndarray, or elementwise for ``'none'``
    grad_x : ndarray like ``x``
    """
    loss, grad, _ = pointwise_loss("mse", x, y)
    if reduction == "none":
        return loss, grad
    total = np.sum(loss, dtype=np.float64)
    if reduction == "sum":
        return np.asarray(total, dtype=x.dtype), grad
    count = max(loss.size, 1)
    return np.asarray(total / count, dtype=x.dtype), grad * grad.dtype.type(1.0 / count)


def check_classification_target(op, logits, target, weight=None, ignore_index=-100,
                                probabilities=False):
    """Validate input/target/weight of a class loss; clear errors as torch's kinds.

    Parameters
    ----------
    probabilities : bool
        Accept a float target shaped like ``logits`` (class probabilities).

    Raises
    ------
    TypeError
        A non-float input, or a target that holds neither class indices nor
        (where accepted) probabilities.
    ValueError
        Mismatched batch sizes (``"Expected input batch_size (3) to match target
        batch_size (2)"``) or a weight not of shape ``(C,)``; other mismatched
        shapes raise a ``LossInputError`` (also a RuntimeError, as torch's).
    TargetIndexError
        A class index outside ``[0, C)`` other than ``ignore_index``.
    """
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError("%s: input must be float32 or float64, got %s" % (op, logits.dtype))
    if logits.ndim == 0:
        raise ValueError("%s: input must be (C,), (N, C) or (N, C, d1, ...), got a 0-d array"
                         % op)
    classes = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    if weight is not None and np.shape(weight) != (classes,):
        raise ValueError("%s: weight must have shape (%d,), got %s"
                         % (op, classes, np.shape(weight)))
    if probabilities and target.shape == logits.shape:
        if target.dtype.kind != "f":
            raise TypeError("%s: a target shaped like the input holds class probabilities "
                            "and must be floating point, got %s" % (op, target.dtype))
        return
    if target.dtype.kind not in "iu":
        raise TypeError("%s: target must hold integer class indices%s, got %s" % (
            op, " (or float probabilities shaped like the input)" if probabilities else "",
            target.dtype))
    expected = () if logits.ndim == 1 else (logits.shape[0],) + logits.shape[2:]
    if target.shape != expected:
        if logits.ndim > 1 and target.ndim > 0 and target.shape[0] != logits.shape[0]:
            raise ValueError("%s: Expected input batch_size (%d) to match target batch_size "
                             "(%d); target must have shape %s for input %s, got %s"
                             % (op, logits.shape[0], target.shape[0], expected, logits.shape,
                                target.shape))
        raise LossInputError("%s: target must have shape %s for input %s, got %s"
                             % (op, expected, logits.shape, target.shape))
    valid = target[target != ignore_index]
    if valid.size and (valid.min() < 0 or valid.max() >= classes):
        bad = valid.min() if valid.min() < 0 else valid.max()
        raise TargetIndexError("%s: target value %d is out of bounds: class indices must be "
                               "in [0, %d) (or ignore_index=%d)"
                               % (op, bad, classes, ignore_index))
