"""Conversions, normalisation, flips, crops and resizes, as torchvision's transforms.

Every transform is called as ``transform(img, rng=None)``: ``img`` a Tensor,
ndarray or PIL image, channels first ``(..., C, H, W)`` (PIL: as PIL). A 4-D
input is a batch and each image gets its own random parameters (torchvision
draws one set for the whole batch); the work is vectorised over the batch.
``rng`` is a ``numpy.random.Generator``; None draws from fastdl's global
generator, so ``fastdl.manual_seed`` (and each DataLoader worker's seed) makes
augmentation reproducible.
"""
import numpy as np

from fastdl.data._common import as_array, as_tensor, like, numpy_generator
from fastdl.data.transforms._image import (apply_resample, check_interpolation, from_batch,
                                           pair, resample_matrix, to_batch)


class Transform:
    """Base class: ``__call__(img, rng=None)`` returns the transformed image."""

    def __call__(self, img, rng=None):
        raise NotImplementedError("Transform subclasses define __call__")  # abstract

    def __repr__(self):
        fields = ", ".join("%s=%r" % item for item in vars(self).items())
        return "%s(%s)" % (type(self).__name__, fields)


class Compose(Transform):
    """Apply ``transforms`` in order (plain callables get the image alone)."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img, rng=None):
        for transform in self.transforms:
            img = transform(img, rng) if isinstance(transform, Transform) else transform(img)
        return img


class Lambda(Transform):
    """A user function as a transform."""

    def __init__(self, lambd):
        if not callable(lambd):
            raise TypeError("Lambda: argument should be callable, got %s"
                            % type(lambd).__name__)
        self.lambd = lambd

    def __call__(self, img, rng=None):
        return self.lambd(img)


class ToTensor(Transform):
    """An ``(H, W, C)`` / ``(H, W)`` image (ndarray or PIL) -> a ``(C, H, W)`` Tensor.

    uint8 pixels are scaled to float32 in [0, 1]; other dtypes keep their
    values (as torchvision's ``ToTensor``).
    """

    def __call__(self, img, rng=None):
        array = np.asarray(img)
        if array.ndim not in (2, 3):
            raise ValueError("ToTensor: expected an (H, W) or (H, W, C) image, got shape %s"
                             % (array.shape,))
        if array.ndim == 2:
            array = array[:, :, None]
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / np.float32(255)
        return as_tensor(array)


class Normalize(Transform):
    """``(x - mean) / std`` per channel of ``(..., C, H, W)`` (``inplace`` is accepted)."""

    def __init__(self, mean, std, inplace=False):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if np.any(self.std <= 0):
            raise ValueError("Normalize: std must be positive, got %s" % (std,))
        self.inplace = inplace

    def __call__(self, img, rng=None):
        return like((as_array(img) - self.mean) / self.std, img)


class RandomHorizontalFlip(Transform):
    """Mirror left-right with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = float(p)

    def __call__(self, img, rng=None):
        return _flip(img, rng, self.p, axis=-1)


class RandomVerticalFlip(Transform):
    """Mirror top-bottom with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = float(p)

    def __call__(self, img, rng=None):
        return _flip(img, rng, self.p, axis=-2)


def _flip(img, rng, p, axis):
    batch, how = to_batch(img)
    flip = numpy_generator(rng).random(len(batch)) < p
    out = batch.copy()
    out[flip] = np.flip(batch[flip], axis=axis)
    return from_batch(out, how)


def _padding(padding, name):
    """``(left, top, right, bottom)`` from an int, a pair or a 4-tuple."""
    if padding is None:
        return (0, 0, 0, 0)
    if np.isscalar(padding):
        padding = (padding,)
    padding = tuple(int(p) for p in padding)
    if len(padding) == 1:
        padding = padding * 4
    elif len(padding) == 2:
        padding = padding * 2
    if len(padding) != 4 or min(padding) < 0:
        raise ValueError("%s: padding must be non-negative: an int, (lr, tb) or "
                         "(left, top, right, bottom), got %r" % (name, padding))
    return padding


def _pad(batch, padding, fill=0, mode="constant"):
    left, top, right, bottom = padding
    if not any(padding):
        return batch
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    if mode == "constant":
        return np.pad(batch, widths, constant_values=fill)
    if mode not in ("edge", "reflect", "symmetric"):
        raise ValueError("padding_mode must be 'constant', 'edge', 'reflect' or 'symmetric', "
                         "got %r" % (mode,))
    return np.pad(batch, widths, mode=mode)


def crop_windows(batch, top, left, size):
    """Each image's ``size`` window at its own ``(top, left)``: one fancy-indexing gather."""
    n, channels = batch.shape[:2]
    height, width = size
    rows = np.asarray(top)[:, None] + np.arange(height)
    cols = np.asarray(left)[:, None] + np.arange(width)
    return np.ascontiguousarray(batch[np.arange(n)[:, None, None, None],
                                      np.arange(channels)[None, :, None, None],
                                      rows[:, None, :, None], cols[:, None, None, :]])


class RandomCrop(Transform):
    """Crop ``size`` at a random position, after optional padding.

    Parameters
    ----------
    size : int or (h, w)
    padding : int, (lr, tb) or (left, top, right, bottom), optional
    pad_if_needed : bool
        Pad an image smaller than ``size`` up to it.
    fill : number
    padding_mode : 'constant', 'edge', 'reflect' or 'symmetric'
    """

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0,
                 padding_mode="constant"):
        self.size = pair(size, "RandomCrop")
        self.padding = _padding(padding, "RandomCrop")
        self.pad_if_needed, self.fill, self.padding_mode = pad_if_needed, fill, padding_mode

    def __call__(self, img, rng=None):
        batch, how = to_batch(img)
        batch = _pad(batch, self.padding, self.fill, self.padding_mode)
        out_h, out_w = self.size
        height, width = batch.shape[-2:]
        if self.pad_if_needed and (height < out_h or width < out_w):
            extra_w, extra_h = max(out_w - width, 0), max(out_h - height, 0)
            batch = _pad(batch, (extra_w, extra_h, extra_w, extra_h), self.fill,
                         self.padding_mode)
            height, width = batch.shape[-2:]
        if out_h > height or out_w > width:
            raise ValueError("RandomCrop: required crop size %s is larger than the (padded) "
                             "image size %s" % (self.size, (height, width)))
        rng = numpy_generator(rng)
        top = rng.integers(0, height - out_h + 1, size=len(batch))
        left = rng.integers(0, width - out_w + 1, size=len(batch))
        return from_batch(crop_windows(batch, top, left, self.size), how)


