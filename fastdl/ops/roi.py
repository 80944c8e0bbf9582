"""RoI features: RoI Align, RoI pooling and multi-scale RoI Align over FPN levels.

As ``torchvision.ops``: ``boxes`` is either a ``(K, 5)`` array of
``[batch_index, x1, y1, x2, y2]`` rows or a list of ``(K_i, 4)`` arrays, one per
image; coordinates are in input-image pixels and ``spatial_scale`` maps them
onto the feature map. The output is ``(K, C, PH, PW)``, one row per box in
order. Gradients flow to the features (not to the boxes), through the
compiled kernels of ``fastdl.kernels.detection``.
"""
import math

import numpy as np

from fastdl._checks import is_int, is_real, pair
from fastdl.autograd import Function, Tensor
from fastdl.kernels import detection as kernels
from fastdl.nn import Module
from fastdl.tensor_shape import cat

__all__ = ["roi_align", "roi_pool", "RoIAlign", "RoIPool", "LevelMapper",
           "MultiScaleRoIAlign", "convert_boxes_to_roi_format"]


# ---------------------------------------------------------------------- arguments
def _features(op, input):   # noqa: A002 (torchvision's argument name)
    tensor = input if isinstance(input, Tensor) else Tensor(np.asarray(input))
    if tensor.dtype not in (np.float32, np.float64):
        raise TypeError("%s: input must be float32 or float64, got %s" % (op, tensor.dtype))
    if tensor.ndim != 4:
        raise ValueError("%s: input must have shape (N, C, H, W), got %s"
                         % (op, tuple(tensor.shape)))
    return tensor


def convert_boxes_to_roi_format(boxes, dtype=np.float64):
    """A list of ``(K_i, 4)`` boxes per image as one ``(K, 5)`` array
    ``[image_index, x1, y1, x2, y2]``."""
    rows = []
    for index, image_boxes in enumerate(boxes):
        array = np.asarray(image_boxes, dtype=dtype)
        if array.ndim != 2 or array.shape[1] != 4:
            raise ValueError("boxes[%d] must have shape (K, 4), got %s" % (index, array.shape))
        rows.append(np.concatenate([np.full((len(array), 1), index, dtype=dtype), array], 1))
    return np.concatenate(rows) if rows else np.zeros((0, 5), dtype=dtype)


def _rois(op, boxes, features):
    """``(rois (K, 5) in the features' dtype, batch (K,) int64)``, checked."""
    dtype = features.dtype
    if isinstance(boxes, (list, tuple)):
        try:
            rois = convert_boxes_to_roi_format(boxes, dtype)
        except ValueError as error:
            raise ValueError("%s: %s" % (op, error)) from None
    else:
        rois = np.asarray(boxes)
        if rois.ndim != 2 or rois.shape[1] != 5:
            raise ValueError("%s: boxes must be (K, 5) [batch_index, x1, y1, x2, y2] or a list "
                             "of (K_i, 4) per image, got shape %s" % (op, rois.shape))
        rois = np.ascontiguousarray(rois, dtype=dtype)
    if not np.isfinite(rois).all():
        raise ValueError("%s: boxes contain NaN or infinite values" % op)
    batch = rois[:, 0]
    images = features.shape[0]
    if np.any(batch != np.round(batch)) or np.any(batch < 0) or np.any(batch >= images):
        raise ValueError("%s: box batch indices must be integers in [0, %d), got %s"
                         % (op, images, np.unique(batch)[:5]))
    return rois, batch.astype(np.int64)


def _output_size(op, output_size):
    height, width = pair(output_size, "output_size", op)
    if height < 1 or width < 1:
        raise ValueError("%s: output_size must be positive, got %r" % (op, output_size))
    return height, width


def _spatial_scale(op, spatial_scale):
    if isinstance(spatial_scale, bool) or not is_real(spatial_scale) or \
            not spatial_scale > 0 or not math.isfinite(spatial_scale):
        raise ValueError("%s: spatial_scale must be a number > 0, got %r" % (op, spatial_scale))
    return float(spatial_scale)


