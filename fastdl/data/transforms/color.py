"""Colour jitter, as torchvision's ``ColorJitter``, vectorised over a batch.

Brightness, contrast, saturation and hue are adjusted in a random order per
image, with torchvision's formulas on ``(..., C, H, W)`` images in [0, 1]
(floats) or [0, 255] (integers): brightness scales; contrast blends with the
image's mean grey level; saturation blends with the per-pixel grey
(``0.2989 R + 0.587 G + 0.114 B``); hue rotates the HSV hue. Saturation and
hue leave one-channel images unchanged. A factor range of ``(1, 1)`` (hue
``(0, 0)``) is skipped, so ``ColorJitter()`` is the identity.
"""
import numpy as np

from fastdl.data._common import numpy_generator
from fastdl.data.transforms._image import back_to_dtype, from_batch, to_batch, working_float
from fastdl.data.transforms.basic import Transform

_GREY = np.array([0.2989, 0.587, 0.114])


def _factor_range(value, name, centre=1.0, bound=(0.0, float("inf"))):
    """``(low, high)`` or None (no change) from a number or a pair."""
    if np.isscalar(value):
        if value < 0:
            raise ValueError("ColorJitter: %s must be non-negative, got %r" % (name, value))
        value = (max(centre - value, bound[0]), centre + value)
    value = tuple(float(v) for v in value)
    if len(value) != 2 or not bound[0] <= value[0] <= value[1] <= bound[1]:
        raise ValueError("ColorJitter: %s must be a (min, max) pair within %s, got %r"
                         % (name, bound, value))
    return None if value[0] == value[1] == centre else value


def grayscale(images):
    """``(N, 1, H, W)`` grey levels of RGB ``(N, 3, H, W)`` images (float)."""
    return np.einsum("nchw,c->nhw", images, _GREY.astype(images.dtype))[:, None]


def rgb_to_hsv(images):
    """HSV ``(N, 3, H, W)`` in [0, 1] of RGB images in [0, 1] (torchvision's formulas)."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    maxc, minc = images.max(axis=1), images.min(axis=1)
    equal = maxc == minc
    chroma = maxc - minc
    saturation = chroma / np.where(equal, 1.0, maxc)
    divisor = np.where(equal, 1.0, chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hue = np.where(maxc == r, bc - gc,
                   np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = np.fmod(hue / 6.0 + 1.0, 1.0)
    return np.stack([hue, saturation, maxc], axis=1)


def hsv_to_rgb(images):
    """RGB ``(N, 3, H, W)`` of HSV images (torchvision's formulas)."""
    h, s, v = images[:, 0], images[:, 1], images[:, 2]
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = sector.astype(np.int64) % 6
    p = np.clip(v * (1.0 - s), 0.0, 1.0)
    q = np.clip(v * (1.0 - s * f), 0.0, 1.0)
    t = np.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    choices = [sector == k for k in range(6)]
    r = np.select(choices, [v, q, p, p, t, v])
    g = np.select(choices, [t, v, v, q, p, p])
    b = np.select(choices, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=1)


class ColorJitter(Transform):
    """Randomly change brightness, contrast, saturation and hue.

    Parameters
    ----------
    brightness, contrast, saturation : number or (min, max)
        A number ``b`` draws the factor from ``[max(0, 1 - b), 1 + b]``.
    hue : number or (min, max)
        A number ``h`` in [0, 0.5] draws the hue shift from ``[-h, h]``.
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        self.brightness = _factor_range(brightness, "brightness")
        self.contrast = _factor_range(contrast, "contrast")
        self.saturation = _factor_range(saturation, "saturation")
        self.hue = _factor_range(hue, "hue", centre=0.0, bound=(-0.5, 0.5))

    def __call__(self, img, rng=None):
        ranges = [self.brightness, self.contrast, self.saturation, self.hue]
        if all(r is None for r in ranges):
            return img
        batch, how = to_batch(img)
        rng = numpy_generator(rng)
        n = len(batch)
        order = np.argsort(rng.random((n, 4)), axis=1)     # a random permutation per image
        factors = [None if r is None else rng.uniform(r[0], r[1], size=n) for r in ranges]
        bound = 1.0 if batch.dtype.kind == "f" else 255.0
        images = working_float(batch).copy()
        adjust = [_brightness, _contrast, _saturation, _hue]
        for position in range(4):
            for op in range(4):
                chosen = np.flatnonzero(order[:, position] == op)
                if factors[op] is None or chosen.size == 0:
                    continue
                factor = factors[op][chosen].astype(images.dtype).reshape(-1, 1, 1, 1)
                images[chosen] = adjust[op](images[chosen], factor, bound)
        return from_batch(back_to_dtype(images, batch.dtype), how)


def _blend(images, other, factor, bound):
    return np.clip(factor * images + (1 - factor) * other, 0, bound)


def _brightness(images, factor, bound):
    return np.clip(images * factor, 0, bound)


def _contrast(images, factor, bound):
    grey = grayscale(images) if images.shape[1] == 3 else images
    if bound == 255.0:
        grey = np.floor(grey)   # torchvision's grey image keeps an integer image's dtype
    mean = grey.mean(axis=(1, 2, 3), keepdims=True)
    return _blend(images, mean, factor, bound)


def _saturation(images, factor, bound):
    if images.shape[1] == 1:
        return images
    grey = grayscale(images)
    if bound == 255.0:
        grey = np.floor(grey)
    return _blend(images, grey, factor, bound)


def _hue(images, shift, bound):
    if images.shape[1] == 1:
        return images
    hsv = rgb_to_hsv(images / bound)
    hsv[:, 0] = np.mod(hsv[:, 0] + shift[:, 0], 1.0)
    return (hsv_to_rgb(hsv) * bound).astype(images.dtype)
