"""What each op ``Function.apply`` runs records in a trace (``fastdl.deploy.trace``).

``node(recorder, function, args, outputs)`` adds the nodes of one op to the recorder's
graph and returns the reference of the value its output is (a new node's, or its
input's where the op changes no value: clone, a full slice, an identity permutation);
``Unsupported`` (its reason) where the op is none of the table's. A builder is found by
the op's ``Function`` class (``_BUILDERS``), never by a module's class or name.
"""
import math
import numbers
import sys

import numpy as np

from fastdl import tensor_convert, tensor_math, tensor_ops, tensor_reduce, tensor_shape
from fastdl.autograd import Tensor
from fastdl.functional import activation as activation_functions
from fastdl.functional.conv import Conv2d, ConvTranspose2d
from fastdl.functional.elementwise import Elementwise, PReLU
from fastdl.functional.linear import Linear
from fastdl.functional.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm
from fastdl.functional.padding import Pad
from fastdl.functional.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from fastdl.functional.resize import Resample, Upsample, interpolate
from fastdl.kernels.resample import mode_taps
from fastdl.kernels import activation as activation_kernels, pool as pool_kernels


class Unsupported(Exception):
    """An op the graph has no node for (the reason)."""


def _pair(value):
    return [int(value), int(value)] if np.ndim(value) == 0 else [int(v) for v in value]


def _input_shape(arg):
    return np.shape(arg._data)


# ------------------------------------------------------------------ layers
def _conv(recorder, function, args, outputs):
    arrays, names = {}, {}
    x = recorder.value(args[0])
    recorder.weight(args[1], "weight", arrays, names)
    recorder.weight(args[2], "bias", arrays, names, required=False)
    if function is ConvTranspose2d:
        stride, padding, output_padding, groups, dilation = args[3:8]
        return recorder.add("conv_transpose2d", [x], dict(
            stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation),
            groups=int(groups), output_padding=_pair(output_padding)), arrays, names)
    stride, padding, dilation, groups = args[3:7]
    relu = len(args) > 7 and bool(args[7])
    ref = recorder.add("conv2d", [x], dict(stride=_pair(stride), padding=_pair(padding),
                                           dilation=_pair(dilation), groups=int(groups)),
                       arrays, names)
    if relu:
        ref = _activation_node(recorder, ref, "relu")
    return ref


def _batch_norm(recorder, function, args, outputs):
    x = recorder.value(args[0])
    running_mean, running_var, training, _, eps = args[3:8]
    if training or running_mean is None:
        raise Unsupported("batch_norm normalises with the batch's statistics (training "
                          "mode, or no running statistics)")
    return _affine_norm(recorder, x, args[1], args[2], running_mean, running_var, eps)


def _affine_norm(recorder, x, weight, bias, running_mean, running_var, eps):
    """A ``batch_norm`` node: a per-channel affine map from running statistics."""
    arrays, names = {}, {}
    recorder.weight(weight, "weight", arrays, names, required=False)
    recorder.weight(bias, "bias", arrays, names, required=False)
    recorder.weight(running_mean, "running_mean", arrays, names)
    recorder.weight(running_var, "running_var", arrays, names)
    return recorder.add("batch_norm", [x], dict(eps=float(eps)), arrays, names)


def _linear(recorder, function, args, outputs):
    arrays, names = {}, {}
    x = recorder.value(args[0])
    recorder.weight(args[1], "weight", arrays, names)
    recorder.weight(args[2], "bias", arrays, names, required=False)
    return recorder.add("linear", [x], {}, arrays, names)


def _prelu(recorder, function, args, outputs):
    arrays, names = {}, {}
    x = recorder.value(args[0])
    recorder.weight(args[1], "weight", arrays, names)
    return recorder.add("prelu", [x], {}, arrays, names)


# ------------------------------------------------------------------ activations
def _activation_node(recorder, ref, kind, slope=0.0, parameters=None):
    attributes = dict(kind=kind, negative_slope=float(slope))
    if parameters is not None:
        attributes["parameters"] = [float(p) for p in parameters]
    return recorder.add("activation", [ref], attributes)


