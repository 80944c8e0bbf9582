"""The op graph of an inference plan: its ops, their checks and the memory a call holds.

An op is a dict ``{"op": name, "inputs": [value ids], "output": id, ...attributes,
"weights": {role: tensor name}}``; value 0 is the plan's input and op ``i`` writes value
``i + 1``. ``validate`` infers the shape of every value from the input's, so a plan from
a file can never drive a kernel out of bounds, and bounds what a call at batch 1 holds
(``held``). Every failure is a ValueError starting "invalid inference plan".
"""
import collections
import math

import numpy as np

from fastdl.deploy import _graph_ops
from fastdl.deploy._plancheck import (  # noqa: F401  (re-exported: the plan's callers')
    MAX_ELEMENTS, MAX_INT, MAX_OPS, bounded_int, bounded_ints, fail, finite, flag)
from fastdl.deploy._plancheck import weight as _weight
from fastdl.kernels import pool as pool_kernels
from fastdl.shapes import conv_output_size, conv_transpose_output_size, is_int

LAYER_OPS = ("conv2d", "conv_transpose2d", "linear", "max_pool2d", "avg_pool2d",
             "adaptive_avg_pool2d", "flatten", "affine_channels", "activation", "prelu",
             "pad2d")
OPS = LAYER_OPS + _graph_ops.OPS
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "identity", "relu6", "hardtanh",
               "hardsigmoid", "hardswish", "silu", "mish", "gelu", "gelu_tanh", "elu",
               "softplus")
#: The activations with constants: their ``parameters`` attribute, a list of this many
#: finite numbers (hardtanh: min_val, max_val; elu: alpha, scale, where SELU is ELU with
#: its two constants; softplus: beta, threshold). The others have none.
PARAMETERS = {"hardtanh": 2, "elu": 2, "softplus": 2}
#: Padding modes of ``pad2d``, as ``kernels.pad`` (torch's padding_mode 'zeros' is
#: 'constant', zeros).
PAD_MODES = ("constant", "reflect", "replicate", "circular")
# the attributes each op has
ATTRIBUTES = {
    "conv2d": {"stride", "padding", "dilation", "groups", "negative_slope", "weights"},
    "conv_transpose2d": {"stride", "padding", "dilation", "groups", "output_padding",
                         "weights"},
    "linear": {"negative_slope", "weights"},
    "max_pool2d": {"kernel_size", "stride", "padding", "ceil_mode"},
    "avg_pool2d": {"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"},
    "adaptive_avg_pool2d": {"output_size"},
    "flatten": {"start_dim"},
    "affine_channels": {"weights"},
    "activation": {"kind", "negative_slope"},
    "prelu": {"weights"},
    "pad2d": {"mode", "padding"},
    **_graph_ops.ATTRIBUTES,
}
# the attributes an op may have besides those (the activations with constants)
OPTIONAL = {"activation": {"parameters"}}
# the tensors each op with weights may name
ROLES = {"conv2d": {"weight", "bias"}, "conv_transpose2d": {"weight", "bias"},
         "linear": {"weight", "bias"}, "affine_channels": {"scale", "shift"},
         "prelu": {"weight"}, **_graph_ops.ROLES}
# (fewest, most) inputs of the ops that take more than one (conv2d: a residual)
INPUTS = {"conv2d": (1, 2), **_graph_ops.INPUTS}


def _window(value, what, index, low):
    """A pooling window argument (an int or a pair of ints) as a pair."""
    pair = (value, value) if is_int(value) else value
    return bounded_ints(pair, 2, "op %d: %s" % (index, what), low)


# ------------------------------------------------------------------- shape inference
# One function an op kind: (op, index, input shapes, tensors) -> output shape, at batch 1.

def _transposed_size(index, shape, weight, stride, padding, dilation, output_padding):
    """The output's (H, W) of a transposed conv."""
    if any(output_padding[a] >= max(stride[a], dilation[a]) for a in (0, 1)):
        fail("op %d: output_padding %s must be smaller than stride or dilation"
             % (index, output_padding))
    size = [conv_transpose_output_size(shape[2 + a], weight.shape[2 + a], stride[a],
                                       padding[a], output_padding[a], dilation[a])
            for a in (0, 1)]
    if min(size) < 1:
        fail("op %d: empty output" % index)
    return size


