"""Image plumbing for the transforms: batch views, resampling matrices, affine warps.

Every transform works on a batch ``(N, C, H, W)``: one image ``(C, H, W)`` is
a batch of one, ``(H, W)`` one channel, and any leading axes are folded into
``N``. The result goes back to the input's shape and kind (Tensor, ndarray or
PIL image).

Resizing is two matrix products, ``Wh @ image @ Ww.T``, with ``Wh (Ho, H)``
and ``Ww (Wo, W)`` holding each output pixel's interpolation weights (one
pair per image for a random crop-and-resize). The weights are the triangle
(bilinear) filter widened by the downscaling factor when antialiasing, which
is what ``torch.nn.functional.interpolate(mode='bilinear', antialias=True)``
computes; without antialiasing it is plain bilinear with half-pixel centres
(``align_corners=False``), edges clamped.

Affine warps map each output pixel back to the input through a 2x3 matrix
(per image) and sample it bilinearly or at the nearest pixel, as
``grid_sample(align_corners=False)`` with zero padding; pixels that land
outside get ``fill``, blended by their in-image weight as torchvision does.
"""
import numpy as np

from fastdl.data._common import as_array, as_tensor, is_tensor


class InterpolationMode:
    """Interpolation names, as ``torchvision.transforms.InterpolationMode``."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"


def check_interpolation(interpolation, name):
    value = getattr(interpolation, "value", interpolation)
    if value not in (InterpolationMode.NEAREST, InterpolationMode.BILINEAR):
        raise ValueError("%s: interpolation must be 'nearest' or 'bilinear', got %r"
                         % (name, interpolation))
    return value


def _is_pil(img):
    return type(img).__module__.startswith("PIL.")


def to_batch(img):
    """``(batch (N, C, H, W) ndarray, how)``: ``how`` restores the input's shape and kind."""
    if _is_pil(img):
        array = np.asarray(img)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return array[None], ("pil", array.shape, img)
    array = as_array(img)
    if array.ndim < 2:
        raise ValueError("expected an image (..., H, W), got shape %s" % (array.shape,))
    if array.ndim == 2:
        return array[None, None], ("array", array.shape, img)
    return array.reshape((-1,) + array.shape[-3:]), ("array", array.shape, img)


def from_batch(batch, how):
    """The inverse of :func:`to_batch` for a batch of (possibly resized) images."""
    kind, shape, original = how
    if kind == "pil":
        from PIL import Image
        image = batch[0]
        image = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        return Image.fromarray(np.ascontiguousarray(image).astype(np.uint8))
    if len(shape) == 2:
        out = batch[0, 0]
    else:
        out = batch.reshape(shape[:-3] + batch.shape[1:])
    return as_tensor(out) if is_tensor(original) else out


def working_float(batch):
    """The batch as floats to compute on (integers go through float32)."""
    return batch if batch.dtype.kind == "f" else batch.astype(np.float32)


def back_to_dtype(result, dtype):
    """``result`` cast back to the image's dtype (integers rounded and clipped)."""
    if dtype.kind == "f":
        return result.astype(dtype, copy=False)
    if dtype == np.bool_:
        return result > 0.5
    info = np.iinfo(dtype)
    return np.clip(np.rint(result), info.min, info.max).astype(dtype)


def pair(size, name):
    """``(h, w)`` from an int or a pair."""
    if np.isscalar(size):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError("%s: size must be a positive int or (h, w), got %r" % (name, size))
    return size


def resample_matrix(in_len, out_len, start, length, interpolation="bilinear", antialias=True):
    """Interpolation weights from source windows onto ``out_len`` output pixels.

    Parameters
    ----------
    in_len, out_len : int
    start, length : array (N,)
        Each image's source window ``[start, start + length)`` (pixels).
    interpolation : 'bilinear' or 'nearest'
    antialias : bool
        Widen the bilinear filter by the downscaling factor.

    Returns
    -------
    float64 (N, out_len, in_len); rows sum to 1.
    """
    start = np.asarray(start, dtype=np.float64).reshape(-1, 1)
    length = np.asarray(length, dtype=np.float64).reshape(-1, 1)
    scale = length / out_len                                    # (N, 1)
    outputs = np.arange(out_len)[None, :]
    source = np.arange(in_len)[None, None, :]
    if interpolation == "nearest":
        nearest = start + np.minimum(np.floor(outputs * scale), length - 1)
        return (source == nearest[:, :, None]).astype(np.float64)
    centre = start + (outputs + 0.5) * scale - 0.5               # (N, out_len)
    support = np.maximum(scale, 1.0) if antialias else np.ones_like(scale)
    weights = np.maximum(0.0, 1.0 - np.abs(source - centre[:, :, None]) / support[:, :, None])
    inside = (source >= start[:, :, None]) & (source < start[:, :, None] + length[:, :, None])
    weights *= inside
    return weights / weights.sum(axis=2, keepdims=True)


