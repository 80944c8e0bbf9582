"""ONNX's Resize as the plan's resize op (torch's ``interpolate``), for
:mod:`fastdl.deploy.onnx_import`.

=========================================================  ============================
Resize                                                     resize
=========================================================  ============================
nearest, asymmetric, floor (torch's export of nearest)     nearest
nearest, half_pixel (or pytorch_half_pixel) with           nearest_exact
  round_prefer_ceil, tf_half_pixel_for_nn with floor
nearest, any other coordinates / rounding                  nearest or nearest_exact where
                                                           one reads the same pixels at
                                                           these sizes, else refused
linear, half_pixel (pytorch_half_pixel: outputs > 1)       bilinear
linear, align_corners                                      bilinear, align_corners
cubic, cubic_coeff_a -0.75, exclude_outside 0, as linear   bicubic
=========================================================  ============================

``scales`` keep ONNX's (and torch's ``scale_factor``) coordinate mapping (the plan's
``scale``); ``sizes`` map by ``in / out``. Scales or sizes of the batch and channel
axes must leave them unchanged; antialiasing is accepted where nothing is downsampled
(it is then a no-op). Anything else is refused naming the attribute.
"""
import math

import numpy as np

from fastdl.deploy import _onnx_fold as fold
from fastdl.deploy._onnx_files import _fail
from fastdl.deploy._onnx_layout import image, output_sizes

_ALLOWED = {"mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
            "exclude_outside", "extrapolation_value", "antialias", "axes",
            "keep_aspect_ratio_policy"}


def _onnx_nearest(size, out, scale, coordinate, rounding, length):
    """The input index ONNX's nearest mode reads for each output index of one axis
    (``length``: ONNX's resized length, ``size * scale`` unrounded where scales are
    given)."""
    x = np.arange(out, dtype=np.float64)
    if coordinate == "half_pixel":
        src = (x + 0.5) / scale - 0.5
    elif coordinate == "pytorch_half_pixel":
        src = (x + 0.5) / scale - 0.5 if length > 1 else np.zeros(out)
    elif coordinate == "align_corners":
        src = x * (size - 1) / (length - 1) if out > 1 else np.zeros(out)
    elif coordinate == "asymmetric":
        src = x / scale
    elif coordinate == "tf_half_pixel_for_nn":
        src = (x + 0.5) / scale
    else:   # half_pixel_symmetric
        offset = size / 2 * (1 - out / (scale * size))
        src = offset + (x + 0.5) / scale - 0.5
    index = {"round_prefer_floor": np.ceil(src - 0.5), "round_prefer_ceil": np.floor(src + 0.5),
             "floor": np.floor(src), "ceil": np.ceil(src)}[rounding]
    return np.clip(index, 0, size - 1).astype(np.int64)


def _nearest_mode(imp, node, sizes, out, scales, coordinate, rounding):
    """The plan's nearest mode that reads the pixels ONNX's does, else None."""
    direct = {("asymmetric", "floor"): "nearest",
              ("tf_half_pixel_for_nn", "floor"): "nearest_exact",
              ("half_pixel", "round_prefer_ceil"): "nearest_exact"}
    if (coordinate, rounding) in direct:
        return direct[(coordinate, rounding)]
    if (coordinate, rounding) == ("pytorch_half_pixel", "round_prefer_ceil") and min(out) > 1:
        return "nearest_exact"
    from fastdl.kernels.resample import nearest_taps
    for mode in ("nearest", "nearest_exact"):
        if all(np.array_equal(
                _onnx_nearest(n, o, s if s is not None else o / n, coordinate, rounding,
                              _length(n, o, s)),
                nearest_taps(n, o, s, mode == "nearest_exact")[0][:, 0])
               for n, o, s in zip(sizes, out, scales)):
            return mode
    return None


def _length(size, out, scale):
    """ONNX's resized length of an axis: ``size * scale`` unrounded where a scale is
    given (align_corners and pytorch_half_pixel map by it), else the output size."""
    return out if scale is None else size * scale


def _coordinates(imp, node, sizes, out, scales, coordinate):
    """``align_corners`` of the plan's linear and cubic modes for ONNX's ``coordinate``
    mode where it maps as torch's does at these sizes, else refused."""
    lengths = [_length(n, o, s) for n, o, s in zip(sizes, out, scales)]
    if coordinate == "align_corners":
        if all(o == 1 or length == o for o, length in zip(out, lengths)):
            return True
        _fail("%s: coordinate_transformation_mode 'align_corners' with scales %s maps by "
              "the unrounded output length %s, torch's by the output size %s"
              % (imp.where(node), scales, lengths, out))
    if coordinate == "half_pixel":
        return False
    if coordinate == "pytorch_half_pixel":
        if all(length > 1 or n == 1 for n, length in zip(sizes, lengths)):
            return False
        _fail("%s: coordinate_transformation_mode 'pytorch_half_pixel' to an output of "
              "size 1 reads the first pixel, torch's half-pixel mapping the centre"
              % imp.where(node))
    if coordinate == "half_pixel_symmetric" and all(
            o == n * (s if s is not None else o / n) for n, o, s in zip(sizes, out, scales)):
        return False   # no offset where the output is exactly in * scale
    return None


