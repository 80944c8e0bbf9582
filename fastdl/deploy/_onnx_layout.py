"""ONNX nodes that move data rather than compute it, as plan ops, for
:mod:`fastdl.deploy.onnx_import`: pools and means, Flatten / Reshape / Squeeze /
Unsqueeze (reshape or flatten), Transpose, Concat, Split / Slice / Gather (slices),
Pad (pad2d), Resize (resize), Identity and Dropout.

Every converter is ``convert(importer, node)``; none touches the batch axis (axis 0):
an ONNX node that would is refused, naming it. Sizes are static (the input's C, H, W
are fixed), so shape arithmetic happens here, once.
"""
import math

import numpy as np

from fastdl.deploy import _onnx_fold as fold
from fastdl.deploy._onnx_files import _fail
from fastdl.deploy._opgraph import MAX_ELEMENTS, MAX_INT


def _ints(array):
    return [int(v) for v in np.asarray(array).reshape(-1)]


def _axis(imp, node, axis, ndim, what="axis"):
    """``axis`` normalised for ``ndim`` dims; the batch axis (0) refused."""
    axis = int(axis)
    if not -ndim <= axis < ndim:
        _fail("%s: %s %d is out of range for %d dims" % (imp.where(node), what, axis, ndim))
    axis %= ndim
    if axis == 0:
        _fail("%s: %s 0 is the batch axis, which the plan keeps" % (imp.where(node), what))
    return axis


def _inputs_or_attribute(imp, node, attributes, index, name, since):
    """An op's list argument: input ``index`` from opset ``since`` on, else attribute
    ``name``; None where absent."""
    if imp.opset >= since:
        array = imp.constant(node, imp.input(node, index), optional=True)
        return None if array is None else _ints(array)
    return attributes.get(name)


# ----------------------------------------------------------------- shared emitters

def reshape(imp, node, ref, target):
    """``ref`` as ``(N,) + target``: itself, a flatten where that is one, else a
    reshape."""
    shape, target = imp.shape(ref), tuple(int(n) for n in target)
    if shape[1:] == target:
        return ref
    start = len(target)
    if 1 <= start < len(shape) and target == shape[1:start] + (math.prod(shape[start:]),):
        return imp.emit(node, "flatten", [ref], start_dim=start)
    return imp.emit(node, "reshape", [ref], shape=list(target))


def transpose(imp, node, ref, perm):
    perm = [int(p) for p in perm]
    if perm == list(range(len(perm))):
        return ref
    return imp.emit(node, "transpose", [ref], perm=perm)


def slices(imp, node, ref, ranges):
    """``ref`` sliced by ``{axis: (start, stop, step)}`` (axes >= 1, steps >= 1)."""
    for axis in sorted(ranges):
        start, stop, step = ranges[axis]
        size = imp.shape(ref)[axis]
        if step < 1:
            _fail("%s: negative steps are not supported" % imp.where(node))
        if start >= stop:
            _fail("%s: an empty slice of axis %d" % (imp.where(node), axis))
        if not (start == 0 and stop >= size and (step == 1 or size == 1)):
            ref = imp.emit(node, "slice", [ref], axis=axis, start=start, stop=stop,
                           step=step)
    return ref