def apply_resample(batch, rows, cols):
    """``rows @ image @ cols.T`` per image: rows (N or 1, Ho, H), cols (N or 1, Wo, W)."""
    dtype = batch.dtype
    images = working_float(batch)
    rows = rows.astype(images.dtype)[:, None]
    cols = cols.astype(images.dtype)[:, None]
    out = np.matmul(np.matmul(rows, images), np.swapaxes(cols, -1, -2))
    return back_to_dtype(out, dtype)


def inverse_affine(angle, translate, scale, shear, center):
    """torchvision's inverse affine matrix, vectorised: output -> input, centred coordinates.

    Parameters
    ----------
    angle : (N,) degrees, clockwise (``rotate`` passes ``-angle``)
    translate : (N, 2) pixels ``(tx, ty)``
    scale : (N,)
    shear : (N, 2) degrees ``(sx, sy)``
    center : (2,) ``(cx, cy)`` relative to the image centre

    Returns
    -------
    (N, 2, 3) float64
    """
    rot = np.radians(angle)
    sx, sy = np.radians(shear[:, 0]), np.radians(shear[:, 1])
    cx, cy = center
    tx, ty = translate[:, 0], translate[:, 1]
    a = np.cos(rot - sy) / np.cos(sy)
    b = -np.cos(rot - sy) * np.tan(sx) / np.cos(sy) - np.sin(rot)
    c = np.sin(rot - sy) / np.cos(sy)
    d = -np.sin(rot - sy) * np.tan(sx) / np.cos(sy) + np.cos(rot)
    m = np.stack([d, -b, np.zeros_like(a), -c, a, np.zeros_like(a)], axis=1) / scale[:, None]
    m[:, 2] += m[:, 0] * (-cx - tx) + m[:, 1] * (-cy - ty) + cx
    m[:, 5] += m[:, 3] * (-cx - tx) + m[:, 4] * (-cy - ty) + cy
    return m.reshape(-1, 2, 3)


def warp_affine(batch, matrices, out_size, interpolation, fill):
    """Sample every image at its matrix's source points.

    Parameters
    ----------
    batch : (N, C, H, W)
    matrices : (N, 2, 3)
        Output pixel -> input pixel, both in coordinates centred on the image
        (pixel ``(x, y)`` is at ``x - (W - 1) / 2``, ``y - (H - 1) / 2``).
    out_size : (Ho, Wo)
    interpolation : 'bilinear' or 'nearest'
    fill : float or sequence of C floats

    Returns
    -------
    (N, C, Ho, Wo), the batch's dtype.
    """
    n, channels, height, width = batch.shape
    out_h, out_w = out_size
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    grid = np.stack([xs.ravel() - (out_w - 1) / 2, ys.ravel() - (out_h - 1) / 2,
                     np.ones(out_h * out_w)])                     # (3, P)
    source = matrices @ grid                                      # (N, 2, P)
    sx = source[:, 0] + (width - 1) / 2
    sy = source[:, 1] + (height - 1) / 2
    if interpolation == "nearest":
        corners = [(np.rint(sx), np.rint(sy), np.ones_like(sx))]
    else:
        x0, y0 = np.floor(sx), np.floor(sy)
        wx, wy = sx - x0, sy - y0
        corners = [(x0, y0, (1 - wx) * (1 - wy)), (x0 + 1, y0, wx * (1 - wy)),
                   (x0, y0 + 1, (1 - wx) * wy), (x0 + 1, y0 + 1, wx * wy)]
    images = working_float(batch)
    flat = images.reshape(n, channels, height * width)
    out = np.zeros((n, channels, out_h * out_w), dtype=images.dtype)
    covered = np.zeros((n, 1, out_h * out_w), dtype=images.dtype)
    for cx, cy, weight in corners:
        valid = (cx >= 0) & (cx <= width - 1) & (cy >= 0) & (cy <= height - 1)
        index = (np.clip(cy, 0, height - 1) * width + np.clip(cx, 0, width - 1)).astype(np.intp)
        weight = (weight * valid).astype(images.dtype)[:, None, :]
        out += np.take_along_axis(flat, index[:, None, :], axis=2) * weight
        covered += weight
    fill = np.broadcast_to(np.asarray(fill, dtype=images.dtype).reshape(-1), (channels,))
    fill = fill[None, :, None]
    if interpolation == "nearest":
        out = np.where(covered < 0.5, fill, out)
    else:   # torchvision's blend: the zero-padded sample times its coverage, plus the fill
        out = out * covered + (1 - covered) * fill
    return back_to_dtype(out.reshape(n, channels, out_h, out_w), batch.dtype)