#: ``kernels.elementwise``'s names (``functional.elementwise``) without constants
_PLAIN = ("hardswish", "hardsigmoid", "silu", "mish", "gelu", "gelu_tanh")


def _elementwise(recorder, function, args, outputs):
    x = recorder.value(args[0])
    name, a, b = args[1:4]
    if name == "hardtanh":
        if (a, b) == (0.0, 6.0):
            return _activation_node(recorder, x, "relu6")
        return _activation_node(recorder, x, "hardtanh", parameters=(a, b))
    if name in _PLAIN:
        return _activation_node(recorder, x, name)
    if name in ("elu", "softplus"):
        if not (math.isfinite(a) and math.isfinite(b)):
            raise Unsupported("%s with constants %r, %r (a plan's are finite)" % (name, a, b))
        return _activation_node(recorder, x, name, parameters=(a, b))
    raise Unsupported("the elementwise activation %r" % (name,))


def _from_output(recorder, function, args, outputs):
    kind = {activation_functions.ReLU: "relu", activation_functions.Sigmoid: "sigmoid",
            activation_functions.Tanh: "tanh"}.get(function)
    if function is tensor_math.FromOutput:
        kind = {activation_kernels.sigmoid_forward: "sigmoid",
                activation_kernels.tanh_forward: "tanh"}.get(args[1])
    if kind is None:
        raise Unsupported("")
    return _activation_node(recorder, recorder.value(args[0]), kind)


def _leaky_relu(recorder, function, args, outputs):
    return _activation_node(recorder, recorder.value(args[0]), "leaky_relu", float(args[1]))


def _clamp(recorder, function, args, outputs):
    x = recorder.value(args[0])
    low, high = args[1:3]
    if any(bound is not None and np.ndim(bound) != 0 for bound in (low, high)):
        raise Unsupported("clamp with tensor bounds")
    if high is None and low is not None and low == 0:
        return _activation_node(recorder, x, "relu")
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        if (low, high) == (0, 6):
            return _activation_node(recorder, x, "relu6")
        return _activation_node(recorder, x, "hardtanh", parameters=(low, high))
    raise Unsupported("clamp(min=%r, max=%r): a plan clamps with min 0 alone (relu) or "
                      "both bounds finite (hardtanh)" % (low, high))


def _softmax(recorder, function, args, outputs):
    x = recorder.value(args[0])
    ndim = len(_input_shape(args[0]))
    axis = int(args[1]) % max(ndim, 1)
    if axis == 0:
        raise Unsupported("a softmax over the batch axis")
    return recorder.add("softmax", [x], dict(axis=axis, log=bool(args[2])))


# ------------------------------------------------------------------ pooling
def _max_pool(recorder, function, args, outputs):
    if args[1] is not pool_kernels.max_pool2d_forward:
        raise Unsupported("only max pooling with dilation 1 is supported")
    kernel, stride, padding, ceil_mode = args[2]
    return recorder.add("max_pool2d", [recorder.value(args[0])], dict(
        kernel_size=_pair(kernel), stride=_pair(kernel if stride is None or stride == []
                                                else stride),
        padding=_pair(padding), ceil_mode=bool(ceil_mode)))


def _avg_pool(recorder, function, args, outputs):
    kernel, stride, padding, ceil_mode, include, divisor = args[1:7]
    if divisor is not None:
        raise Unsupported("divisor_override is not supported")
    return recorder.add("avg_pool2d", [recorder.value(args[0])], dict(
        kernel_size=_pair(kernel), stride=_pair(kernel if stride is None or stride == []
                                                else stride),
        padding=_pair(padding), ceil_mode=bool(ceil_mode), count_include_pad=bool(include)))


def _adaptive_avg_pool(recorder, function, args, outputs):
    out = outputs[0]._data
    if out.ndim != 4:
        raise Unsupported("only 4-D inputs are supported")
    return recorder.add("adaptive_avg_pool2d", [recorder.value(args[0])],
                        dict(output_size=[int(n) for n in out.shape[2:]]))


