"""Loss modules with torch's constructor arguments, over :mod:`fastdl.functional`'s losses.

Each takes ``reduction`` ``'none'``, ``'mean'`` or ``'sum'`` (``KLDivLoss`` also
``'batchmean'``) and torch's deprecated ``size_average``/``reduce``, which
override it. Class and positive weights are buffers (``state_dict`` keeps them).
"""
import numbers

import numpy as np

from fastdl import functional as F
from fastdl._checks import check_reduction
from fastdl.functional.loss import legacy_reduction
from fastdl.nn.module import Module

__all__ = ["BCELoss", "BCEWithLogitsLoss", "CosineEmbeddingLoss", "CrossEntropyLoss",
           "FocalLoss", "HuberLoss",
           "KLDivLoss", "L1Loss", "MSELoss", "NLLLoss", "SmoothL1Loss", "SoftMarginLoss"]


def _array(value):
    """A weight as a float ndarray (Tensors unwrapped), or None."""
    if value is None:
        return None
    return np.asarray(getattr(value, "array", value), dtype=np.float64)


class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        reduction = legacy_reduction(size_average, reduce, reduction)
        if not (reduction == "batchmean" and isinstance(self, KLDivLoss)):
            check_reduction(type(self).__name__, reduction)
        self.reduction = reduction


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _array(weight))


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities (see :func:`fastdl.functional.nll_loss`).

    Shape: input ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``; target ``(N,)``,
    ``(N, d1, ...)`` or ``()``; output a scalar, or shaped like the target for
    ``reduction='none'``.
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = int(ignore_index)

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Softmax cross-entropy from logits (see :func:`fastdl.functional.cross_entropy`).

    Targets are class indices (with ``ignore_index``) or class probabilities
    shaped like the input; ``label_smoothing`` mixes them with the uniform
    distribution. Shapes as :class:`NLLLoss`.
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        if not isinstance(label_smoothing, numbers.Real) or not 0 <= label_smoothing <= 1:
            raise ValueError("CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, "
                             "got %r" % (label_smoothing,))
        self.ignore_index, self.label_smoothing = int(ignore_index), float(label_smoothing)

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class FocalLoss(Module):
    """Multi-class focal loss from logits; ``gamma=0`` is cross-entropy."""

    def __init__(self, alpha=None, gamma=2.0, reduction="mean", ignore_index=-100):
        super().__init__()
        check_reduction("FocalLoss", reduction)
        if gamma < 0:
            raise ValueError("FocalLoss: gamma must be >= 0, got %r" % (gamma,))
        self.alpha = _array(alpha)
        self.gamma, self.reduction, self.ignore_index = float(gamma), reduction, ignore_index

    def forward(self, input, target):
        return F.focal_loss(input, target, self.alpha, self.gamma, self.reduction,
                            self.ignore_index)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities; ``weight`` broadcasts to the input.

    Prefer :class:`BCEWithLogitsLoss`, stable at saturated logits.
    """

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """Binary cross-entropy from logits; ``pos_weight`` weighs the positives (e.g. per class)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(weight, size_average, reduce, reduction)
        self.register_buffer("pos_weight", _array(pos_weight))

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                  reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


class MSELoss(_Loss):
    """Mean squared error ``(x - y)^2``."""

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error ``|x - y|``."""

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    """Quadratic below ``beta``, absolute above: ``0.5 d^2/beta`` or ``|d| - 0.5 beta``."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = float(beta)

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """Quadratic below ``delta``, linear above: ``0.5 d^2`` or ``delta (|d| - 0.5 delta)``."""

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = float(delta)

    def forward(self, input, target):
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class KLDivLoss(_Loss):
    """KL divergence of log-probabilities from a target (``log_target``: log-probabilities).

    Use ``reduction='batchmean'`` for the divergence per sample.
    """

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = bool(log_target)

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class SoftMarginLoss(_Loss):
    """Logistic loss ``log(1 + exp(-y x))`` for targets in {-1, 1}."""

    def forward(self, input, target):
        return F.soft_margin_loss(input, target, reduction=self.reduction)


class CosineEmbeddingLoss(_Loss):
    """``1 - cos`` for similar pairs (``y = 1``), ``max(0, cos - margin)`` for dissimilar."""

    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = float(margin)

    def forward(self, input1, input2, target):
        return F.cosine_embedding_loss(input1, input2, target, self.margin,
                                       reduction=self.reduction)