def _targets(imp, node, shape, attributes):
    """``(output (H, W), scales (H, W) or None each)`` from Resize's scales or sizes."""
    where = imp.where(node)
    axes = attributes.get("axes")
    axes = list(range(4)) if axes is None else [int(a) % 4 for a in axes]
    if len(set(axes)) != len(axes):
        _fail("%s: repeated axes %s" % (where, axes))
    scales = imp.constant(node, imp.input(node, 2), optional=True)
    sizes = imp.known(node, imp.input(node, 3))
    if scales is not None and scales.size == 0:
        scales = None
    if (scales is None) == (sizes is None):
        _fail("%s: exactly one of scales and sizes must be given" % where)
    full_scales, full_sizes = [1.0] * 4, list(shape)
    if scales is not None:
        values = [float(v) for v in np.asarray(scales, np.float64).reshape(-1)]
        if len(values) != len(axes) or not all(math.isfinite(v) and v > 0 for v in values):
            _fail("%s: scales %s must be %d positive numbers" % (where, values, len(axes)))
        for axis, value in zip(axes, values):
            full_scales[axis] = value
        if full_scales[:2] != [1.0, 1.0]:
            _fail("%s: scales %s resize the batch or channel axis" % (where, values))
        out = [int(math.floor(min(n * s, 2.0 ** 62))) for n, s in zip(shape[2:],
                                                                     full_scales[2:])]
        return out, full_scales[2:]
    values, batched = fold.batch_sizes(where, "sizes", sizes, axes.index(0) if 0 in axes
                                       else -1)
    if len(values) != len(axes):
        _fail("%s: %d sizes for %d axes" % (where, len(values), len(axes)))
    for axis, value in zip(axes, values):
        full_sizes[axis] = value
    batch_kept = 0 not in axes or batched or values[axes.index(0)] in (1, imp.batch)
    if not batch_kept or full_sizes[1] != shape[1]:
        _fail("%s: sizes %s resize the batch or channel axis" % (where, values))
    if attributes.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        _fail("%s: keep_aspect_ratio_policy %r is not supported (only stretch)"
              % (where, attributes["keep_aspect_ratio_policy"]))
    return full_sizes[2:], [None, None]


def resize(imp, node):
    attributes = imp.attributes(node, _ALLOWED)
    where = imp.where(node)
    if imp.opset < 11:
        _fail("%s: Resize before opset 11 is not supported" % where)
    x, shape = image(imp, node, node.input[0])
    out, scales = _targets(imp, node, shape, attributes)
    sizes = list(shape[2:])
    output_sizes(imp, node, out)
    mode = attributes.get("mode", "nearest")
    coordinate = attributes.get("coordinate_transformation_mode", "half_pixel")
    if coordinate not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                          "tf_half_pixel_for_nn", "half_pixel_symmetric"):
        _fail("%s: coordinate_transformation_mode %r is not supported" % (where, coordinate))
    if attributes.get("antialias", 0) and mode != "nearest" and any(
            o < n for n, o in zip(sizes, out)):
        _fail("%s: antialias=1 while downsampling is not supported" % where)
    if mode == "nearest":
        rounding = attributes.get("nearest_mode", "round_prefer_floor")
        if rounding not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
            _fail("%s: nearest_mode %r is not supported" % (where, rounding))
        kind = _nearest_mode(imp, node, sizes, out, scales, coordinate, rounding)
        if kind is None:
            _fail("%s: coordinate_transformation_mode %r with nearest_mode %r reads other "
                  "pixels than torch's nearest modes at these sizes" % (where, coordinate,
                                                                        rounding))
        align = False
    elif mode in ("linear", "cubic"):
        kind = "bilinear" if mode == "linear" else "bicubic"
        align = _coordinates(imp, node, sizes, out, scales, coordinate)
        if align is None:
            _fail("%s: coordinate_transformation_mode %r is not supported for mode %r (only "
                  "half_pixel, pytorch_half_pixel and align_corners)" % (where, coordinate,
                                                                         mode))
        if mode == "cubic":
            if not math.isclose(attributes.get("cubic_coeff_a", -0.75), -0.75,
                                rel_tol=1e-6):
                _fail("%s: cubic_coeff_a %r is not supported (only -0.75, torch's)"
                      % (where, attributes["cubic_coeff_a"]))
            if attributes.get("exclude_outside", 0):
                _fail("%s: exclude_outside=1 is not supported" % where)
    else:
        _fail("%s: mode %r is not supported" % (where, mode))
    if out == sizes and all(s in (None, 1.0) for s in scales):
        return imp.alias(node.output[0], x)
    ref = imp.emit(node, "resize", [x], mode=kind, size=out, align_corners=align,
                   scale=None if scales == [None, None] else scales)
    imp.alias(node.output[0], ref)


__all__ = ["resize"]
