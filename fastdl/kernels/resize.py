"""Upsampling by integer scale factors, forward and backward: nearest and bilinear.

Both modes are separable linear maps, ``out = A_h @ x @ A_w^T`` per plane, so
the backward is the adjoint ``A_h^T @ g @ A_w``. Nearest neighbour needs no
matrices (repeat, and sum over the repeated blocks). Bilinear follows torch's
``align_corners=False`` source index ``(dst + 0.5) / scale - 0.5`` clamped at 0.
"""
import numpy as np

__all__ = ["upsample_nearest2d_forward", "upsample_nearest2d_backward",
           "upsample_bilinear2d_forward", "upsample_bilinear2d_backward",
           "bilinear_matrix"]


def upsample_nearest2d_forward(x, scale):
    """Nearest upsampling of ``x (N, C, H, W)`` by integer ``scale = (sh, sw)``."""
    return np.ascontiguousarray(x.repeat(scale[0], axis=2).repeat(scale[1], axis=3))


def upsample_nearest2d_backward(grad_out, scale):
    """Adjoint of nearest upsampling: sum each ``sh × sw`` block of ``grad_out``."""
    n, c, out_h, out_w = grad_out.shape
    blocks = grad_out.reshape(n, c, out_h // scale[0], scale[0], out_w // scale[1], scale[1])
    return blocks.sum(axis=(3, 5))


def bilinear_matrix(size, scale, dtype):
    """(size*scale, size) interpolation matrix of torch's align_corners=False bilinear."""
    out_size = size * scale
    source = np.maximum((np.arange(out_size) + 0.5) / scale - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    fraction = source - low
    matrix = np.zeros((out_size, size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), 1.0 - fraction)
    np.add.at(matrix, (rows, high), fraction)
    return matrix.astype(dtype)


def upsample_bilinear2d_forward(x, scale):
    """Bilinear upsampling (align_corners=False) of ``x (N, C, H, W)`` by ``(sh, sw)``."""
    rows = bilinear_matrix(x.shape[2], scale[0], x.dtype)
    cols = bilinear_matrix(x.shape[3], scale[1], x.dtype)
    return np.ascontiguousarray(np.matmul(np.matmul(rows, x), cols.T))


def upsample_bilinear2d_backward(grad_out, input_shape, scale):
    """Adjoint of bilinear upsampling, shape ``input_shape``."""
    rows = bilinear_matrix(input_shape[2], scale[0], grad_out.dtype)
    cols = bilinear_matrix(input_shape[3], scale[1], grad_out.dtype)
    return np.ascontiguousarray(np.matmul(np.matmul(rows.T, grad_out), cols))