# ---------------------------------------------------------------------- RoI Align
class RoIAlignFunction(Function):
    """Inputs: (features, rois, batch, output_size, spatial_scale, sampling_ratio, aligned)."""

    @staticmethod
    def forward(ctx, features, rois, batch, output_size, spatial_scale, sampling_ratio,
                aligned):
        ctx.save_for_backward(rois, batch)
        ctx.options = (features.shape, spatial_scale, sampling_ratio, aligned)
        return kernels.roi_align_forward(features, rois, batch, output_size, spatial_scale,
                                         sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad_output):
        rois, batch = ctx.saved_tensors
        shape, spatial_scale, sampling_ratio, aligned = ctx.options
        grad = kernels.roi_align_backward(np.asarray(grad_output), rois, batch, shape,
                                          spatial_scale, sampling_ratio, aligned)
        return grad, None, None, None, None, None, None


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1,   # noqa: A002
              aligned=False):
    """RoI Align (Mask R-CNN), torchvision's semantics.

    Each output bin averages ``sampling_ratio x sampling_ratio`` bilinear samples
    (``ceil(roi_size / output_size)`` per axis when ``sampling_ratio <= 0``).
    ``aligned=True`` shifts the box by -0.5 pixel so that pixel centres line up;
    ``aligned=False`` (the legacy form) makes every box at least 1x1.

    Parameters
    ----------
    input : Tensor or ndarray (N, C, H, W), float32 or float64
    boxes : (K, 5) ``[batch_index, x1, y1, x2, y2]`` or list of (K_i, 4)
    output_size : int or (PH, PW)
    spatial_scale : float > 0, feature cells per input pixel (1/stride)
    sampling_ratio : int
    aligned : bool

    Returns
    -------
    Tensor (K, C, PH, PW)
    """
    features = _features("roi_align", input)
    rois, batch = _rois("roi_align", boxes, features)
    output_size = _output_size("roi_align", output_size)
    if not is_int(sampling_ratio):
        raise TypeError("roi_align: sampling_ratio must be an int, got %r" % (sampling_ratio,))
    return RoIAlignFunction.apply(features, rois, batch, output_size,
                                  _spatial_scale("roi_align", spatial_scale),
                                  int(sampling_ratio), bool(aligned))


# ---------------------------------------------------------------------- RoI pool
class RoIPoolFunction(Function):
    """Inputs: (features, rois, batch, output_size, spatial_scale)."""

    @staticmethod
    def forward(ctx, features, rois, batch, output_size, spatial_scale):
        out, argmax = kernels.roi_pool_forward(features, rois, batch, output_size,
                                               spatial_scale)
        ctx.save_for_backward(batch, argmax)
        ctx.input_shape = features.shape
        return out

    @staticmethod
    def backward(ctx, grad_output):
        batch, argmax = ctx.saved_tensors
        grad = kernels.roi_pool_backward(np.asarray(grad_output), batch, argmax,
                                         ctx.input_shape)
        return grad, None, None, None, None


def roi_pool(input, boxes, output_size, spatial_scale=1.0):   # noqa: A002
    """RoI max pooling (Fast R-CNN), torchvision's semantics.

    Box corners are scaled and rounded to cells; each bin takes the maximum of its
    cells (0 for an empty bin) and routes the gradient to its first maximum.
    Arguments as :func:`roi_align`.
    """
    features = _features("roi_pool", input)
    rois, batch = _rois("roi_pool", boxes, features)
    return RoIPoolFunction.apply(features, rois, batch, _output_size("roi_pool", output_size),
                                 _spatial_scale("roi_pool", spatial_scale))


class RoIAlign(Module):
    """:func:`roi_align` as a layer."""

    def __init__(self, output_size, spatial_scale, sampling_ratio, aligned=False):
        super().__init__()
        self.output_size = _output_size("RoIAlign", output_size)
        self.spatial_scale = _spatial_scale("RoIAlign", spatial_scale)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input, rois):   # noqa: A002
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self):
        return "output_size=%s, spatial_scale=%s, sampling_ratio=%s, aligned=%s" % (
            self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)


class RoIPool(Module):
    """:func:`roi_pool` as a layer."""

    def __init__(self, output_size, spatial_scale):
        super().__init__()
        self.output_size = _output_size("RoIPool", output_size)
        self.spatial_scale = _spatial_scale("RoIPool", spatial_scale)

    def forward(self, input, rois):   # noqa: A002
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self):
        return "output_size=%s, spatial_scale=%s" % (self.output_size, self.spatial_scale)


