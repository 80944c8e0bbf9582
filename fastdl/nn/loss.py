"""Loss modules: CrossEntropyLoss, FocalLoss, MSELoss."""
import numpy as np

from fastdl import functional as F
from fastdl._checks import check_reduction
from fastdl.nn.module import Module


class CrossEntropyLoss(Module):
    """Softmax cross-entropy from logits (class ``weight``, ``ignore_index``, reduction)."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__()
        check_reduction("CrossEntropyLoss", reduction)
        self.register_buffer("weight", None if weight is None else np.asarray(
            getattr(weight, "data", weight), dtype=np.float64))
        self.ignore_index, self.reduction = int(ignore_index), reduction

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction)


class FocalLoss(Module):
    """Multi-class focal loss from logits; ``gamma=0`` is cross-entropy."""

    def __init__(self, alpha=None, gamma=2.0, reduction="mean", ignore_index=-100):
        super().__init__()
        check_reduction("FocalLoss", reduction)
        if gamma < 0:
            raise ValueError("FocalLoss: gamma must be >= 0, got %r" % (gamma,))
        self.alpha = None if alpha is None else np.asarray(getattr(alpha, "data", alpha),
                                                           dtype=np.float64)
        self.gamma, self.reduction, self.ignore_index = float(gamma), reduction, ignore_index

    def forward(self, input, target):
        return F.focal_loss(input, target, self.alpha, self.gamma, self.reduction,
                            self.ignore_index)


class MSELoss(Module):
    """Mean squared error."""

    def __init__(self, reduction="mean"):
        super().__init__()
        check_reduction("MSELoss", reduction)
        self.reduction = reduction

    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)
