"""Gradient clipping by total norm or by value.

The norm is accumulated in float64 (float32 squares overflow near 1.8e19,
deepmd-kit#5519) over fixed blocks, so it is bitwise the same at any thread
count. When every gradient lives in one optimizer's flat buffer, one pass over
that buffer does it. A non-finite norm never scales gradients into NaN
(pytorch#46849): it raises when asked, else gradients stay untouched and the
norm is returned so the caller can skip the step.
"""
import math

import numpy as np

from fastdl.autograd import Tensor
from fastdl.kernels import optim as kernels
from fastdl.optim.optimizer import grad_array

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    """The gradients' arrays (a Tensor's ``.grad`` is a Tensor or, before, an ndarray)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [grad_array(p) for p in parameters if p.grad is not None]


def _flat_views(grads):
    """One flat array covering exactly ``grads`` when they tile a shared buffer, else each."""
    base = grads[0].base if grads else None
    if base is not None and base.ndim == 1 and all(g.base is base for g in grads) and \
            sum(g.size for g in grads) == base.size and \
            len({g.__array_interface__["data"][0] for g in grads}) == len(grads):
        return [base]
    return [np.ascontiguousarray(g).reshape(-1) for g in grads]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients in place so their total ``norm_type``-norm is at most ``max_norm``.

    Parameters
    ----------
    parameters : Tensor or iterable of Tensor
    max_norm : float
    norm_type : float or ``inf``
    error_if_nonfinite : bool

    Returns
    -------
    numpy.float64
        The total norm before clipping (``float(norm)`` and ``norm.item()`` work,
        as with torch's 0-d tensor).

    Raises
    ------
    RuntimeError
        The total norm is NaN or infinite and ``error_if_nonfinite`` is set.
    """
    if max_norm < 0:
        raise ValueError("clip_grad_norm_: max_norm must be >= 0, got %r" % (max_norm,))
    grads = _grads(parameters)
    if not grads:
        return np.float64(0.0)
    arrays = _flat_views(grads)
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = max(float(kernels.max_abs(a)) for a in arrays)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(kernels.sum_of_squares(a)) for a in arrays))
    else:
        total = sum(float(np.sum(np.abs(a.astype(np.float64)) ** norm_type))
                    for a in arrays) ** (1.0 / norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError("clip_grad_norm_: the total norm of order %s of the gradients "
                               "is non-finite (%s); gradients left unchanged" % (norm_type,
                                                                                  total))
        return np.float64(total)
    coefficient = max_norm / (total + 1e-6)
    if coefficient < 1.0:
        if len(arrays) == 1 and arrays[0] is not grads[0]:
            kernels.scale_(arrays[0], arrays[0].dtype.type(coefficient))
        else:
            for grad in grads:
                grad *= grad.dtype.type(coefficient)
    return np.float64(total)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place."""
    if clip_value < 0:
        raise ValueError("clip_grad_value_: clip_value must be >= 0, got %r" % (clip_value,))
    for grad in _grads(parameters):
        np.clip(grad, -clip_value, clip_value, out=grad)
