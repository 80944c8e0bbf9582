"""Proximal L1: sparse weights by soft-thresholding after each optimizer step.

An L1 penalty added to the loss gives the subgradient ``l1 * sign(w)``, which
pushes a weight past 0 and back every step: it never becomes exactly 0. The
proximal step instead applies the penalty's proximal operator after the
gradient step::

    w <- sign(w) * max(|w| - lr * l1, 0)

(proximal gradient descent, ISTA), so a weight the L1 term should remove lands
on exactly 0 and stays there while its gradient is smaller than ``l1``.
"""
import numpy as np

from fastdl._checks import non_negative_float
from fastdl.kernels.optim import make_chunks
from fastdl.kernels.proximal import soft_threshold_
from fastdl.optim.optimizer import Optimizer

__all__ = ["ProximalL1"]


class ProximalL1:
    """Wrap an optimizer: after each ``step()``, soft-threshold its parameters by
    ``lr * l1``, with ``lr`` read from each parameter's group at that step (so it
    follows learning-rate schedulers attached to the wrapped optimizer).

    Parameters
    ----------
    optimizer : Optimizer
        Any fastdl optimizer; its flat parameter buffer is thresholded by one fused
        kernel. A group's own ``"l1"`` entry, when present, overrides ``l1``
        (e.g. 0 for biases).
    l1 : float >= 0
        The L1 strength lambda of ``lambda * sum |w|``.

    Only parameters that had a gradient this step are thresholded.
    """

    def __init__(self, optimizer, l1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError("ProximalL1: optimizer must be a fastdl.optim.Optimizer, got %s"
                            % type(optimizer).__name__)
        self.optimizer = optimizer
        self.l1 = non_negative_float("ProximalL1", "l1", l1)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def _thresholds(self):
        """Per parameter, in ``optimizer.params`` order: ``lr * l1`` or 0 without a gradient."""
        values = []
        for group in self.optimizer.param_groups:
            strength = non_negative_float("ProximalL1", "l1", group.get("l1", self.l1))
            for p in group["params"]:
                active = p.grad is not None and p.requires_grad
                values.append(group["lr"] * strength if active else 0.0)
        return np.array(values, dtype=np.float64)

    def step(self, closure=None):
        """``optimizer.step(closure)``, then the proximal step; returns the closure's loss."""
        loss = self.optimizer.step(closure)
        thresholds = self._thresholds()
        flat = getattr(self.optimizer, "flat_params", None)
        params = self.optimizer.params
        if flat is not None and all(np.shares_memory(np.asarray(p), flat) for p in params):
            soft_threshold_(flat, *self.optimizer.chunks, thresholds)
        else:   # an optimizer written torch's way keeps each parameter in its own array
            for p, threshold in zip(params, thresholds):
                data = np.asarray(p)
                if threshold > 0 and data.flags.c_contiguous:
                    soft_threshold_(data.reshape(-1), *make_chunks([0], [data.size]),
                                    np.array([threshold]))
                elif threshold > 0:
                    data[...] = np.sign(data) * np.maximum(np.abs(data) - threshold, 0)
        return loss

    def __repr__(self):
        return "ProximalL1(l1=%s, %r)" % (self.l1, self.optimizer)
