"""ONNX nodes that compute, as plan ops, for :mod:`fastdl.deploy.onnx_import`:
convolutions, dense layers, BatchNormalization, the elementwise arithmetic, the
activations, Softmax and the normalisations.

Every converter is ``convert(importer, node)``. Fusions happen here as the nodes come:
a BatchNormalization folds into the Conv / ConvTranspose / Gemm before it, an Add of a
per-channel constant becomes its bias, an Add of two values a conv's residual, a
Relu / LeakyRelu its epilogue; each only where nothing else reads the value fused away.
"""
import math

import numpy as np

from fastdl.deploy._onnx_files import _fail
from fastdl.deploy._onnx_layout import (_axis, _pair, image, reshape, slices, transpose,
                                        window_pads)
from fastdl.deploy._pending import depends
from fastdl.deploy.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights


def per_channel(array, shape):
    """A constant that broadcasts onto a value of ``shape`` along its channels (axis 1)
    alone, leaving the shape as it is, as a ``(C,)`` array; else None."""
    array = np.asarray(array)
    if array.ndim > len(shape) or len(shape) < 2:
        return None
    full = (1,) * (len(shape) - array.ndim) + array.shape
    if any(n != 1 for i, n in enumerate(full) if i != 1) or full[1] not in (1, shape[1]):
        return None
    return np.broadcast_to(array.reshape(-1), (shape[1],)).copy()


def _fused_into(imp, node, ref, name, kinds=("conv2d", "conv_transpose2d", "linear",
                                             "affine_channels")):
    """The op whose bias (shift) a per-channel constant added to ``name`` may join."""
    op = imp.producer(ref, name, kinds)
    if op is None or (op.op == "conv2d" and len(op.inputs) > 1):
        return None
    return op


# ------------------------------------------------------------------ conv, dense

def conv(imp, node):
    transposed = node.op_type == "ConvTranspose"
    allowed = {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}
    attributes = imp.attributes(node, allowed | ({"output_padding", "output_shape"}
                                                 if transposed else set()))
    x, shape = image(imp, node, node.input[0])
    weight = imp.constant(node, node.input[1] if len(node.input) > 1 else "")
    bias = imp.constant(node, imp.input(node, 2), optional=True)
    if weight.ndim != 4:
        _fail("%s: only 2-D convolutions are supported (weight shape %s)"
              % (imp.where(node), weight.shape))
    kernel = list(weight.shape[2:])
    if list(attributes.get("kernel_shape", kernel)) != kernel:
        _fail("%s: kernel_shape %s differs from the weight's %s"
              % (imp.where(node), attributes["kernel_shape"], kernel))
    stride = _pair(imp, node, attributes, "strides", [1, 1])
    dilation = _pair(imp, node, attributes, "dilations", [1, 1])
    weights = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    fields = dict(stride=stride, dilation=dilation, groups=int(attributes.get("group", 1)))
    if transposed:
        return _conv_transpose(imp, node, x, shape, kernel, attributes, weights, fields)
    pads = window_pads(imp, node, attributes, shape[2:], kernel, stride, dilation)
    even = [min(pads[0], pads[2]), min(pads[1], pads[3])]
    extra = [pads[0] - even[0], pads[2] - even[0], pads[1] - even[1], pads[3] - even[1]]
    if any(extra):   # the uneven part of the padding first
        x = imp.emit(node, "pad2d", [x], mode="constant", padding=extra)
    imp.alias(node.output[0], imp.emit(node, "conv2d", [x], weights, padding=even,
                                       negative_slope=None, **fields))