# ------------------------------------------------------------------ FPN levels
class LevelMapper:
    """The FPN level of each box (Feature Pyramid Networks, eq. 1), as torchvision's.

    ``level = floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)``,
    clamped to ``[k_min, k_max]``; returned as an index from ``k_min``. A
    zero-area box goes to ``k_min`` (log2(0) = -inf, clamped).
    """

    def __init__(self, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
        if not (is_int(k_min) and is_int(k_max)) or k_min > k_max:
            raise ValueError("LevelMapper: need integers k_min <= k_max, got %r, %r"
                             % (k_min, k_max))
        if not is_real(canonical_scale) or canonical_scale <= 0:
            raise ValueError("LevelMapper: canonical_scale must be > 0, got %r"
                             % (canonical_scale,))
        self.k_min, self.k_max = int(k_min), int(k_max)
        self.canonical_scale, self.canonical_level = float(canonical_scale), canonical_level
        self.eps = eps

    def __call__(self, boxlists):
        """int64 ``(K,)`` level indices of the boxes of every image, in order."""
        rois = convert_boxes_to_roi_format(boxlists)
        area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
        with np.errstate(divide="ignore"):
            levels = np.floor(self.canonical_level + np.log2(np.sqrt(np.maximum(area, 0))
                                                             / self.canonical_scale) + self.eps)
        levels = np.clip(levels, self.k_min, self.k_max)
        return levels.astype(np.int64) - self.k_min


def _infer_scale(feature_size, image_size):
    """The power of two nearest to feature size / image size (equal on both axes)."""
    scales = [2.0 ** round(math.log2(f / i)) for f, i in zip(feature_size, image_size)]
    if scales[0] != scales[1]:
        raise ValueError("MultiScaleRoIAlign: feature map %s is not one scale of the image "
                         "size %s on both axes" % (tuple(feature_size), tuple(image_size)))
    return scales[0]


class MultiScaleRoIAlign(Module):
    """RoI Align over an FPN: each box is pooled from the level :class:`LevelMapper`
    assigns it (torchvision's ``MultiScaleRoIAlign``, ``aligned=False``).

    ``forward(x, boxes, image_shapes)``: ``x`` a dict of feature maps (N, C, H_l, W_l),
    ``boxes`` a list of (K_i, 4) per image, ``image_shapes`` a list of (H, W). The
    scale of each level is inferred from its size relative to the largest image.
    Returns ``(K, C, PH, PW)``, the boxes in order.
    """

    def __init__(self, featmap_names, output_size, sampling_ratio, canonical_scale=224,
                 canonical_level=4):
        super().__init__()
        if isinstance(featmap_names, str) or not featmap_names:
            raise ValueError("MultiScaleRoIAlign: featmap_names must be a non-empty list of "
                             "names, got %r" % (featmap_names,))
        self.featmap_names = list(featmap_names)
        self.output_size = _output_size("MultiScaleRoIAlign", output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level

    def _mapper(self, scales):
        k_min, k_max = -math.log2(scales[0]), -math.log2(scales[-1])
        return LevelMapper(int(k_min), int(k_max), self.canonical_scale, self.canonical_level)

    def forward(self, x, boxes, image_shapes):
        missing = [name for name in self.featmap_names if name not in x]
        if missing:
            raise KeyError("MultiScaleRoIAlign: feature maps %s missing from x" % missing)
        features = [_features("MultiScaleRoIAlign", x[name]) for name in self.featmap_names]
        if not image_shapes:
            raise ValueError("MultiScaleRoIAlign: image_shapes must list (H, W) per image")
        image_size = tuple(max(shape[axis] for shape in image_shapes) for axis in (0, 1))
        scales = [_infer_scale(f.shape[-2:], image_size) for f in features]
        rois = convert_boxes_to_roi_format(boxes, features[0].dtype)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, scales[0],
                             self.sampling_ratio)
        levels = self._mapper(scales)(boxes)
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, scales)):
            members = np.nonzero(levels == level)[0]
            pooled.append(roi_align(feature, rois[members], self.output_size, scale,
                                    self.sampling_ratio))
            order.append(members)
        inverse = np.argsort(np.concatenate(order), kind="stable")
        return cat(pooled, dim=0)[inverse]