class CenterCrop(Transform):
    """Crop ``size`` at the centre (zero-padding an image smaller than it)."""

    def __init__(self, size):
        self.size = pair(size, "CenterCrop")

    def __call__(self, img, rng=None):
        batch, how = to_batch(img)
        out_h, out_w = self.size
        height, width = batch.shape[-2:]
        if out_h > height or out_w > width:
            pad_w, pad_h = max(out_w - width, 0), max(out_h - height, 0)
            batch = _pad(batch, (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2))
            height, width = batch.shape[-2:]
        top = int(round((height - out_h) / 2.0))
        left = int(round((width - out_w) / 2.0))
        return from_batch(np.ascontiguousarray(
            batch[:, :, top:top + out_h, left:left + out_w]), how)


def resized_size(height, width, size, max_size=None):
    """Output ``(h, w)`` of Resize: an int matches the shorter edge (torchvision's rule)."""
    if not np.isscalar(size):
        return pair(size, "Resize")
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = int(size), int(int(size) * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), int(max_size)
    return (new_long, new_short) if width <= height else (new_short, new_long)


class Resize(Transform):
    """Resize to ``size``: ``(h, w)``, or an int for the shorter edge (aspect kept).

    Parameters
    ----------
    size : int or (h, w)
    interpolation : 'bilinear' (default) or 'nearest'
    max_size : int, optional
        Cap on the longer edge when ``size`` is an int.
    antialias : bool
        Filter when downscaling (torchvision's default, True).
    """

    def __init__(self, size, interpolation="bilinear", max_size=None, antialias=True):
        if np.isscalar(size) and int(size) < 1:
            raise ValueError("Resize: size must be positive, got %r" % (size,))
        self.size = size if np.isscalar(size) else pair(size, "Resize")
        self.interpolation = check_interpolation(interpolation, "Resize")
        self.max_size, self.antialias = max_size, bool(antialias)

    def __call__(self, img, rng=None):
        batch, how = to_batch(img)
        height, width = batch.shape[-2:]
        out_h, out_w = resized_size(height, width, self.size, self.max_size)
        rows = resample_matrix(height, out_h, [0], [height], self.interpolation, self.antialias)
        cols = resample_matrix(width, out_w, [0], [width], self.interpolation, self.antialias)
        return from_batch(apply_resample(batch, rows, cols), how)