def _infer_conv(op, index, shapes, tensors):
    shape, transposed = shapes[0], op["op"] == "conv_transpose2d"
    weight = _weight(tensors, op, "weight", index, 4)
    if weight is None:
        fail("op %d (%s) has no weight" % (index, op["op"]))
    stride = bounded_ints(op["stride"], 2, "stride", 1)
    padding = bounded_ints(op["padding"], 2, "padding", 0)
    dilation = bounded_ints(op["dilation"], 2, "dilation", 1)
    groups = op["groups"]
    if not bounded_int(groups, 1) or len(shape) != 4:
        fail("op %d: bad groups %r or input shape %s" % (index, groups, shape))
    channels = shape[1]
    if transposed:
        out_channels = weight.shape[1] * groups
        output_padding = bounded_ints(op["output_padding"], 2, "output_padding", 0)
        if weight.shape[0] != channels or channels % groups:
            fail("op %d: weight %s does not fit %d input channels" % (index, weight.shape,
                                                                      channels))
        size = _transposed_size(index, shape, weight, stride, padding, dilation,
                                output_padding)
    else:
        out_channels = weight.shape[0]
        if weight.shape[1] * groups != channels or out_channels % groups:
            fail("op %d: weight %s with groups=%d does not fit %d input channels"
                 % (index, weight.shape, groups, channels))
        try:
            size = [conv_output_size(shape[2 + a], weight.shape[2 + a], stride[a],
                                     padding[a], dilation[a]) for a in (0, 1)]
        except ValueError as error:
            fail("op %d: %s" % (index, error))
    bias = _weight(tensors, op, "bias", index, 1)
    if bias is not None and bias.shape != (out_channels,):
        fail("op %d: bias shape %s, expected (%d,)" % (index, bias.shape, out_channels))
    out = (shape[0], out_channels, size[0], size[1])
    if len(shapes) > 1 and shapes[1] != out:
        fail("op %d: residual shape %s differs from the output %s" % (index, shapes[1], out))
    return out


def _infer_linear(op, index, shapes, tensors):
    shape = shapes[0]
    weight = _weight(tensors, op, "weight", index, 2)
    if weight is None or len(shape) != 2 or shape[1] != weight.shape[1]:
        fail("op %d: linear weight %s does not fit input %s"
             % (index, None if weight is None else weight.shape, shape))
    bias = _weight(tensors, op, "bias", index, 1)
    if bias is not None and bias.shape != (weight.shape[0],):
        fail("op %d: bias shape %s" % (index, bias.shape))
    return (shape[0], weight.shape[0])


def _infer_pool(op, index, shapes, tensors):
    shape, kind = shapes[0], op["op"]
    kernel = _window(op["kernel_size"], "kernel_size", index, 1)
    stride = op["stride"]
    if stride is not None and stride != []:   # None or []: the kernel size
        _window(stride, "stride", index, 1)
    _window(op["padding"], "padding", index, 0)
    flag(op, "ceil_mode", index)
    if kind == "avg_pool2d":
        flag(op, "count_include_pad", index)
    if len(shape) != 4:
        fail("op %d: pooling needs a 4-D input, got %s" % (index, shape))
    try:
        _, _, _, output_hw = pool_kernels.validate_pool2d_args(
            kind, shape, kernel, op["stride"], op["padding"], op["ceil_mode"])
    except (TypeError, ValueError) as error:
        fail("op %d: %s" % (index, error))
    return shape[:2] + tuple(output_hw)


def _infer_adaptive_pool(op, index, shapes, tensors):
    shape = shapes[0]
    size = bounded_ints(op["output_size"], 2, "output_size", 1)
    if len(shape) != 4:
        fail("op %d: adaptive pooling needs a 4-D input, got %s" % (index, shape))
    return shape[:2] + size


def _infer_flatten(op, index, shapes, tensors):
    shape, start = shapes[0], op["start_dim"]
    if not is_int(start) or not 1 <= start < len(shape):
        fail("op %d: bad start_dim %r for shape %s" % (index, start, shape))
    return shape[:start] + (math.prod(shape[start:]),)


def _infer_affine(op, index, shapes, tensors):
    shape = shapes[0]
    for role in ("scale", "shift"):
        array = _weight(tensors, op, role, index, 1)
        if array is None or len(shape) < 2 or array.shape != (shape[1],):
            fail("op %d: %s must have shape (%d,)" % (index, role, shape[1]))
    return shape