def _mean(recorder, function, args, outputs):
    shape, axes, keepdim = _input_shape(args[0]), args[1], args[2]
    if len(shape) != 4 or axes is None or tuple(sorted(axes)) != (2, 3):
        raise Unsupported("only a mean over the spatial axes (2, 3) of a 4-D value is "
                          "supported, not over %s of %d-D" % (axes, len(shape)))
    ref = recorder.add("adaptive_avg_pool2d", [recorder.value(args[0])],
                       dict(output_size=[1, 1]), shape=(shape[1], 1, 1))
    return ref if keepdim else recorder.add("flatten", [ref], dict(start_dim=1))


# ------------------------------------------------------------------ normalisation
def _group_norm(recorder, function, args, outputs):
    x = recorder.value(args[0])
    return _norm_node(recorder, "group_norm", x, args[1], args[2],
                      dict(groups=int(args[3]), eps=float(args[4])))


def _norm_node(recorder, kind, x, weight, bias, attributes):
    arrays, names = {}, {}
    recorder.weight(weight, "weight", arrays, names, required=False)
    recorder.weight(bias, "bias", arrays, names, required=False)
    return recorder.add(kind, [x], attributes, arrays, names)


def _layer_norm(recorder, function, args, outputs):
    x = recorder.value(args[0])
    normalized = args[3]
    count = 1 if np.ndim(normalized) == 0 else len(normalized)
    return _norm_node(recorder, "layer_norm", x, args[1], args[2],
                      dict(normalized_ndim=int(count), eps=float(args[4])))


def _instance_norm(recorder, function, args, outputs):
    x = recorder.value(args[0])
    weight, bias, running_mean, running_var, use_input_stats, _, eps = args[1:8]
    if not use_input_stats:   # eval with running statistics: a per-channel affine map
        return _affine_norm(recorder, x, weight, bias, running_mean, running_var, eps)
    channels = _input_shape(args[0])[1]
    return _norm_node(recorder, "group_norm", x, weight, bias,
                      dict(groups=int(channels), eps=float(eps)))


# ------------------------------------------------------------------ arithmetic
_BINARY = {tensor_ops.Add: "add", tensor_ops.Sub: "sub", tensor_ops.Mul: "mul",
           tensor_ops.Div: "div"}


def _operand(recorder, arg):
    """('value', ref), ('constant', name, array) of a parameter or buffer, or ('number',
    array (1,)) of a scalar the forward wrote (a Python or NumPy number)."""
    if isinstance(arg, Tensor):
        found = recorder.ref(arg)
        if found[0] == "unknown":
            raise Unsupported("an operand is a tensor neither computed from the input nor a "
                              "parameter or buffer of the model")
        return found
    if isinstance(arg, (numbers.Number, np.generic, np.ndarray)) and np.size(arg) == 1 \
            and np.ndim(arg) <= 1:
        return ("number", np.asarray(arg).reshape(1))
    raise Unsupported("an operand is an array made outside fastdl's ops")


def _binary(recorder, function, args, outputs):
    kind = _BINARY[function]
    first, second = (_operand(recorder, a) for a in args[:2])
    if first[0] == "value" and second[0] == "value":
        if len(_input_shape(args[0])) != len(_input_shape(args[1])):
            raise Unsupported("its two values have shapes %s and %s (ranks differ)"
                              % (_input_shape(args[0]), _input_shape(args[1])))
        return recorder.add("binary", [first[1], second[1]], dict(kind=kind, reverse=False))
    reverse = first[0] != "value"
    value, constant = (second, first) if reverse else (first, second)
    if value[0] != "value":
        raise Unsupported("")
    return _constant_binary(recorder, value[1], kind, constant, reverse,
                            len(_input_shape(args[1 if reverse else 0])))


def _constant_binary(recorder, ref, kind, constant, reverse, ndim):
    """A ``binary`` node of value ``ref`` (rank ``ndim``) and a constant operand."""
    array = constant[-1]
    if array.ndim > ndim or (array.ndim == ndim and array.shape[0] != 1):
        raise Unsupported("its constant of shape %s broadcasts over the batch axis"
                          % (array.shape,))
    attributes = dict(kind=kind, reverse=bool(reverse) and kind in ("sub", "div"))
    names = {}
    if constant[0] == "number":   # its value is part of what the node does
        attributes["number"] = float(array[0])
    else:
        names["other"] = constant[1]
    return recorder.add("binary", [ref], attributes, {"other": array}, names)