class RandomResizedCrop(Transform):
    """A random crop (area fraction in ``scale``, aspect ratio in ``ratio``) resized to ``size``.

    The crop is drawn as torchvision's (ten tries, then a centre crop); crop
    and resize are one resampling, so no pixel outside the crop is read.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                 interpolation="bilinear", antialias=True):
        self.size = pair(size, "RandomResizedCrop")
        if scale[0] > scale[1] or ratio[0] > ratio[1] or scale[0] < 0 or ratio[0] <= 0:
            raise ValueError("RandomResizedCrop: scale and ratio must be increasing (min, max) "
                             "pairs of positive numbers, got %r and %r" % (scale, ratio))
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interpolation = check_interpolation(interpolation, "RandomResizedCrop")
        self.antialias = bool(antialias)

    def get_params(self, n, height, width, rng):
        """``(top, left, h, w)`` arrays (n,): each image's crop."""
        area = height * width
        log_ratio = np.log(self.ratio)
        target_area = area * rng.uniform(self.scale[0], self.scale[1], size=(n, 10))
        aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1], size=(n, 10)))
        crop_w = np.rint(np.sqrt(target_area * aspect)).astype(np.int64)
        crop_h = np.rint(np.sqrt(target_area / aspect)).astype(np.int64)
        fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
        first = np.argmax(fits, axis=1)
        rows = np.arange(n)
        found = fits[rows, first]
        fallback_h, fallback_w = self._central_crop(height, width)
        crop_h = np.where(found, crop_h[rows, first], fallback_h)
        crop_w = np.where(found, crop_w[rows, first], fallback_w)
        top = np.where(found, np.floor(rng.random(n) * (height - crop_h + 1)),
                       (height - crop_h) // 2).astype(np.int64)
        left = np.where(found, np.floor(rng.random(n) * (width - crop_w + 1)),
                        (width - crop_w) // 2).astype(np.int64)
        return top, left, crop_h, crop_w

    def _central_crop(self, height, width):
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            return int(round(width / min(self.ratio))), width
        if in_ratio > max(self.ratio):
            return height, int(round(height * max(self.ratio)))
        return height, width

    def __call__(self, img, rng=None):
        batch, how = to_batch(img)
        height, width = batch.shape[-2:]
        top, left, crop_h, crop_w = self.get_params(len(batch), height, width,
                                                    numpy_generator(rng))
        rows = resample_matrix(height, self.size[0], top, crop_h, self.interpolation,
                               self.antialias)
        cols = resample_matrix(width, self.size[1], left, crop_w, self.interpolation,
                               self.antialias)
        return from_batch(apply_resample(batch, rows, cols), how)
