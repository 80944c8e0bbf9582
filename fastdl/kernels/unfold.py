"""Sliding-window extraction and its adjoint, as torch's ``unfold`` / ``fold``.

``unfold`` copies every ``kh x kw`` window (dilated, strided, over the
zero-padded input) into a column: ``(N, C, H, W) -> (N, C*kh*kw, L)``, rows
ordered ``(c, i, j)`` and columns row-major over the ``OH x OW`` window grid.
``fold`` sums columns back into an image and is its adjoint, so each is the
other's backward. Both loop over the ``kh * kw`` kernel offsets only, each
step one strided NumPy slice of the whole batch (a few offsets, large slices).
"""
import numpy as np

__all__ = ["grid_size", "unfold_forward", "fold_forward"]


def grid_size(size, kernel, dilation, padding, stride):
    """Number of window positions along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _offsets(kernel, dilation, stride, grid):
    """For each kernel offset ``(i, j)``: the padded-image slices its column entries read."""
    for i in range(kernel[0]):
        rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (grid[0] - 1) + 1,
                     stride[0])
        for j in range(kernel[1]):
            cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (grid[1] - 1) + 1,
                         stride[1])
            yield i * kernel[1] + j, rows, cols


def unfold_forward(x, kernel, dilation, padding, stride):
    """Columns of every window of ``x (N, C, H, W)``.

    Parameters
    ----------
    kernel, dilation, padding, stride : pairs of int

    Returns
    -------
    ndarray (N, C * kh * kw, OH * OW), dtype of ``x``
    """
    n, c, height, width = x.shape
    grid = (grid_size(height, kernel[0], dilation[0], padding[0], stride[0]),
            grid_size(width, kernel[1], dilation[1], padding[1], stride[1]))
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    out = np.empty((n, c, kernel[0] * kernel[1]) + grid, dtype=x.dtype)
    for offset, rows, cols in _offsets(kernel, dilation, stride, grid):
        out[:, :, offset] = padded[:, :, rows, cols]
    return out.reshape(n, c * kernel[0] * kernel[1], grid[0] * grid[1])


def fold_forward(columns, output_size, kernel, dilation, padding, stride):
    """Sum the columns ``(N, C * kh * kw, L)`` back into images ``(N, C) + output_size``.

    Overlapping windows add up; the adjoint of ``unfold_forward``.
    """
    n = columns.shape[0]
    c = columns.shape[1] // (kernel[0] * kernel[1])
    grid = (grid_size(output_size[0], kernel[0], dilation[0], padding[0], stride[0]),
            grid_size(output_size[1], kernel[1], dilation[1], padding[1], stride[1]))
    blocks = columns.reshape((n, c, kernel[0] * kernel[1]) + grid)
    padded = np.zeros((n, c, output_size[0] + 2 * padding[0],
                       output_size[1] + 2 * padding[1]), dtype=columns.dtype)
    for offset, rows, cols in _offsets(kernel, dilation, stride, grid):
        padded[:, :, rows, cols] += blocks[:, :, offset]
    return np.ascontiguousarray(padded[:, :, padding[0]:padding[0] + output_size[0],
                                       padding[1]:padding[1] + output_size[1]])
