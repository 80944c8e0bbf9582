"""Padding of trailing dimensions, forward and backward: constant, reflect, replicate,
circular.

Design
------
* ``widths`` is one ``(before, after)`` pair per padded axis, axis by axis from
  the first padded one (``functional.pad`` turns torch's last-dimension-first
  list into this). Constant padding may be negative (a crop), as torch's.
* The other modes are gathers: per axis, an int64 table of the input position
  each output position reads (``source_positions``), applied axis by axis
  with ``np.take``. The backward is the adjoint, axis by axis in reverse: the
  interior slice copied, then each padded position's gradient added onto its
  source — a loop over the padding widths only (a few positions), each a
  whole-slab NumPy add, in float64 only where NumPy accumulates.
"""
import numpy as np

__all__ = ["source_positions", "pad_forward", "pad_backward"]


def source_positions(size, before, after, mode):
    """Input position read by each of the ``before + size + after`` output positions.

    reflect mirrors without repeating the edge (``[2, 1 | 0, 1, 2 | 1, 0]``),
    replicate repeats it, circular wraps around.
    """
    positions = np.arange(-before, size + after, dtype=np.int64)
    if mode == "reflect":
        period = 2 * (size - 1)
        positions = np.abs(positions) % period if period else np.zeros_like(positions)
        return np.where(positions >= size, period - positions, positions)
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    return positions % size   # circular


def _constant(input_shape, widths):
    """(padded shape, input slices kept, where they land): negative widths crop."""
    ndim = len(input_shape)
    first = ndim - len(widths)
    shape = list(input_shape)
    source = [slice(None)] * ndim
    target = [slice(None)] * ndim
    for axis, (before, after) in enumerate(widths, first):
        size = input_shape[axis]
        shape[axis] = size + before + after
        source[axis] = slice(max(-before, 0), size - max(-after, 0))
        target[axis] = slice(max(before, 0), max(before, 0) + max(
            size - max(-before, 0) - max(-after, 0), 0))
    return shape, tuple(source), tuple(target)


def pad_forward(x, widths, mode="constant", value=0.0):
    """``x`` padded on its last ``len(widths)`` axes.

    Parameters
    ----------
    x : ndarray
    widths : sequence of (before, after) int pairs, one per trailing axis
    mode : {'constant', 'reflect', 'replicate', 'circular'}
    value : float
        Fill of constant padding.

    Returns
    -------
    ndarray, dtype of ``x``
    """
    if mode == "constant":
        shape, source, target = _constant(x.shape, widths)
        out = np.full(shape, value, dtype=x.dtype)
        out[target] = x[source]
        return out
    first = x.ndim - len(widths)
    out = x
    for axis, (before, after) in enumerate(widths, first):
        out = np.take(out, source_positions(x.shape[axis], before, after, mode), axis=axis)
    return np.ascontiguousarray(out)


def pad_backward(grad_out, input_shape, widths, mode="constant"):
    """Gradient of ``pad_forward`` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray, the padded shape
    input_shape : tuple of int
    widths, mode : as given to ``pad_forward``

    Returns
    -------
    ndarray ``input_shape``, dtype of ``grad_out``
    """
    if mode == "constant":
        _, source, target = _constant(input_shape, widths)
        grad_in = np.zeros(input_shape, dtype=grad_out.dtype)
        grad_in[source] = grad_out[target]
        return grad_in
    first = len(input_shape) - len(widths)
    grad = grad_out
    for axis in reversed(range(first, len(input_shape))):
        before, after = widths[axis - first]
        size = input_shape[axis]
        positions = source_positions(size, before, after, mode)
        moved = np.moveaxis(grad, axis, 0)
        folded = moved[before:before + size].copy()
        for j in list(range(before)) + list(range(before + size, before + size + after)):
            folded[positions[j]] += moved[j]
        grad = np.moveaxis(folded, 0, axis)
    return np.ascontiguousarray(grad)