def _neg(recorder, function, args, outputs):
    return _constant_binary(recorder, recorder.value(args[0]), "mul",
                            ("number", np.asarray([-1.0])), False, len(_input_shape(args[0])))


# ------------------------------------------------------------------ shapes
def _same(recorder, function, args, outputs):
    """An op that copies its input's values (clone / contiguous)."""
    return recorder.value(args[0])


def _reshape(recorder, function, args, outputs):
    before, after = _input_shape(args[0]), outputs[0]._data.shape
    x = recorder.value(args[0])
    if after == before:
        return x
    start = len(after) - 1
    if start >= 1 and len(before) > len(after) and before[:start] == after[:start]:
        return recorder.add("flatten", [x], dict(start_dim=start))
    return recorder.add("reshape", [x], dict(shape=[int(n) for n in after[1:]]))


def _permute(recorder, function, args, outputs):
    dims = [int(d) for d in args[1]]
    if dims[0] != 0:
        raise Unsupported("a permutation %s that moves the batch axis" % (dims,))
    x = recorder.value(args[0])
    if dims == sorted(dims):
        return x
    return recorder.add("transpose", [x], dict(perm=dims))


def _expand(recorder, function, args, outputs):
    return recorder.add("expand", [recorder.value(args[0])], dict(
        shape=[int(n) for n in outputs[0]._data.shape[1:]]))


def _concatenate(recorder, function, args, outputs):
    axis = int(args[0])
    refs = [recorder.value(a) for a in args[1:]]   # (along the batch: a new batch size)
    if len(refs) == 1:
        return refs[0]
    return recorder.add("concat", refs, dict(axis=axis))