def _infer_activation(op, index, shapes, tensors):
    kind = op["kind"]
    if not isinstance(kind, str) or kind not in ACTIVATIONS:
        fail("op %d: unknown activation %r" % (index, kind))
    if kind == "leaky_relu" and op["negative_slope"] is None:
        fail("op %d: leaky_relu needs a negative_slope" % index)
    count = PARAMETERS.get(kind, 0)
    parameters = op.get("parameters")
    if (parameters is None) != (count == 0) or count and (
            not isinstance(parameters, list) or len(parameters) != count or not all(
                finite(p) for p in parameters)):
        fail("op %d: activation %r takes %s, got parameters %r"
             % (index, kind, "%d finite numbers" % count if count else "no parameters",
                parameters))
    if kind == "hardtanh" and parameters[0] > parameters[1]:
        fail("op %d: hardtanh's min_val %r is above its max_val %r" % (index, *parameters))
    if kind == "softplus" and parameters[0] == 0:
        fail("op %d: softplus's beta must not be 0" % index)
    return shapes[0]


def _infer_prelu(op, index, shapes, tensors):
    shape = shapes[0]
    weight = _weight(tensors, op, "weight", index, 1)
    if weight is None or len(shape) < 2 or weight.shape[0] not in (1, shape[1]):
        fail("op %d: prelu needs a weight of 1 or %s elements, got %s"
             % (index, shape[1] if len(shape) > 1 else "C",
                None if weight is None else weight.shape))
    return shape


def _infer_pad(op, index, shapes, tensors):
    """[top, bottom, left, right] of the last two axes, in one of ``PAD_MODES``; reflect
    pads less than the size, circular at most the size (torch's rules)."""
    shape, mode = shapes[0], op["mode"]
    padding = bounded_ints(op["padding"], 4, "op %d: padding" % index, 0)
    if not isinstance(mode, str) or mode not in PAD_MODES or len(shape) != 4:
        fail("op %d: pad2d needs a mode of %s and a 4-D input, got %r and %s"
             % (index, PAD_MODES, mode, shape))
    for axis, (before, after) in zip((2, 3), (padding[:2], padding[2:])):
        size = shape[axis]
        if mode == "reflect" and max(before, after) >= size or (
                mode == "circular" and max(before, after) > size):
            fail("op %d: %s padding of %d on a size of %d" % (index, mode,
                                                             max(before, after), size))
    return shape[:2] + (shape[2] + padding[0] + padding[1], shape[3] + padding[2]
                        + padding[3])


_INFER = {"conv2d": _infer_conv, "conv_transpose2d": _infer_conv, "linear": _infer_linear,
          "max_pool2d": _infer_pool, "avg_pool2d": _infer_pool,
          "adaptive_avg_pool2d": _infer_adaptive_pool, "flatten": _infer_flatten,
          "affine_channels": _infer_affine, "activation": _infer_activation,
          "prelu": _infer_prelu, "pad2d": _infer_pad, **_graph_ops.INFER}


# ------------------------------------------------------------------------ validation

