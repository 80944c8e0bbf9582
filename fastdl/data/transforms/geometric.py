"""Random rotations and affine warps, as torchvision's ``RandomRotation`` and ``RandomAffine``.

Both build torchvision's inverse affine matrix per image and sample through
it (:func:`fastdl.data.transforms._image.warp_affine`), vectorised over a
batch. As in torchvision, ``RandomRotation``'s angle turns the image
counter-clockwise and ``RandomAffine``'s clockwise; the centre is the image
centre unless ``center=(x, y)`` is given; uncovered pixels get ``fill``.
"""
import numpy as np

from fastdl.data._common import numpy_generator
from fastdl.data.transforms._image import (check_interpolation, from_batch, inverse_affine,
                                           to_batch, warp_affine)
from fastdl.data.transforms.basic import Transform


def _range(value, name, centred=True):
    """``(low, high)`` from a number ``d`` (``(-d, d)``) or a pair."""
    if np.isscalar(value):
        if value < 0:
            raise ValueError("%s must be non-negative when a single number, got %r"
                             % (name, value))
        return (-float(value), float(value)) if centred else (float(value), float(value))
    value = tuple(float(v) for v in value)
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError("%s must be a number or a (min, max) pair, got %r" % (name, value))
    return value


def _centre_offset(center, height, width):
    """torchvision's centre, relative to the image centre (``(0, 0)``: the centre)."""
    if center is None:
        return (0.0, 0.0)
    return (float(center[0]) - width * 0.5, float(center[1]) - height * 0.5)


class RandomRotation(Transform):
    """Rotate by an angle drawn uniformly from ``degrees`` (counter-clockwise positive).

    Parameters
    ----------
    degrees : number or (min, max)
        A number ``d`` means ``(-d, d)``.
    interpolation : 'nearest' (default) or 'bilinear'
    expand : bool
        Grow the output to hold the whole rotated image (all images of a
        batch must then need the same size).
    center : (x, y), optional
    fill : number or sequence of per-channel numbers
    """

    def __init__(self, degrees, interpolation="nearest", expand=False, center=None, fill=0):
        self.degrees = _range(degrees, "RandomRotation: degrees")
        self.interpolation = check_interpolation(interpolation, "RandomRotation")
        self.expand, self.center, self.fill = bool(expand), center, fill

    def __call__(self, img, rng=None):
        batch, how = to_batch(img)
        n, _, height, width = batch.shape
        angle = numpy_generator(rng).uniform(self.degrees[0], self.degrees[1], size=n)
        matrices = inverse_affine(-angle, np.zeros((n, 2)), np.ones(n), np.zeros((n, 2)),
                                  _centre_offset(self.center, height, width))
        size = (height, width)
        if self.expand:
            size = _expanded_size(matrices, height, width)
        return from_batch(warp_affine(batch, matrices, size, self.interpolation, self.fill),
                          how)


def _expanded_size(matrices, height, width):
    """torchvision's output size for ``expand=True`` (the rotated corners' extent)."""
    corners = np.array([[-0.5 * width, -0.5 * height, 1.0], [-0.5 * width, 0.5 * height, 1.0],
                        [0.5 * width, 0.5 * height, 1.0], [0.5 * width, -0.5 * height, 1.0]])
    points = corners @ matrices.transpose(0, 2, 1)                # (N, 4, 2)
    tolerance = 1e-4
    high = np.ceil(np.trunc(points.max(axis=1) / tolerance) * tolerance)
    low = np.floor(np.trunc(points.min(axis=1) / tolerance) * tolerance)
    sizes = {(int(h), int(w)) for w, h in (high - low)}
    if len(sizes) != 1:
        raise ValueError("RandomRotation: expand=True gives images of different sizes %s in "
                         "one batch; rotate them one by one" % sorted(sizes))
    return sizes.pop()


class RandomAffine(Transform):
    """A random rotation, translation, scale and shear (torchvision's parameters).

    Parameters
    ----------
    degrees : number or (min, max)
        Rotation (clockwise positive, as torchvision's ``affine``); 0 for none.
    translate : (a, b), optional
        Shifts up to ``a * W`` horizontally and ``b * H`` vertically (rounded
        to whole pixels).
    scale : (min, max), optional
    shear : number, (min, max) or (xmin, xmax, ymin, ymax), optional
        Degrees; a number ``s`` shears along x by ``(-s, s)``.
    interpolation : 'nearest' (default) or 'bilinear'
    fill : number or sequence of per-channel numbers
    center : (x, y), optional
    """

    def __init__(self, degrees, translate=None, scale=None, shear=None,
                 interpolation="nearest", fill=0, center=None):
        self.degrees = _range(degrees, "RandomAffine: degrees")
        if translate is not None and (len(translate) != 2
                                      or not all(0.0 <= t <= 1.0 for t in translate)):
            raise ValueError("RandomAffine: translate must be two fractions in [0, 1], got %r"
                             % (translate,))
        if scale is not None and (len(scale) != 2 or min(scale) <= 0 or scale[0] > scale[1]):
            raise ValueError("RandomAffine: scale must be a (min, max) pair of positive "
                             "numbers, got %r" % (scale,))
        self.translate, self.scale = translate, scale
        self.shear = None if shear is None else self._shear_ranges(shear)
        self.interpolation = check_interpolation(interpolation, "RandomAffine")
        self.fill, self.center = fill, center

    @staticmethod
    def _shear_ranges(shear):
        if np.isscalar(shear):
            return _range(shear, "RandomAffine: shear") + (0.0, 0.0)
        shear = tuple(float(s) for s in shear)
        if len(shear) == 2:
            return shear + (0.0, 0.0)
        if len(shear) == 4:
            return shear
        raise ValueError("RandomAffine: shear must be a number or 2 or 4 numbers, got %r"
                         % (shear,))

    def get_params(self, n, height, width, rng):
        """``(angle, translate, scale, shear)`` arrays for ``n`` images."""
        angle = rng.uniform(self.degrees[0], self.degrees[1], size=n)
        translate = np.zeros((n, 2))
        if self.translate is not None:
            limits = np.array([self.translate[0] * width, self.translate[1] * height])
            translate = np.rint(rng.uniform(-limits, limits, size=(n, 2)))
        scale = np.ones(n) if self.scale is None else rng.uniform(*self.scale, size=n)
        shear = np.zeros((n, 2))
        if self.shear is not None:
            shear[:, 0] = rng.uniform(self.shear[0], self.shear[1], size=n)
            shear[:, 1] = rng.uniform(self.shear[2], self.shear[3], size=n)
        return angle, translate, scale, shear

    def __call__(self, img, rng=None):
        batch, how = to_batch(img)
        n, _, height, width = batch.shape
        params = self.get_params(n, height, width, numpy_generator(rng))
        matrices = inverse_affine(*params, _centre_offset(self.center, height, width))
        return from_batch(warp_affine(batch, matrices, (height, width), self.interpolation,
                                      self.fill), how)