def _getitem(recorder, function, args, outputs):
    """Basic indexing that keeps the whole batch: one ``slice`` node an axis it narrows,
    then a ``reshape`` where an int index drops an axis or None adds one."""
    x, shape, index = recorder.value(args[0]), _input_shape(args[0]), args[1]
    if not isinstance(index, tuple) or not tensor_shape.is_basic_index(index):
        raise Unsupported("indexing with arrays or masks (only slices, ints and None are "
                          "supported)")
    spans = sum(1 for i in index if i is not None and i is not Ellipsis)
    expanded = []
    for entry in index:
        expanded += [slice(None)] * (len(shape) - spans) if entry is Ellipsis else [entry]
    if Ellipsis not in index:
        expanded += [slice(None)] * (len(shape) - spans)
    windows, axis, reshaped = [], 0, False
    for entry in expanded:
        if entry is None:
            if axis == 0:
                raise Unsupported("a new axis before the batch axis")
            reshaped = True
            continue
        size = shape[axis]
        if isinstance(entry, slice):
            start, stop, step = entry.indices(size)
        else:
            start = int(entry) + (size if entry < 0 else 0)
            stop, step, reshaped = start + 1, 1, True
        if (start, stop, step) != (0, size, 1):
            if axis == 0:
                raise Unsupported("an index %r on the batch axis (it must be whole)"
                                  % (entry,))
            if step < 1 or start >= stop:
                raise Unsupported("a slice %r of an axis of %d (a plan's slices have a "
                                  "positive step and are not empty)" % (entry, size))
            windows.append((axis, start, stop, step))
        axis += 1
    sliced = list(shape[1:])
    for axis, start, stop, step in windows:
        sliced[axis - 1] = -(-(stop - start) // step)
        x = recorder.add("slice", [x], dict(axis=axis, start=start, stop=stop, step=step),
                         shape=sliced)
    if reshaped:
        x = recorder.add("reshape", [x], dict(shape=[int(n) for n in
                                                     outputs[0]._data.shape[1:]]))
    return x


def _pad(recorder, function, args, outputs):
    x, shape = recorder.value(args[0]), _input_shape(args[0])
    widths, mode, value = args[1:4]
    pairs = [(0, 0)] * (2 - len(widths)) + [tuple(int(n) for n in pair) for pair in widths]
    if len(shape) != 4 or len(widths) > 2 or min(min(pair) for pair in pairs) < 0 or (
            mode == "constant" and value != 0):
        raise Unsupported("only padding the last two axes of a 4-D value by amounts >= 0 "
                          "(with zeros if constant) is supported")
    if not any(n for pair in pairs for n in pair):
        return x
    return recorder.add("pad2d", [x], dict(mode=mode, padding=[n for pair in pairs
                                                               for n in pair]))


# ------------------------------------------------------------------ resizing
def _upsample(recorder, function, args, outputs):
    """interpolate's integer factors (nearest, or bilinear without aligned corners)."""
    out = outputs[0]._data.shape
    return recorder.add("resize", [recorder.value(args[0])], dict(
        mode=args[2], size=[int(out[2]), int(out[3])], align_corners=False, scale=None))


def _resample(recorder, function, args, outputs):
    """interpolate's tap tables: the mode, sizes, scales and corner alignment are read
    from the ``interpolate`` call that made them (the tables alone do not show a
    non-integer scale factor), and the tables made again from them must be the ones
    recorded."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not interpolate.__code__:
        frame = frame.f_back
    if frame is None or frame.f_locals.get("x") is None:
        raise Unsupported("resampling outside F.interpolate")
    call = frame.f_locals
    shape, mode, align = call["x"].shape, call["mode"], call["align"]
    sizes, scales = call["sizes"], call["scales"]
    if len(shape) != 4 or mode not in ("nearest", "nearest-exact", "bilinear", "bicubic"):
        raise Unsupported("interpolate in mode %r of a %d-D input (a plan resizes 4-D values "
                          "in modes nearest, nearest-exact, bilinear, bicubic)"
                          % (mode, len(shape)))
    tables = [mode_taps(mode, shape[2 + a], sizes[a], align, scales[a]) for a in (0, 1)]
    if not all(np.array_equal(mine, theirs) for table, recorded in zip(tables, args[1:3])
               for mine, theirs in zip(table, recorded)):
        raise Unsupported("its tap tables are not interpolate's")
    return recorder.add("resize", [recorder.value(args[0])], dict(
        mode=mode.replace("-", "_"), size=[int(n) for n in sizes], align_corners=bool(align),
        scale=None if scales[0] is None else [float(s) for s in scales]))


_BUILDERS = {
    Conv2d: _conv, ConvTranspose2d: _conv, BatchNorm: _batch_norm, Linear: _linear,
    PReLU: _prelu, Elementwise: _elementwise,
    activation_functions.ReLU: _from_output, activation_functions.Sigmoid: _from_output,
    activation_functions.Tanh: _from_output, tensor_math.FromOutput: _from_output,
    activation_functions.LeakyReLU: _leaky_relu, tensor_math.Clamp: _clamp,
    activation_functions.Softmax: _softmax, tensor_math.Softmax: _softmax,
    MaxPool2d: _max_pool, AvgPool2d: _avg_pool, AdaptiveAvgPool2d: _adaptive_avg_pool,
    tensor_reduce.Mean: _mean, GroupNorm: _group_norm, LayerNorm: _layer_norm,
    InstanceNorm: _instance_norm, tensor_ops.Add: _binary, tensor_ops.Sub: _binary,
    tensor_ops.Mul: _binary, tensor_ops.Div: _binary, tensor_ops.Neg: _neg,
    tensor_convert.Clone: _same, tensor_shape.Reshape: _reshape,
    tensor_shape.Permute: _permute, tensor_shape.Expand: _expand,
    tensor_shape.Concatenate: _concatenate, tensor_shape.GetItem: _getitem, Pad: _pad,
    Upsample: _upsample, Resample: _resample,
}


def node(recorder, function, args, outputs):
    """The reference of the value the op's output is (after adding its nodes)."""
    builder = _BUILDERS.get(function)
    if builder is None:
        raise Unsupported("")
    return builder(recorder, function, args, outputs)
