"""Data parallelism: one broadcast of the weights, one Allreduce of the gradients per step."""
import numpy as np

from fastdl.distributed.comm import get_group


def _flat_by_dtype(arrays):
    groups = {}
    for array in arrays:
        groups.setdefault(array.dtype, []).append(array)
    return groups


def broadcast_parameters(model, root=0, group=None):
    """Copy rank ``root``'s parameters and buffers to every rank (one message per dtype)."""
    group = group or get_group()
    if group.size == 1:
        return
    arrays = [p.array for p in model.parameters()] + [b for b in model.buffers()]
    for dtype, members in _flat_by_dtype(arrays).items():
        flat = np.concatenate([a.reshape(-1) for a in members]).astype(dtype, copy=False)
        group.broadcast_(flat, root)
        offset = 0
        for array in members:
            array.reshape(-1)[...] = flat[offset:offset + array.size]
            offset += array.size


def average_gradients(optimizer, group=None):
    """Average every parameter's gradient across ranks, in place, with one Allreduce.

    The optimizer's flat gradient buffer (``optimizer.gradient_buffer()``, re-packed
    first if a parameter was given a new shape) is reduced as a whole; parameters
    without a gradient on this step contribute zeros (and stay ``None``).
    """
    group = group or get_group()
    if group.size == 1:
        return
    grads = optimizer.gradient_buffer()
    group.allreduce_(grads)
    grads /= grads.dtype.type(group.size)