def window_pads(imp, node, attributes, sizes, kernel, stride, dilation):
    """ONNX's ``[top, left, bottom, right]`` of a conv or pool, ``auto_pad`` resolved
    (the input's sizes are known)."""
    mode = attributes.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        pads = list(attributes.get("pads", [0, 0, 0, 0])) if mode == "NOTSET" else [0] * 4
        if len(pads) != 4 or not all(0 <= p <= MAX_INT for p in pads):
            _fail("%s: pads %s must be 4 ints in [0, %d] (2-D)" % (imp.where(node), pads,
                                                                 MAX_INT))
        return pads
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        _fail("%s: auto_pad %r is not supported" % (imp.where(node), mode))
    begin, end = [], []
    for n, k, s, d in zip(sizes, kernel, stride, dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


def _pair(imp, node, attributes, name, default):
    value = list(attributes.get(name, default))
    if len(value) != 2 or not all(1 <= v <= MAX_INT for v in value):
        _fail("%s: %s %s must be 2 ints in [1, %d] (2-D)" % (imp.where(node), name, value,
                                                            MAX_INT))
    return value


def output_sizes(imp, node, out):
    """Check an output's (H, W), computed before any op checks it, so that nothing
    sized by it is made larger than a plan's value may be."""
    if min(out) < 1 or max(out) > MAX_INT or math.prod(out) > MAX_ELEMENTS:
        _fail("%s: output size %s is empty or larger than a plan's value may be"
              % (imp.where(node), list(out)))


def image(imp, node, name):
    """The value ``name`` and its shape, which must be 4-D."""
    ref = imp.value(node, name)
    shape = imp.shape(ref)
    if len(shape) != 4:
        _fail("%s: only 4-D (N, C, H, W) inputs are supported, got %d dims"
              % (imp.where(node), len(shape)))
    return ref, shape


# ----------------------------------------------------------------------- pools

def _pool_size(n, k, s, begin, end, ceil_mode):
    """ONNX's output size of a pool (the last window of ceil mode starting inside the
    input or its leading padding)."""
    span = n + begin + end - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + begin:
        out -= 1
    return out


def _counted(n, k, s, begin, end, out, include):
    """Per output position of one axis, the cells an ONNX average divides by."""
    low, high = (-begin, n + end) if include else (0, n)
    starts = np.arange(out) * s - begin
    return np.minimum(starts + k, high) - np.maximum(starts, low)


def pool(imp, node):
    maximum = node.op_type == "MaxPool"
    allowed = {"auto_pad", "ceil_mode", "kernel_shape", "pads", "strides", "dilations"}
    allowed |= {"storage_order"} if maximum else {"count_include_pad"}
    attributes = imp.attributes(node, allowed)
    x, shape = image(imp, node, node.input[0])
    kernel = _pair(imp, node, attributes, "kernel_shape", [])
    stride = _pair(imp, node, attributes, "strides", [1, 1])
    if _pair(imp, node, attributes, "dilations", [1, 1]) != [1, 1]:
        _fail("%s: dilations are not supported" % imp.where(node))
    ceil_mode = bool(attributes.get("ceil_mode", 0))
    include = bool(attributes.get("count_include_pad", 0))
    pads = window_pads(imp, node, attributes, shape[2:], kernel, stride, [1, 1])
    out = [_pool_size(shape[2 + a], kernel[a], stride[a], pads[a], pads[a + 2], ceil_mode)
           for a in (0, 1)]
    output_sizes(imp, node, out)
    kind = "max_pool2d" if maximum else "avg_pool2d"
    extra = {} if maximum else {"count_include_pad": include}
    even = pads[:2] == pads[2:] and all(pads[a] <= kernel[a] // 2 for a in (0, 1))
    # ONNX's pads and ceil mode are torch's where the pads are even and at most half
    # the window; an end padding of less than a stride (and nothing an average would
    # count) is torch's ceil mode
    ceil_end = not ceil_mode and all(0 <= pads[a + 2] - pads[a] < stride[a] and
                                     pads[a] <= kernel[a] // 2 for a in (0, 1)) and (
        maximum or not include)
    if even or ceil_end:
        ref = imp.emit(node, kind, [x], kernel_size=kernel, stride=stride,
                       padding=pads[:2], ceil_mode=ceil_mode or not even, **extra)
        if list(imp.shape(ref)[2:]) == out:
            return imp.alias(node.output[0], ref)
    imp.alias(node.output[0], _padded_pool(imp, node, x, shape, kernel, stride, pads, out,
                                           maximum, include))


def _padded_pool(imp, node, x, shape, kernel, stride, pads, out, maximum, include):
    """A pool whose padding the plan's pools cannot take: pad2d, then a pool without
    padding over exactly the windows ONNX's are; an average's divisors then corrected
    (a binary mul by a constant of (1, 1, H, W)). A max pool's padding repeats the edge,
    which never wins over the window's input cells (every window holds one)."""
    ends = [max(pads[a + 2], (out[a] - 1) * stride[a] + kernel[a] - shape[2 + a] - pads[a])
            for a in (0, 1)]
    for a in (0, 1):
        if _counted(shape[2 + a], kernel[a], stride[a], pads[a], pads[a + 2], out[a],
                    False).min() < 1:
            _fail("%s: pads %s leave a window without input cells" % (imp.where(node), pads))
    counts = [_counted(shape[2 + a], kernel[a], stride[a], pads[a], pads[a + 2], out[a],
                       include) for a in (0, 1)]
    padding = [pads[0], ends[0], pads[1], ends[1]]
    if any(padding):
        x = imp.emit(node, "pad2d", [x], mode="replicate" if maximum else "constant",
                     padding=padding)
    kind = "max_pool2d" if maximum else "avg_pool2d"
    extra = {} if maximum else {"count_include_pad": True}
    ref = imp.emit(node, kind, [x], kernel_size=kernel, stride=stride, padding=[0, 0],
                   ceil_mode=False, **extra)
    if list(imp.shape(ref)[2:]) != out:
        _fail("%s: output size %s, the plan's pool gives %s" % (imp.where(node), out,
                                                               imp.shape(ref)[2:]))
    imp.tensors.charge(8 * out[0] * out[1], imp.where(node), "divisors")
    factors = kernel[0] * kernel[1] / np.outer(counts[0], counts[1])
    if maximum or np.all(factors == 1):
        return ref
    return imp.emit(node, "binary", [ref], {"other": factors[None, None]}, kind="mul",
                    reverse=False)


def global_pool(imp, node):
    imp.attributes(node, set())
    x, shape = image(imp, node, node.input[0])
    if node.op_type == "GlobalAveragePool":
        ref = imp.emit(node, "adaptive_avg_pool2d", [x], output_size=[1, 1])
    else:
        ref = imp.emit(node, "max_pool2d", [x], kernel_size=list(shape[2:]),
                       stride=list(shape[2:]), padding=[0, 0], ceil_mode=False)
    imp.alias(node.output[0], ref)


def reduce_mean(imp, node):
    attributes = imp.attributes(node, {"axes", "keepdims", "noop_with_empty_axes"})
    x, shape = image(imp, node, node.input[0])
    axes = _inputs_or_attribute(imp, node, attributes, 1, "axes", 18)
    if not axes or sorted(a % 4 for a in axes) != [2, 3]:
        _fail("%s: only a mean over H and W (axes 2, 3) is supported, got axes %s"
              % (imp.where(node), axes))
    ref = imp.emit(node, "adaptive_avg_pool2d", [x], output_size=[1, 1])
    if not attributes.get("keepdims", 1):
        ref = reshape(imp, node, ref, shape[1:2])
    imp.alias(node.output[0], ref)


# ------------------------------------------------------------------ reshapes

def flatten(imp, node):
    attributes = imp.attributes(node, {"axis"})
    x = imp.value(node, node.input[0])
    ndim = len(imp.shape(x))
    axis = attributes.get("axis", 1)
    if axis % ndim != 1 if -ndim <= axis < ndim else True:
        _fail("%s: only Flatten(axis=1) keeps the batch axis, got axis %d"
              % (imp.where(node), axis))
    imp.alias(node.output[0], reshape(imp, node, x, (math.prod(imp.shape(x)[1:]),)))


def _reshaped(imp, node, shape, target, allowzero):
    """The per-sample shape ONNX's Reshape to ``target`` (ndarray or ``Batched``) gives
    a value of ``shape``, which must keep the batch axis."""
    where, sizes = imp.where(node), []
    for index, batch in enumerate(fold.BATCHES):
        wanted = _ints(target.arrays[index] if isinstance(target, fold.Batched) else target)
        if not isinstance(target, fold.Batched) and wanted and imp.batch is not None and (
                wanted[0] == imp.batch):
            wanted[0] = batch   # a model of a fixed batch: its leading size is the batch
        out = fold.reshape_target(where, (batch,) + tuple(shape[1:]), wanted, allowzero)
        if out[0] != batch:
            _fail("%s: the reshape to %s does not keep the batch axis" % (where, wanted))
        sizes.append(tuple(out[1:]))
    if sizes[0] != sizes[1]:
        _fail("%s: the reshape's sizes depend on the batch size" % where)
    return sizes[0]


def reshape_node(imp, node):
    attributes = imp.attributes(node, {"allowzero"})
    x = imp.value(node, node.input[0])
    target = imp.known(node, node.input[1]) if len(node.input) > 1 else None
    if target is None:
        _fail("%s: the target shape is required" % imp.where(node))
    sizes = _reshaped(imp, node, imp.shape(x), target, bool(attributes.get("allowzero", 0)))
    imp.alias(node.output[0], _grouped_norm(imp, node, x, sizes) or reshape(imp, node, x,
                                                                          sizes))


def _only_use(imp, ref):
    """The pending op ``ref`` where the value it writes is read once, else None."""
    if ref < 0:
        return None
    op = imp.pending[ref]
    name = op.node.output[0] if op.node is not None and op.node.output else None
    return op if name is not None and imp.uses.get(name) == 1 and imp.values.get(
        name) == ref else None


def _grouped_norm(imp, node, ref, sizes):
    """torch's GroupNorm (``Reshape (N, G, -1) -> InstanceNormalization -> Reshape``
    back) as one group_norm of ``groups = G``: its reference, else None."""
    norm = _only_use(imp, ref)
    if norm is None or norm.op != "group_norm" or norm.weights:
        return None
    grouped = _only_use(imp, norm.inputs[0])
    if grouped is None or grouped.op not in ("reshape", "flatten"):
        return None
    source = grouped.inputs[0]
    shape, groups = imp.shape(source), imp.shape(norm.inputs[0])[1]
    if shape[1:] != tuple(sizes) or len(imp.shape(norm.inputs[0])) != 3 or norm.fields[
            "groups"] != groups or len(shape) < 3 or shape[1] % groups:
        return None
    return imp.emit(node, "group_norm", [source], groups=groups, eps=norm.fields["eps"])


def squeeze(imp, node):
    attributes = imp.attributes(node, {"axes"})
    x = imp.value(node, node.input[0])
    shape = imp.shape(x)
    axes = _inputs_or_attribute(imp, node, attributes, 1, "axes", 13)
    if axes is None:
        axes = [a for a in range(1, len(shape)) if shape[a] == 1]
    axes = {_axis(imp, node, a, len(shape)) for a in axes}
    if any(shape[a] != 1 for a in axes):
        _fail("%s: squeezes an axis whose size is not 1" % imp.where(node))
    imp.alias(node.output[0], reshape(imp, node, x, [n for a, n in enumerate(shape)
                                                     if a and a not in axes]))


def unsqueeze(imp, node):
    attributes = imp.attributes(node, {"axes"})
    x = imp.value(node, node.input[0])
    shape = list(imp.shape(x))
    axes = _inputs_or_attribute(imp, node, attributes, 1, "axes", 13)
    if not axes:
        _fail("%s: axes are required" % imp.where(node))
    ndim = len(shape) + len(axes)
    axes = sorted(_axis(imp, node, a, ndim) for a in axes)
    if len(set(axes)) != len(axes):
        _fail("%s: repeated axes %s" % (imp.where(node), axes))
    for a in axes:
        shape.insert(a, 1)
    imp.alias(node.output[0], reshape(imp, node, x, shape[1:]))


def transpose_node(imp, node):
    attributes = imp.attributes(node, {"perm"})
    x = imp.value(node, node.input[0])
    ndim = len(imp.shape(x))
    perm = [int(p) for p in attributes.get("perm", list(range(ndim))[::-1])]
    if sorted(perm) != list(range(ndim)) or perm[0] != 0:
        _fail("%s: perm %s must be a permutation of %d axes keeping the batch axis first"
              % (imp.where(node), perm, ndim))
    imp.alias(node.output[0], transpose(imp, node, x, perm))


# ------------------------------------------------------------------ joins, cuts

def concat(imp, node):
    attributes = imp.attributes(node, {"axis"})
    refs = [imp.value(node, name) for name in node.input]
    if not refs:
        _fail("%s: no inputs" % imp.where(node))
    axis = _axis(imp, node, attributes.get("axis", 0), len(imp.shape(refs[0])))
    ref = refs[0] if len(refs) == 1 else imp.emit(node, "concat", refs, axis=axis)
    imp.alias(node.output[0], ref)


def split(imp, node):
    attributes = imp.attributes(node, {"axis", "split", "num_outputs"})
    x = imp.value(node, node.input[0])
    shape = imp.shape(x)
    axis = _axis(imp, node, attributes.get("axis", 0), len(shape))
    inputs = [None, imp.constant(node, imp.input(node, 1), optional=True)]
    sizes = fold.split_sizes(imp.where(node), attributes, inputs, imp.opset, shape[axis],
                             len(node.output))
    start = 0
    for name, size in zip(node.output, sizes):
        if name and imp.uses.get(name):
            imp.alias(name, slices(imp, node, x, {axis: (start, start + size, 1)}))
        start += size


def _slice_ranges(imp, node, shape, lists):
    """The per-axis ranges of an ONNX Slice on a value of ``shape``; the batch axis
    must be kept whole."""
    where, found = imp.where(node), []
    for index, batch in enumerate(fold.BATCHES):
        args = [None if a is None else _ints(a.arrays[index] if isinstance(
            a, fold.Batched) else a) for a in lists]
        ranges = fold.slice_ranges(where, (batch,) + tuple(shape[1:]), *args)
        if ranges.pop(0, (0, batch, 1)) != (0, batch, 1):
            _fail("%s: slices the batch axis" % where)
        found.append(ranges)
    if found[0] != found[1]:
        _fail("%s: the slice depends on the batch size" % where)
    return found[0]


def slice_node(imp, node):
    attributes = imp.attributes(node, {"starts", "ends", "axes"})
    x = imp.value(node, node.input[0])
    if imp.opset >= 10:
        lists = [imp.known(node, imp.input(node, i)) for i in range(1, 5)]
    else:
        lists = [attributes.get("starts"), attributes.get("ends"), attributes.get("axes"),
                 None]
    if lists[0] is None or lists[1] is None:
        _fail("%s: starts and ends are required" % imp.where(node))
    ranges = _slice_ranges(imp, node, imp.shape(x), lists)
    imp.alias(node.output[0], slices(imp, node, x, ranges))


def gather(imp, node):
    """Gather of a value along an axis >= 1 by constant indices: runs of evenly spaced
    indices as slices, joined by a concat, then reshaped to the indices' shape."""
    attributes = imp.attributes(node, {"axis"})
    x = imp.value(node, node.input[0])
    shape = imp.shape(x)
    axis = _axis(imp, node, attributes.get("axis", 0), len(shape))
    indices = np.asarray(imp.constant(node, node.input[1]))
    size = shape[axis]
    if indices.dtype.kind not in "iu" or indices.size == 0 or np.any(indices < -size) or \
            np.any(indices >= size) or indices.size > fold.MAX_FOLD_ELEMENTS:
        _fail("%s: indices must be 1 or more ints in [-%d, %d)" % (imp.where(node), size,
                                                                   size))
    flat = [int(i) % size for i in indices.reshape(-1)]
    pieces, start = [], 0
    while start < len(flat):
        step = flat[start + 1] - flat[start] if start + 1 < len(flat) else 1
        stop = start + 1
        if step >= 1:
            while stop < len(flat) and flat[stop] - flat[stop - 1] == step:
                stop += 1
        else:
            step = 1
        pieces.append(slices(imp, node, x, {axis: (flat[start], flat[stop - 1] + 1, step)}))
        start = stop
    ref = pieces[0] if len(pieces) == 1 else imp.emit(node, "concat", pieces, axis=axis)
    target = shape[1:axis] + indices.shape + shape[axis + 1:]
    imp.alias(node.output[0], reshape(imp, node, ref, target))


# ------------------------------------------------------------------------- pad

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate",
              "wrap": "circular"}


def pad(imp, node):
    attributes = imp.attributes(node, {"mode", "pads", "value"})
    x = imp.value(node, node.input[0])
    shape = imp.shape(x)
    mode = attributes.get("mode", "constant")
    if mode not in _PAD_MODES or (mode == "wrap" and imp.opset < 19):
        _fail("%s: mode %r is not supported" % (imp.where(node), mode))
    if imp.opset >= 11:
        pads = _ints(imp.constant(node, node.input[1]))
        value = imp.constant(node, imp.input(node, 2), optional=True)
        value = 0.0 if value is None or np.size(value) == 0 else float(
            np.asarray(value).reshape(-1)[0])
        axes = imp.constant(node, imp.input(node, 3), optional=True)
    else:
        pads, value, axes = list(attributes.get("pads", [])), attributes.get("value", 0.0), None
    axes = list(range(len(shape))) if axes is None else [int(a) % len(shape)
                                                          for a in _ints(axes)]
    if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
        _fail("%s: %d pads for %d axes" % (imp.where(node), len(pads), len(axes)))
    begin, end = [0] * len(shape), [0] * len(shape)
    for index, axis in enumerate(axes):
        begin[axis], end[axis] = pads[index], pads[index + len(axes)]
    if any(begin[a] or end[a] for a in range(len(shape)) if a not in (len(shape) - 2,
                                                                        len(shape) - 1)) \
            or len(shape) != 4:
        _fail("%s: only the last two axes of a 4-D value are padded, got pads %s"
              % (imp.where(node), pads))
    # negative pads crop
    crop = {a: (max(-begin[a], 0), shape[a] - max(-end[a], 0), 1) for a in (2, 3)
            if begin[a] < 0 or end[a] < 0}
    ref = slices(imp, node, x, crop)
    padding = [max(begin[2], 0), max(end[2], 0), max(begin[3], 0), max(end[3], 0)]
    if any(padding):
        ref = imp.emit(node, "pad2d", [ref], mode=_PAD_MODES[mode], padding=padding)
        if mode == "constant" and value != 0:
            # zeros, then the value added where the border is: inside, x + 0 is x
            height, width = imp.shape(ref)[2:]
            imp.tensors.charge(8 * height * width, imp.where(node), "border")
            border = np.full((1, 1, height, width), value)
            border[..., padding[0]:height - padding[1], padding[2]:width - padding[3]] = 0
            ref = imp.emit(node, "binary", [ref], {"other": border}, kind="add",
                           reverse=False)
    imp.alias(node.output[0], ref)


# ---------------------------------------------------------------------- the rest

def identity(imp, node):
    imp.attributes(node, set())
    imp.alias(node.output[0], imp.value(node, node.input[0]))


def dropout(imp, node):
    imp.attributes(node, {"ratio", "seed", "is_test"})
    training = imp.constant(node, imp.input(node, 2), optional=True)
    if training is not None and bool(np.any(training)):
        _fail("%s: training_mode must be false" % imp.where(node))
    imp.alias(node.output[0], imp.value(node, node.input[0]))


CONVERTERS = {
    "MaxPool": pool, "AveragePool": pool, "GlobalAveragePool": global_pool,
    "GlobalMaxPool": global_pool, "ReduceMean": reduce_mean, "Flatten": flatten,
    "Reshape": reshape_node, "Squeeze": squeeze, "Unsqueeze": unsqueeze,
    "Transpose": transpose_node, "Concat": concat, "Split": split, "Slice": slice_node,
    "Gather": gather, "Pad": pad, "Identity": identity,
    "Dropout": dropout,
}
