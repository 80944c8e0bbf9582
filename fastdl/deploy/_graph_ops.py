"""The graph ops of an inference plan: elementwise arithmetic, concatenation, slicing,
reshaping, transposition, resizing, softmax and group/layer normalisation.

Each op has its fields (``ATTRIBUTES``, ``ROLES``, ``INPUTS``), a shape inference
(``INFER``: checks every field and returns the output's shape at batch 1), the bytes a
call holds for it (``held``) and its step (``step``: a function of its input arrays).
Every value keeps the batch as its axis 0, which no op touches: an axis is in
``[1, ndim)``, a permutation keeps 0 first, a constant never broadcasts over the batch.

The Numba-backed kernels (softmax, the norms, resizing) are imported by ``step`` only,
so that plans without these ops never load Numba.
"""
import math

import numpy as np

from fastdl.deploy._plancheck import (MAX_NDIM, axis, bounded_int, bounded_ints, fail, finite,
                                      flag, weight)

OPS = ("binary", "concat", "slice", "reshape", "transpose", "resize", "softmax",
       "group_norm", "layer_norm")
#: ``binary``'s kinds, as NumPy's ufuncs.
BINARY_KINDS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
#: ``resize``'s modes: ``fastdl.functional.interpolate``'s, with nearest-exact's "-" as "_".
RESIZE_MODES = ("nearest", "nearest_exact", "bilinear", "bicubic")
#: The most inputs a ``concat`` takes.
MAX_CONCAT = 1024
# the attributes each op has ("weights": optional)
ATTRIBUTES = {
    "binary": {"kind", "reverse", "weights"},
    "concat": {"axis"},
    "slice": {"axis", "start", "stop", "step"},
    "reshape": {"shape"},
    "transpose": {"perm"},
    "resize": {"mode", "size", "align_corners", "scale"},
    "softmax": {"axis", "log"},
    "group_norm": {"groups", "eps", "weights"},
    "layer_norm": {"normalized_ndim", "eps", "weights"},
}
# the tensors each op with weights may name
ROLES = {"binary": {"other"}, "group_norm": {"weight", "bias"},
         "layer_norm": {"weight", "bias"}}
# (fewest, most) inputs of the ops that take more than one
INPUTS = {"binary": (1, 2), "concat": (2, MAX_CONCAT)}


# ------------------------------------------------------------------- shape inference
# One function an op kind: (op, index, input shapes, tensors) -> output shape, at batch 1.

def _broadcast(index, first, second):
    """NumPy's broadcast of two shapes of one rank."""
    if any(a != b and 1 not in (a, b) for a, b in zip(first, second)):
        fail("op %d (binary): shapes %s and %s do not broadcast" % (index, first, second))
    return tuple(max(a, b) for a, b in zip(first, second))


def _infer_binary(op, index, shapes, tensors):
    """``a OP b`` of two values of one rank (their axes after the batch broadcast), or
    ``x OP other`` (``other OP x`` with ``reverse``) of a value and a constant tensor that
    broadcasts against it without growing its rank or its batch axis."""
    kind, name = op["kind"], op.get("weights", {}).get("other")
    if not isinstance(kind, str) or kind not in BINARY_KINDS:
        fail("op %d (binary): kind must be one of %s, got %r" % (index, sorted(BINARY_KINDS),
                                                                kind))
    flag(op, "reverse", index)
    if (len(shapes) == 2) == (name is not None):
        fail("op %d (binary): takes two values, or one and a tensor 'other'; got %d inputs "
             "and %s" % (index, len(shapes), "a tensor" if name else "no tensor"))
    if len(shapes) == 2:
        if op["reverse"]:
            fail("op %d (binary): reverse must be false with two inputs (swap them)" % index)
        if len(shapes[0]) != len(shapes[1]):
            fail("op %d (binary): inputs of shapes %s and %s differ in rank"
                 % (index, shapes[0], shapes[1]))
        return _broadcast(index, *shapes)
    shape, other = shapes[0], tensors[name]
    if other.ndim > len(shape) or 0 in other.shape or (
            other.ndim == len(shape) and other.shape[0] != 1):
        fail("op %d (binary): tensor %r of shape %s must have at most %d axes, no empty "
             "one, and a first axis of 1 if it has %d" % (index, name, other.shape,
                                                          len(shape), len(shape)))
    return _broadcast(index, shape, (1,) * (len(shape) - other.ndim) + other.shape)


def _infer_concat(op, index, shapes, tensors):
    first = shapes[0]
    k = axis(op, "axis", index, len(first))
    for shape in shapes[1:]:
        if len(shape) != len(first) or shape[:k] + shape[k + 1:] != first[:k] + first[k + 1:]:
            fail("op %d (concat): input shapes %s and %s differ off axis %d"
                 % (index, first, shape, k))
    return first[:k] + (sum(shape[k] for shape in shapes),) + first[k + 1:]