def held(op, shapes, out, tensors, itemsize):
    """Bytes a call at batch 1 holds for ``op`` (input ``shapes``, output ``out``): its
    output, the copies its kernel makes (and the zero borders the schedule may give the
    buffers it reads), and its prepared weights. An upper bound, not an exact count."""
    kind, size = op["op"], math.prod(out)
    if kind in _graph_ops.OPS:
        return _graph_ops.held(op, shapes, out, itemsize)
    if kind == "flatten":
        return 0                                       # a view
    if kind in ("affine_channels", "prelu", "pad2d"):
        # x * scale, then + shift; weight * x, then the choice; a gather per axis
        return 2 * size * itemsize
    if kind in ("max_pool2d", "adaptive_avg_pool2d"):
        # the plan's buffer, and where the window is not 2x2 (1x1) a new output, and for
        # max pooling its int64 argmax
        return size * (2 * itemsize + (8 if kind == "max_pool2d" else 0))
    total = size * itemsize
    if kind in ("conv2d", "conv_transpose2d", "linear"):
        weight = tensors[op["weights"]["weight"]]
        # packed in blocks of up to 24 rows or columns (dense panels: padded, then
        # transposed; the direct loops' blocks, of a transposed conv's flipped weights),
        # for a direct 3x3 conv also as Winograd's 16 planes (made, packed and joined:
        # 3 x 16/9 of the weights at once)
        copies = 3 if kind == "linear" else 8
        total += (copies * weight.size + 32 * (weight.size // min(weight.shape[:2]))) \
            * itemsize
    if kind == "conv2d":
        _, channels, height, width = shapes[0]
        rows, cols = op["padding"]
        total += channels * ((height + 2 * rows) * (width + 2 * cols) - height * width) \
            * itemsize                                 # the input's border, at most
    return total


def _check_fields(op, index, tensors):
    """Check op ``index``'s kind, fields, inputs, output id, weights and negative slope
    (not yet its shapes)."""
    if not isinstance(op, dict) or op.get("op") not in OPS:
        fail("op %d is unknown: %r" % (index, op.get("op") if isinstance(op, dict) else op))
    kind = op["op"]
    extra = set(op) - {"op", "inputs", "output"} - ATTRIBUTES[kind] - OPTIONAL.get(kind,
                                                                                   set())
    missing = ATTRIBUTES[kind] - set(op) - {"weights"}
    if extra or missing:
        fail("op %d (%s): unexpected %s, missing %s" % (index, kind, sorted(extra),
                                                       sorted(missing)))
    inputs, (fewest, most) = op.get("inputs"), INPUTS.get(kind, (1, 1))
    if not isinstance(inputs, list) or not fewest <= len(inputs) <= most or not all(
            bounded_int(i, 0, index) for i in inputs):
        fail("op %d (%s): inputs %r must name %s earlier values (ids < %d)"
             % (index, kind, inputs, fewest if fewest == most else "%d to %d" % (fewest, most),
                index + 1))
    if not is_int(op.get("output")) or op["output"] != index + 1:
        fail("op %d: output id must be %d" % (index, index + 1))
    weights = op.get("weights", {})
    if not isinstance(weights, dict) or not set(weights) <= ROLES.get(kind, set()) \
            or not all(isinstance(name, str) and name in tensors
                       for name in weights.values()):
        fail("op %d: weights %r must map %s to tensors of the plan"
             % (index, weights, sorted(ROLES.get(kind, ()))))
    slope = op.get("negative_slope")
    if slope is not None and not finite(slope):
        fail("op %d: negative_slope must be a finite number or null" % index)


def infer(op, index, shapes, tensors):
    """The shape of op ``index``'s output at batch 1, from ``shapes`` (value id: shape)
    of the values before it; raises ValueError ("invalid inference plan") where the op
    is malformed or does not fit them."""
    _check_fields(op, index, tensors)
    out = _INFER[op["op"]](op, index, [shapes[i] for i in op["inputs"]], tensors)
    if not all(bounded_int(n, 1) for n in out[1:]) or math.prod(out) > MAX_ELEMENTS:
        fail("op %d: output shape %s (at batch 1) has a size outside [1, %d] or more "
             "than %d elements" % (index, out, MAX_INT, MAX_ELEMENTS))
    return out


def check_outputs(outputs, count):
    """``outputs``, None or a list of at most ``MAX_OPS`` value ids in ``[1, count]``
    (duplicates allowed), as a list (or None)."""
    if outputs is None:
        return None
    if not isinstance(outputs, (list, tuple)) or not 1 <= len(outputs) <= MAX_OPS or not all(
            bounded_int(value, 1, count) for value in outputs):
        fail("outputs must be null or a list of 1 to %d value ids in [1, %d] (op outputs), "
             "got %s" % (MAX_OPS, count, _abridged(outputs)))
    return [int(value) for value in outputs]


def _abridged(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def validate(ops, tensors, input_shape, dtype, max_bytes=None, outputs=None):
    """The shape of every value (0: the input; i + 1: op i's output) at batch 1, and the
    bytes a call at batch 1 holds (``held``, and the copies it returns of the
    ``outputs``, by default the last value); raise ValueError on any inconsistency,
    or where those bytes pass ``max_bytes``."""
    if not isinstance(ops, list) or not ops:
        fail("ops must be a non-empty list")
    outputs = check_outputs(outputs, len(ops))
    returned = [len(ops)] if outputs is None else outputs
    itemsize = np.dtype(dtype).itemsize
    shapes = {0: (1,) + tuple(input_shape)}
    if len(input_shape) != 3 or math.prod(input_shape) > MAX_ELEMENTS or not all(
            bounded_int(n, 1) for n in input_shape):
        fail("input_shape %s must be 3 sizes in [1, %d], of at most %d elements"
             % (tuple(input_shape), MAX_INT, MAX_ELEMENTS))
    total = math.prod(input_shape) * itemsize          # the input
    copies = collections.Counter(returned)
    for index, op in enumerate(ops):
        shapes[index + 1] = out = infer(op, index, shapes, tensors)
        sources = [shapes[i] for i in op["inputs"]]
        total += held(op, sources, out, tensors, itemsize)
        total += copies[index + 1] * math.prod(out) * itemsize   # the copies returned
        if max_bytes is not None and total > max_bytes:
            fail("a call at batch 1 would hold more than max_bytes=%d bytes by op %d (%s, "
                 "output %s); load it with a larger max_bytes if it is trusted"
                 % (max_bytes, index, op["op"], out))
    for name, array in tensors.items():
        if array.dtype != dtype:
            fail("tensor %r has dtype %s, the plan is %s" % (name, array.dtype, dtype))
    return shapes, total