def _conv_transpose(imp, node, x, shape, kernel, attributes, weights, fields):
    """ConvTranspose: the plan's with the smaller of each axis's pads, its output
    padding for the end, and a slice where that cannot reach ONNX's output."""
    stride, dilation = fields["stride"], fields["dilation"]
    output_padding = list(attributes.get("output_padding", [0, 0]))
    if len(output_padding) != 2:
        _fail("%s: output_padding must be 2 ints" % imp.where(node))
    natural = [stride[a] * (shape[2 + a] - 1) + output_padding[a] + (kernel[a] - 1)
               * dilation[a] + 1 for a in (0, 1)]
    mode = attributes.get("auto_pad", "NOTSET")
    if "output_shape" in attributes or mode in ("SAME_UPPER", "SAME_LOWER"):
        if "pads" in attributes:
            _fail("%s: pads with output_shape or auto_pad are not supported"
                  % imp.where(node))
        wanted = list(attributes.get("output_shape", [n * s for n, s in zip(shape[2:],
                                                                           stride)]))[-2:]
        total = [natural[a] - wanted[a] for a in (0, 1)]
        small = [t // 2 for t in total]
        large = [t - t // 2 for t in total]
        pads = small + large if mode == "SAME_UPPER" else large + small
    else:
        pads = window_pads(imp, node, attributes, shape[2:], kernel, stride, dilation)
    out = [natural[a] - pads[a] - pads[a + 2] for a in (0, 1)]
    for a in (0, 1):   # a negative end padding (an output_shape past the natural
        if pads[a + 2] < 0:   # size): more output padding, zeros and the bias
            output_padding[a] -= pads[a + 2]
            pads[a + 2] = 0
    if min(pads) < 0:
        _fail("%s: pads %s crop the start of the output" % (imp.where(node), pads))
    padding = [min(pads[a], pads[a + 2]) for a in (0, 1)]
    # ONNX's output starts ``start`` rows into the plan's; the rows it needs past the
    # plan's end come from the plan's output padding (up to its limit), and a slice
    # keeps ONNX's rows
    extra = [max(output_padding[a] - max(pads[a + 2] - pads[a], 0), 0) for a in (0, 1)]
    limit = [max(stride[a], dilation[a]) - 1 for a in (0, 1)]
    ref = imp.emit(node, "conv_transpose2d", [x], weights, padding=padding,
                   output_padding=[min(e, m) for e, m in zip(extra, limit)], **fields)
    got = imp.shape(ref)[2:]
    start = [pads[a] - padding[a] for a in (0, 1)]
    if any(start[a] + out[a] > got[a] for a in (0, 1)):
        _fail("%s: pads %s with output_padding %s have no plan form"
              % (imp.where(node), pads, output_padding))
    ref = slices(imp, node, ref, {2 + a: (start[a], start[a] + out[a], 1) for a in (0, 1)})
    imp.alias(node.output[0], ref)


def _linear_of(imp, node, x, weight, bias):
    """``x @ weight.T + bias`` over the last axis of ``x``: linear for a 2-D value, else
    a 1x1 conv2d between reshapes and transposes ((N, ..., K) -> (N, K, P, 1))."""
    shape = imp.shape(x)
    weights = {"weight": np.ascontiguousarray(weight)}
    if bias is not None:
        weights["bias"] = bias
    if len(shape) == 2:
        return imp.emit(node, "linear", [x], weights, negative_slope=None)
    inner, rows = shape[-1], math.prod(shape[1:-1])
    flat = transpose(imp, node, reshape(imp, node, x, (rows, inner, 1)), [0, 2, 1, 3])
    weights["weight"] = weights["weight"].reshape(weight.shape + (1, 1))
    ref = imp.emit(node, "conv2d", [flat], weights, stride=[1, 1], padding=[0, 0],
                   dilation=[1, 1], groups=1, negative_slope=None)
    back = transpose(imp, node, ref, [0, 2, 1, 3])
    return reshape(imp, node, back, tuple(shape[1:-1]) + (weight.shape[0],))


def gemm(imp, node):
    attributes = imp.attributes(node, {"alpha", "beta", "transA", "transB"})
    if attributes.get("transA", 0):
        _fail("%s: transA=1 is not supported (it moves the batch axis)" % imp.where(node))
    x = imp.value(node, node.input[0])
    raw = imp.constant(node, node.input[1])
    if raw.ndim != 2 or len(imp.shape(x)) != 2:
        _fail("%s: only a 2-D value times a 2-D constant is supported" % imp.where(node))
    weight = (raw if attributes.get("transB", 0) else raw.T) * attributes.get("alpha", 1.0)
    bias = imp.constant(node, imp.input(node, 2), optional=True)
    if bias is not None:
        channels = per_channel(bias, (1, weight.shape[0]))
        if channels is None:
            _fail("%s: C of shape %s is not one per output" % (imp.where(node), bias.shape))
        bias = channels * attributes.get("beta", 1.0)
    imp.alias(node.output[0], _linear_of(imp, node, x, weight.astype(raw.dtype), bias))


def matmul(imp, node):
    imp.attributes(node, set())
    if len(node.input) != 2:
        _fail("%s: needs two inputs" % imp.where(node))
    left = node.input[0] in imp.values
    if left == (node.input[1] in imp.values):
        _fail("%s: only a value times a constant (or a constant times a value) is "
              "supported" % imp.where(node))
    x = imp.value(node, node.input[0 if left else 1])
    shape = imp.shape(x)
    array = imp.constant(node, node.input[1 if left else 0])
    if array.ndim > 2 and (array.ndim > len(shape) or any(n != 1 for n in
                                                          array.shape[:-2])):
        _fail("%s: a constant of shape %s multiplies each sample by a different matrix"
              % (imp.where(node), array.shape))
    if left:
        vector = array.ndim == 1
        matrix = array.reshape(array.shape[0], 1) if vector else array.reshape(
            array.shape[-2:])
        ref = _linear_of(imp, node, x, matrix.T, None)
        if vector:
            ref = reshape(imp, node, ref, imp.shape(ref)[1:-1])
        return imp.alias(node.output[0], ref)
    # constant @ x: over x's last two axes, (x^T @ constant^T)^T
    if array.ndim < 2 or len(shape) < 3:
        _fail("%s: a constant times a value of %d dims is not supported"
              % (imp.where(node), len(shape)))
    swap = list(range(len(shape) - 2)) + [len(shape) - 1, len(shape) - 2]
    ref = _linear_of(imp, node, transpose(imp, node, x, swap), array.reshape(
        array.shape[-2:]), None)
    imp.alias(node.output[0], transpose(imp, node, ref, swap))


def batch_norm(imp, node):
    attributes = imp.attributes(node, {"epsilon", "momentum", "spatial", "training_mode"})
    if attributes.get("training_mode", 0) or attributes.get("spatial", 1) != 1:
        _fail("%s: only inference mode (training_mode=0, spatial=1) is supported"
              % imp.where(node))
    x = imp.value(node, node.input[0])
    gamma, beta, mean, var = (imp.constant(node, name) for name in node.input[1:5])
    eps = float(attributes.get("epsilon", 1e-5))
    op = imp.producer(x, node.input[0], ("conv2d", "conv_transpose2d", "linear"))
    if op is not None and not (op.op == "conv2d" and len(op.inputs) > 1):
        weight, bias = op.weights["weight"], op.weights.get("bias")
        if op.op == "linear":
            weight, bias = fuse_linear_bn_weights(weight, bias, mean, var, eps, gamma, beta)
        else:
            weight, bias = fuse_conv_bn_weights(
                weight, bias, mean, var, eps, gamma, beta,
                transposed=op.op == "conv_transpose2d", groups=op.fields["groups"])
        op.weights.update(weight=weight, bias=bias)
        return imp.alias(node.output[0], x)
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    ref = imp.emit(node, "affine_channels", [x], {
        "scale": scale.astype(gamma.dtype),
        "shift": (beta - mean * scale).astype(gamma.dtype)})
    imp.alias(node.output[0], ref)


# ------------------------------------------------------------------ elementwise

def binary(imp, node, kind=None):
    """Add, Sub, Mul, Div: of two values (an Add as a conv's residual where it can
    be), or of a value and a constant (per-channel: a conv's bias or affine_channels)."""
    imp.attributes(node, set())
    kind = kind or node.op_type.lower()
    if len(node.input) != 2:
        _fail("%s: needs two inputs" % imp.where(node))
    names = list(node.input)
    known = [name in imp.values for name in names]
    if all(known):
        refs = [imp.values[name] for name in names]
        ranks = [len(imp.shape(ref)) for ref in refs]
        if ranks[0] != ranks[1]:
            _fail("%s: values of %d and %d dims (the batch axes would not line up)"
                  % (imp.where(node), ranks[0], ranks[1]))
        if kind == "add" and _residual(imp, node, names, refs):
            return None
        return imp.alias(node.output[0], imp.emit(node, "binary", refs, kind=kind,
                                                  reverse=False))
    first = known[0]
    name, other = (names[0], names[1]) if first else (names[1], names[0])
    x = imp.value(node, name)
    array = np.asarray(imp.constant(node, other))
    shape = imp.shape(x)
    channels = per_channel(array, shape)
    if channels is not None and (kind == "add" or (kind == "sub" and first)):
        op = _fused_into(imp, node, x, name)
        if op is not None:
            role = "shift" if op.op == "affine_channels" else "bias"
            add = channels if kind == "add" else -channels
            current = op.weights.get(role)
            op.weights[role] = add if current is None else current + add
            return imp.alias(node.output[0], x)
    if _into_norm(imp, x, name, kind if first or kind in ("add", "mul") else "", array):
        return imp.alias(node.output[0], x)
    if channels is not None and kind == "mul" and array.size > 1:
        ref = imp.emit(node, "affine_channels", [x], {"scale": channels,
                                                      "shift": np.zeros_like(channels)})
        return imp.alias(node.output[0], ref)
    if array.ndim > len(shape) or (array.ndim == len(shape) and array.shape[0] != 1):
        _fail("%s: a constant of shape %s spans the batch axis of a value of shape (N, %s)"
              % (imp.where(node), array.shape, ", ".join(map(str, shape[1:]))))
    ref = imp.emit(node, "binary", [x], {"other": array.reshape(array.shape or (1,))},
                   kind=kind, reverse=not first and kind in ("sub", "div"))
    imp.alias(node.output[0], ref)


def _into_norm(imp, ref, name, kind, array):
    """Fold ``x * c``, ``x + c`` or ``x - c`` into the layer_norm or group_norm
    computing ``x`` (its weight and bias) where ``c`` spans the shape of those alone
    (the normalised axes; the channels); whether it did."""
    op = imp.producer(ref, name, ("layer_norm", "group_norm"))
    if op is None or kind not in ("add", "sub", "mul"):
        return False
    shape = imp.shape(ref)
    if op.op == "group_norm":
        full = per_channel(array, shape)
        if full is None:
            return False
    else:
        tail = shape[len(shape) - op.fields["normalized_ndim"]:]
        try:
            if array.ndim > len(tail) or np.broadcast_shapes(array.shape, tail) != tail:
                return False
        except ValueError:
            return False
        full = np.broadcast_to(array, tail)
    full = full.astype(np.float64)
    weight, bias = op.weights.get("weight"), op.weights.get("bias")
    if kind == "mul":
        op.weights["weight"] = full if weight is None else weight * full
        if bias is not None:
            op.weights["bias"] = bias * full
    else:
        full = full if kind == "add" else -full
        op.weights["bias"] = full if bias is None else bias + full
    return True


def sum_node(imp, node):
    """Sum: of two inputs an Add; of more values, a chain of binary adds."""
    imp.attributes(node, set())
    if len(node.input) == 2:
        return binary(imp, node, "add")
    refs = [imp.value(node, name) for name in node.input]
    if not refs:
        _fail("%s: no inputs" % imp.where(node))
    ref = refs[0]
    for other in refs[1:]:
        if len(imp.shape(other)) != len(imp.shape(ref)):
            _fail("%s: values of different ranks" % imp.where(node))
        ref = imp.emit(node, "binary", [ref, other], kind="add", reverse=False)
    imp.alias(node.output[0], ref)


def _residual(imp, node, names, refs):
    """An Add of two values as a conv's residual input, where one is a conv's output
    that nothing else reads and the other does not depend on it."""
    if imp.shape(refs[0]) != imp.shape(refs[1]):
        return False
    for first in (0, 1):
        op = imp.producer(refs[first], names[first], ("conv2d",))
        other = refs[1 - first]
        if op is not None and len(op.inputs) == 1 and not depends(imp.pending, other,
                                                                  refs[first]):
            op.inputs.append(other)
            imp.alias(node.output[0], refs[first])
            return True
    return False


# ------------------------------------------------------------------ activations

def activation(imp, node, kind, slope=0.0, parameters=None):
    x = imp.value(node, node.input[0])
    if kind in ("relu", "leaky_relu") and parameters is None:
        op = imp.producer(x, node.input[0], ("conv2d", "linear"))
        if op is not None:
            op.fields["negative_slope"] = float(slope)
            return imp.alias(node.output[0], x)
    fields = {} if parameters is None else {"parameters": [float(p) for p in parameters]}
    ref = imp.emit(node, "activation", [x], kind=kind, negative_slope=float(slope), **fields)
    imp.alias(node.output[0], ref)


def _simple(kind, allowed=()):
    def convert(imp, node):
        imp.attributes(node, set(allowed))
        return activation(imp, node, kind)
    return convert


def leaky_relu(imp, node):
    return activation(imp, node, "leaky_relu", imp.attributes(node, {"alpha"}).get(
        "alpha", 0.01))


def elu(imp, node):
    attributes = imp.attributes(node, {"alpha", "gamma"})
    defaults = (1.0, 1.0) if node.op_type == "Elu" else (1.67326319217681884765625,
                                                         1.05070102214813232421875)
    alpha = attributes.get("alpha", defaults[0])
    activation(imp, node, "elu", parameters=[alpha, attributes.get("gamma", defaults[1])])


def softplus(imp, node):
    """Softplus, as the plan's with threshold 20 (above it the plan's is linear; they
    differ there by under exp(-20) of 1)."""
    imp.attributes(node, set())
    activation(imp, node, "softplus", parameters=[1.0, 20.0])


def gelu(imp, node):
    approximate = imp.attributes(node, {"approximate"}).get("approximate", "none")
    if approximate not in ("none", "tanh"):
        _fail("%s: approximate %r is not supported" % (imp.where(node), approximate))
    activation(imp, node, "gelu" if approximate == "none" else "gelu_tanh")


def clip(imp, node):
    """Clip to any bounds: relu (0, inf), relu6 (0, 6), identity (none), else hardtanh
    (an open side at the dtype's largest finite number)."""
    attributes = imp.attributes(node, {"min", "max"} if imp.opset < 11 else set())
    if imp.opset >= 11:
        bounds = [imp.constant(node, imp.input(node, i), True) for i in (1, 2)]
        if any(b is not None and np.size(b) != 1 for b in bounds):
            _fail("%s: Clip's bounds must be scalars" % imp.where(node))
        low, high = (None if b is None else float(np.asarray(b).reshape(-1)[0])
                     for b in bounds)
    else:
        low, high = attributes.get("min"), attributes.get("max")
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    if low == 0 and high == math.inf:
        return activation(imp, node, "relu")
    if low == 0 and high == 6:
        return activation(imp, node, "relu6")
    if low == -math.inf and high == math.inf:
        return imp.alias(node.output[0], imp.value(node, node.input[0]))
    largest = float(np.finfo(imp.dtype).max)
    low, high = max(low, -largest), min(high, largest)
    low = min(low, high)   # ONNX: min above max gives max everywhere
    activation(imp, node, "hardtanh", parameters=[low, high])


def hard_sigmoid(imp, node):
    """HardSigmoid: torch's constants (1/6, 1/2) as hardsigmoid, others as
    affine_channels (alpha x + beta) then hardtanh(0, 1)."""
    attributes = imp.attributes(node, {"alpha", "beta"})
    alpha, beta = attributes.get("alpha", 0.2), attributes.get("beta", 0.5)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return activation(imp, node, "hardsigmoid")
    x = imp.value(node, node.input[0])
    channels = imp.shape(x)[1]
    ref = imp.emit(node, "affine_channels", [x], {"scale": np.full(channels, alpha),
                                                  "shift": np.full(channels, beta)})
    ref = imp.emit(node, "activation", [ref], kind="hardtanh", negative_slope=0.0,
                   parameters=[0.0, 1.0])
    imp.alias(node.output[0], ref)


def prelu(imp, node):
    imp.attributes(node, set())
    x = imp.value(node, node.input[0])
    slope = np.asarray(imp.constant(node, node.input[1]))
    weight = per_channel(slope, imp.shape(x))
    if weight is None:
        _fail("%s: slope of shape %s is not one per channel" % (imp.where(node), slope.shape))
    if slope.size == 1:
        weight = slope.reshape(1)
    imp.alias(node.output[0], imp.emit(node, "prelu", [x], {"weight": weight}))


def softmax(imp, node):
    """Softmax / LogSoftmax: one axis from opset 13; before it, over the axes from
    ``axis`` on (a reshape around the plan's softmax of the last axis)."""
    attributes = imp.attributes(node, {"axis"})
    x = imp.value(node, node.input[0])
    shape = imp.shape(x)
    log = node.op_type == "LogSoftmax"
    axis = _axis(imp, node, attributes.get("axis", -1 if imp.opset >= 13 else 1), len(shape))
    if imp.opset >= 13 or axis == len(shape) - 1:
        return imp.alias(node.output[0], imp.emit(node, "softmax", [x], axis=axis, log=log))
    flat = reshape(imp, node, x, shape[1:axis] + (math.prod(shape[axis:]),))
    ref = imp.emit(node, "softmax", [flat], axis=axis, log=log)
    imp.alias(node.output[0], reshape(imp, node, ref, shape[1:]))


# ------------------------------------------------------------------ normalisations

def _optional_weights(imp, node, shape, scale, bias, what):
    """``{"weight", "bias"}`` of a norm broadcast to ``shape``; entries that are all
    ones / zeros left out."""
    weights = {}
    for role, array, neutral in (("weight", scale, 1.0), ("bias", bias, 0.0)):
        if array is None:
            continue
        try:
            full = np.broadcast_to(np.asarray(array), shape)
        except ValueError:
            _fail("%s: %s of shape %s does not fit %s" % (imp.where(node), role,
                                                          np.shape(array), what))
        if not np.all(full == neutral):
            imp.tensors.charge(full.nbytes, imp.where(node), role)
            weights[role] = np.ascontiguousarray(full)
    return weights


def instance_norm(imp, node):
    attributes = imp.attributes(node, {"epsilon"})
    x = imp.value(node, node.input[0])
    shape = imp.shape(x)
    scale, bias = (imp.constant(node, name) for name in node.input[1:3])
    weights = _optional_weights(imp, node, (shape[1],), scale, bias, "the channels")
    ref = imp.emit(node, "group_norm", [x], weights, groups=shape[1],
                   eps=float(attributes.get("epsilon", 1e-5)))
    imp.alias(node.output[0], ref)


def group_norm(imp, node):
    """GroupNormalization: per-group scale and bias at opsets 18-20, per-channel from
    21."""
    attributes = imp.attributes(node, {"epsilon", "num_groups", "stash_type"})
    x = imp.value(node, node.input[0])
    shape = imp.shape(x)
    groups = int(attributes.get("num_groups", 0))
    if groups < 1 or shape[1] % groups:
        _fail("%s: num_groups %d does not divide %d channels" % (imp.where(node), groups,
                                                                 shape[1]))
    scale, bias = (np.asarray(imp.constant(node, name)) for name in node.input[1:3])
    if imp.opset < 21 and scale.size == groups:
        scale, bias = (np.repeat(a.reshape(-1), shape[1] // groups) for a in (scale, bias))
    weights = _optional_weights(imp, node, (shape[1],), scale, bias, "the channels")
    ref = imp.emit(node, "group_norm", [x], weights, groups=groups,
                   eps=float(attributes.get("epsilon", 1e-5)))
    imp.alias(node.output[0], ref)


def layer_norm(imp, node):
    attributes = imp.attributes(node, {"axis", "epsilon", "stash_type"})
    x = imp.value(node, node.input[0])
    shape = imp.shape(x)
    axis = _axis(imp, node, attributes.get("axis", -1), len(shape))
    scale = imp.constant(node, imp.input(node, 1))
    bias = imp.constant(node, imp.input(node, 2), optional=True)
    weights = _optional_weights(imp, node, shape[axis:], scale, bias,
                                "the normalised axes %s" % (shape[axis:],))
    ref = imp.emit(node, "layer_norm", [x], weights, normalized_ndim=len(shape) - axis,
                   eps=float(attributes.get("epsilon", 1e-5)))
    imp.alias(node.output[0], ref)


CONVERTERS = {
    "Conv": conv, "ConvTranspose": conv, "Gemm": gemm, "MatMul": matmul,
    "BatchNormalization": batch_norm, "Add": binary, "Sub": binary, "Mul": binary,
    "Div": binary, "Sum": sum_node, "Relu": _simple("relu"), "Sigmoid": _simple("sigmoid"),
    "Tanh": _simple("tanh"), "HardSwish": _simple("hardswish"), "Mish": _simple("mish"),
    "LeakyRelu": leaky_relu, "Elu": elu, "Selu": elu, "Softplus": softplus, "Gelu": gelu,
    "Clip": clip, "HardSigmoid": hard_sigmoid, "PRelu": prelu, "Softmax": softmax,
    "LogSoftmax": softmax, "InstanceNormalization": instance_norm,
    "GroupNormalization": group_norm, "LayerNormalization": layer_norm,
}
def fused_layer_norm(imp, node):
    """``_onnx_patterns``' LayerNorm (a mean and variance over ``axes``, which must be
    the last ones)."""
    attributes = imp.attributes(node, {"axes", "epsilon"})
    x = imp.value(node, node.input[0])
    ndim = len(imp.shape(x))
    axes = sorted(_axis(imp, node, a, ndim) for a in attributes["axes"])
    if axes != list(range(ndim - len(axes), ndim)):
        _fail("%s: a normalisation over axes %s, not the last ones" % (imp.where(node),
                                                                       axes))
    ref = imp.emit(node, "layer_norm", [x], normalized_ndim=len(axes),
                   eps=float(attributes["epsilon"]))
    imp.alias(node.output[0], ref)


#: The fused nodes of ``_onnx_patterns``.
FUSED = {"Gelu": _simple("gelu"), "Silu": _simple("silu"),
         "HardSwish": _simple("hardswish"), "LayerNorm": fused_layer_norm}