def _infer_slice(op, index, shapes, tensors):
    """Every ``step``-th index of ``[start, stop)`` along ``axis``, all given normalised
    (``0 <= start < stop <= size``, ``step >= 1``)."""
    shape = shapes[0]
    k = axis(op, "axis", index, len(shape))
    start, stop, step = op["start"], op["stop"], op["step"]
    if not (bounded_int(start, 0) and bounded_int(stop, 1) and bounded_int(step, 1)
            and start < stop <= shape[k]):
        fail("op %d (slice): needs ints 0 <= start < stop <= %d (the size of axis %d) and "
             "step >= 1, got start=%r, stop=%r, step=%r" % (index, shape[k], k, start, stop,
                                                           step))
    return shape[:k] + (-(-(stop - start) // step),) + shape[k + 1:]


def _infer_reshape(op, index, shapes, tensors):
    shape, sizes = shapes[0], op["shape"]
    if not isinstance(sizes, list) or not 1 <= len(sizes) < MAX_NDIM or not all(
            bounded_int(n, 1) for n in sizes) or math.prod(sizes) != math.prod(shape[1:]):
        fail("op %d (reshape): shape must be a list of 1 to %d sizes >= 1 (no -1) whose "
             "product is %d (input %s), got %r" % (index, MAX_NDIM - 1, math.prod(shape[1:]),
                                                   shape, sizes))
    return (shape[0],) + tuple(int(n) for n in sizes)


def _infer_transpose(op, index, shapes, tensors):
    shape, perm = shapes[0], op["perm"]
    if not isinstance(perm, list) or len(perm) != len(shape) or not all(
            bounded_int(a, 0, len(shape) - 1) for a in perm) or sorted(perm) != list(
                range(len(shape))) or perm[0] != 0:
        fail("op %d (transpose): perm must be a permutation of 0..%d that keeps 0 (the "
             "batch axis) first, got %r" % (index, len(shape) - 1, perm))
    return tuple(shape[a] for a in perm)


def _infer_resize(op, index, shapes, tensors):
    """``interpolate(x, size)``, or with ``scale`` ``interpolate(x, scale_factor=scale)``
    whose output ``size`` must be ``floor(in * scale)``."""
    shape, mode, scale = shapes[0], op["mode"], op["scale"]
    size = bounded_ints(op["size"], 2, "op %d: size" % index, 1)
    flag(op, "align_corners", index)
    if not isinstance(mode, str) or mode not in RESIZE_MODES or len(shape) != 4:
        fail("op %d (resize): needs a mode of %s and a 4-D input, got %r and %s"
             % (index, RESIZE_MODES, mode, shape))
    if op["align_corners"] and mode.startswith("nearest"):
        fail("op %d (resize): align_corners must be false in mode %r" % (index, mode))
    if scale is not None:
        if not isinstance(scale, list) or len(scale) != 2 or not all(
                finite(s) and s > 0 for s in scale):
            fail("op %d (resize): scale must be null or 2 finite numbers > 0, got %r"
                 % (index, scale))
        products = [n * float(s) for n, s in zip(shape[2:], scale)]
        if not all(math.isfinite(p) and math.floor(p) == n for p, n in zip(products, size)):
            fail("op %d (resize): size %s is not floor(%s * scale %s)"
                 % (index, list(size), list(shape[2:]), scale))
    return shape[:2] + size


def _infer_softmax(op, index, shapes, tensors):
    axis(op, "axis", index, len(shapes[0]))
    flag(op, "log", index)
    return shapes[0]


def _eps(op, index):
    if not finite(op["eps"]) or op["eps"] < 0:
        fail("op %d (%s): eps must be a finite number >= 0, got %r" % (index, op["op"],
                                                                      op["eps"]))


def _affine(op, index, tensors, shape):
    """Check the optional weight and bias of a norm: each of ``shape``."""
    for role in ("weight", "bias"):
        array = weight(tensors, op, role, index, len(shape))
        if array is not None and array.shape != shape:
            fail("op %d (%s): %s must have shape %s, got %s" % (index, op["op"], role, shape,
                                                                array.shape))


def _infer_group_norm(op, index, shapes, tensors):
    shape, groups = shapes[0], op["groups"]
    _eps(op, index)
    if len(shape) < 3 or not bounded_int(groups, 1) or shape[1] % groups:
        fail("op %d (group_norm): needs an input (N, C, *) of at least 3 axes and groups "
             "dividing C, got %s and groups=%r" % (index, shape, groups))
    _affine(op, index, tensors, shape[1:2])
    return shape


def _infer_layer_norm(op, index, shapes, tensors):
    shape = shapes[0]
    k = op["normalized_ndim"]
    if not bounded_int(k, 1, len(shape) - 1):
        fail("op %d (layer_norm): normalized_ndim must be an int in [1, %d], got %r"
             % (index, len(shape) - 1, k))
    _eps(op, index)
    _affine(op, index, tensors, shape[len(shape) - k:])
    return shape


INFER = {"binary": _infer_binary, "concat": _infer_concat, "slice": _infer_slice,
         "reshape": _infer_reshape, "transpose": _infer_transpose, "resize": _infer_resize,
         "softmax": _infer_softmax, "group_norm": _infer_group_norm,
         "layer_norm": _infer_layer_norm}


# ------------------------------------------------------------------------ memory

def held(op, shapes, out, itemsize):
    """Bytes a call at batch 1 holds for graph op ``op`` (input ``shapes``, output
    ``out``): its output and the copies its kernel makes; an upper bound."""
    kind, size = op["op"], math.prod(out)
    if kind == "reshape":
        return 0                                       # a view
    if kind == "softmax":
        return 3 * size * itemsize      # the axis moved last, the rows, moved back
    if kind in ("group_norm", "layer_norm"):
        rows = op["groups"] if kind == "group_norm" else math.prod(
            out[:len(out) - op["normalized_ndim"]])
        # the output, the default weight and bias, and float64 statistics per row
        return 2 * size * itemsize + 32 * rows
    if kind == "resize":
        _, channels, height, _ = shapes[0]
        # a float64 plane widened to the output's width per plane, the tap tables
        return size * itemsize + 8 * channels * height * out[3] + 64 * (out[2] + out[3])
    return size * itemsize


# ------------------------------------------------------------------------- steps

def step(op, shapes, tensors):
    """Graph op ``op`` as a function of its input arrays (at any batch size), for input
    ``shapes`` at batch 1; returns a C-contiguous array of the inputs' dtype (a view of
    the input for ``reshape``, and for a ``slice`` that is contiguous)."""
    kind = op["op"]
    weights = {role: tensors[name] for role, name in op.get("weights", {}).items()}
    if kind == "binary":
        return _binary(op, weights.get("other"))
    if kind == "concat":
        k = op["axis"]
        return lambda *arrays: np.concatenate(arrays, axis=k)
    if kind == "slice":
        window = (slice(None),) * op["axis"] + (slice(op["start"], op["stop"], op["step"]),)
        return lambda x: np.ascontiguousarray(x[window])
    if kind == "reshape":
        sizes = tuple(op["shape"])
        return lambda x: x.reshape((len(x),) + sizes)
    if kind == "transpose":
        perm = tuple(op["perm"])
        return lambda x: np.ascontiguousarray(x.transpose(perm))
    if kind == "resize":
        return _resize(op, shapes[0])
    if kind == "softmax":
        from fastdl.kernels import activation as act_kernels
        function = act_kernels.log_softmax_forward if op["log"] else act_kernels.softmax_forward
        k = op["axis"]
        return lambda x: function(x, k)
    from fastdl.kernels import norm as norm_kernels
    scale, shift, eps = weights.get("weight"), weights.get("bias"), float(op["eps"])
    if kind == "group_norm":
        groups = op["groups"]
        return lambda x: norm_kernels.group_norm_forward(x, groups, scale, shift, eps)[0]
    normalized = tuple(shapes[0][len(shapes[0]) - op["normalized_ndim"]:])
    return lambda x: norm_kernels.layer_norm_forward(x, normalized, scale, shift, eps)[0]


def _binary(op, other):
    """``a OP b`` into a new C-contiguous array of the broadcast shape; IEEE results (a
    division by zero is an infinity or NaN, as in torch) without NumPy's warnings."""
    ufunc = BINARY_KINDS[op["kind"]]

    def run(a, b):
        out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=a.dtype)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return ufunc(a, b, out=out)
    if other is None:
        return run
    if op["reverse"]:
        return lambda x: run(other, x)
    return lambda x: run(x, other)


def _resize(op, shape):
    """``fastdl.functional.interpolate``'s resizing of a (N, C, H, W) array to
    ``op["size"]``: its kernels and tap tables, chosen as it chooses them."""
    # the same choice of kernel and the same tables as interpolate, so equal to it bitwise
    from fastdl.kernels import resample, resize as resize_kernels
    mode, align = op["mode"].replace("_", "-"), op["align_corners"]
    sizes = tuple(op["size"])
    scales = (None, None) if op["scale"] is None else tuple(float(s) for s in op["scale"])
    if mode in ("nearest", "bilinear") and not align:
        factors = resample.integer_factors(shape, sizes, scales)
        if factors is not None:
            upsample = (resize_kernels.upsample_nearest2d_forward if mode == "nearest"
                        else resize_kernels.upsample_bilinear2d_forward)
            return lambda x: upsample(x, factors)
    rows = resample.mode_taps(mode, shape[2], sizes[0], align, scales[0])
    cols = resample.mode_taps(mode, shape[3], sizes[1], align, scales[1])
    return lambda x: resample.resample2d_forward(x, rows, cols)
