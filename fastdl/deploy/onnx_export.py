"""ONNX out: write an inference plan's op graph as an ONNX model.

``export_onnx(model_or_plan, example, path, opset=17)`` takes what ``deploy.compile``
takes (or a compiled ``InferencePlan``) and writes one ONNX file, atomically. The
graph is built from the plan's ops (``_opgraph``), so every model ``compile`` accepts
exports, with BatchNorm already folded into the convolutions and dense layers:

=====================  ==================================================================
plan op                ONNX
=====================  ==================================================================
conv2d                 Conv (bias as its third input), then Add (residual), then
                       Relu / LeakyRelu (the fused epilogue)
conv_transpose2d       ConvTranspose (output_padding, groups, dilations)
linear                 Gemm (transB=1), then Relu / LeakyRelu
max_pool2d             MaxPool; ``ceil_mode`` as explicit end padding
avg_pool2d             AveragePool; ``count_include_pad`` with a partial last window
                       as Pad (zeros), then AveragePool(count_include_pad=0)
adaptive_avg_pool2d    GlobalAveragePool (1x1), AveragePool (bins of one size), else two
                       MatMuls with the bins' averaging matrices
flatten                Flatten (start_dim 1), else Reshape to ``[0, ..., 0, -1]``
affine_channels        Mul, Add (a BatchNorm2d not after a convolution)
activation             Relu, LeakyRelu, Sigmoid, Tanh, Identity, Clip (relu6, hardtanh),
                       HardSigmoid, HardSwish, Elu / Selu, Softplus (threshold >= 20),
                       x * Sigmoid (silu), x * Tanh(Softplus) (mish), Gelu or its erf
                       form (the tanh form: Gelu, opset 20 on)
prelu                  PRelu, the slope broadcast over (C, 1, 1)
pad2d                  Pad (constant, reflect, edge; wrap from opset 19)
binary, concat, slice,  see ``_onnx_export_graph`` (Add/Sub/Mul/Div, Concat, Slice,
reshape, transpose,     Reshape, Transpose, Resize, Softmax / LogSoftmax,
resize, softmax,        GroupNormalization or its InstanceNormalization form,
group_norm, layer_norm  LayerNormalization or its ReduceMean form)
=====================  ==================================================================

A plan of several ``outputs`` has a graph output per entry, ``output_0``,
``output_1``, ... (each an Identity of its value, so one value may be returned twice);
a plan of one output writes it as ``output``.

The batch dimension is dynamic (``"batch"``); the rest of the input's shape is the
plan's. Weights are initializers, in the plan's dtype. An op (or activation kind)
without an ONNX form at the requested opset raises ValueError naming it, before
anything is written. Needs the ``onnx`` package (``pip install fastdl[onnx]``).
"""
import math

import numpy as np

from fastdl._io import atomic_write_bytes
from fastdl.deploy._onnx_export_graph import WRITERS as _GRAPH_WRITERS
from fastdl.deploy.plan import InferencePlan
from fastdl.kernels import pool as pool_kernels

#: The opsets ``export_onnx`` writes (Gemm without a bias, Pad's and Clip's inputs:
#: opset 11 on).
MIN_OPSET = 11
DEFAULT_OPSET = 17
# protobuf refuses to serialise a message of 2 GiB or more
_MAX_PROTO_BYTES = (2 << 30) - 1


def _onnx():
    try:
        import onnx
    except ImportError:   # pragma: no cover - depends on the environment
        raise ImportError("deploy.export_onnx needs the onnx package: pip install "
                          "'fastdl[onnx]' (or pip install onnx)") from None
    return onnx


class _Graph:
    """The nodes and initializers written so far, for one plan."""

    def __init__(self, onnx, plan, opset):
        self.onnx, self.helper = onnx, onnx.helper
        self.plan, self.opset, self.dtype = plan, opset, plan.dtype
        self.nodes, self.initializers, self._names = [], [], set()
        self._counter = 0

    def fresh(self, stem):
        self._counter += 1
        return "%s_%d" % (stem, self._counter)

    def constant(self, stem, array):
        """An initializer of ``array`` (its own dtype) under a name not used yet."""
        name = stem
        while name in self._names:
            name = self.fresh(stem)
        self._names.add(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(
            np.ascontiguousarray(array), name))
        return name

    def weight(self, op, role, shape=None):
        array = self.plan.tensors[op["weights"][role]]
        return self.constant(op["weights"][role],
                             array if shape is None else array.reshape(shape))

    def node(self, kind, inputs, output, **attributes):
        self.nodes.append(self.helper.make_node(kind, list(inputs), [output],
                                                name=self.fresh(kind), **attributes))
        return output

    @staticmethod
    def refuse(index, op, reason):
        _refuse(index, op, reason)


def _refuse(index, op, reason):
    raise ValueError("deploy.export_onnx: op %d (%s) cannot be written as ONNX: %s"
                     % (index, op["op"] if op.get("op") != "activation" else
                        "activation %r" % op.get("kind"), reason))


# ----------------------------------------------------------------------- activations
# kind: (least opset, write(graph, op, x, out) -> out)

def _simple(kind):
    return lambda graph, op, x, out: graph.node(kind, [x], out)


def _clip(low=None, high=None):
    """Clip to ``low, high`` (None: the op's parameters, hardtanh's min and max)."""
    def write(graph, op, x, out):
        dtype = graph.dtype
        low_, high_ = (low, high) if low is not None else op["parameters"]
        return graph.node("Clip", [x, graph.constant("clip_min", np.array(low_, dtype)),
                                   graph.constant("clip_max", np.array(high_, dtype))], out)
    return write


def _elu(graph, op, x, out):
    """ELU (alpha, scale 1) or SELU's form (any scale)."""
    alpha, scale = (float(p) for p in op["parameters"])
    if scale == 1.0:
        return graph.node("Elu", [x], out, alpha=alpha)
    return graph.node("Selu", [x], out, alpha=alpha, gamma=scale)


def _softplus(graph, op, x, out):
    """Softplus(beta x) / beta: the plan's linear part above the threshold differs from
    it by under exp(-threshold), nothing in float32 from a threshold of 20."""
    beta, threshold = (float(p) for p in op["parameters"])
    if threshold < 20:
        raise ValueError("deploy.export_onnx: activation 'softplus' with threshold %g has "
                         "no ONNX form (Softplus has no threshold)" % threshold)
    if beta == 1.0:
        return graph.node("Softplus", [x], out)
    dtype = graph.dtype
    scaled = graph.node("Mul", [x, graph.constant("beta", np.array(beta, dtype))],
                        graph.fresh("softplus"))
    value = graph.node("Softplus", [scaled], graph.fresh("softplus"))
    return graph.node("Div", [value, graph.constant("beta", np.array(beta, dtype))], out)


def _times(inner):
    """``x * inner(x)`` (SiLU as x * sigmoid(x), Mish as x * tanh(softplus(x)))."""
    def write(graph, op, x, out):
        value = x
        for kind in inner:
            value = graph.node(kind, [value], graph.fresh(kind.lower()))
        return graph.node("Mul", [x, value], out)
    return write


def _gelu(graph, op, x, out):
    """0.5 * x * (1 + erf(x / sqrt(2))), the exact GELU (ONNX's Gelu op is opset 20)."""
    if graph.opset >= 20:
        return graph.node("Gelu", [x], out)
    dtype = graph.dtype
    scaled = graph.node("Div", [x, graph.constant("sqrt2", np.array(math.sqrt(2.0), dtype))],
                        graph.fresh("gelu"))
    erf = graph.node("Erf", [scaled], graph.fresh("gelu"))
    one = graph.node("Add", [erf, graph.constant("one", np.array(1.0, dtype))],
                     graph.fresh("gelu"))
    half = graph.node("Mul", [x, graph.constant("half", np.array(0.5, dtype))],
                      graph.fresh("gelu"))
    return graph.node("Mul", [half, one], out)


_ACTIVATIONS = {
    "identity": (1, _simple("Identity")),
    "relu": (1, _simple("Relu")),
    "leaky_relu": (1, lambda graph, op, x, out: graph.node(
        "LeakyRelu", [x], out, alpha=float(op["negative_slope"]))),
    "sigmoid": (1, _simple("Sigmoid")),
    "tanh": (1, _simple("Tanh")),
    "relu6": (11, _clip(0.0, 6.0)),
    "hardtanh": (11, _clip()),
    "elu": (6, _elu),
    "softplus": (1, _softplus),
    "gelu_tanh": (20, lambda graph, op, x, out: graph.node("Gelu", [x], out,
                                                            approximate="tanh")),
    "hardswish": (14, _simple("HardSwish")),
    "hardsigmoid": (6, lambda graph, op, x, out: graph.node(
        "HardSigmoid", [x], out, alpha=1.0 / 6.0, beta=0.5)),
    "silu": (6, _times(["Sigmoid"])),
    "swish": (6, _times(["Sigmoid"])),
    "mish": (6, _times(["Softplus", "Tanh"])),
    "gelu": (9, _gelu),
    "softsign": (1, _simple("Softsign")),
    "selu": (6, _simple("Selu")),
}


def _epilogue(graph, slope, x, out):
    """The fused activation of a conv or dense layer: none, ReLU (0) or LeakyReLU."""
    if slope is None:
        return graph.node("Identity", [x], out) if x != out else out
    if slope == 0:
        return graph.node("Relu", [x], out)
    return graph.node("LeakyRelu", [x], out, alpha=float(slope))


# ------------------------------------------------------------------------ the ops

def _conv(graph, index, op, names, out):
    weight = graph.plan.tensors[op["weights"]["weight"]]
    inputs = [names[op["inputs"][0]], graph.weight(op, "weight")]
    if "bias" in op["weights"]:
        inputs.append(graph.weight(op, "bias"))
    rows, cols = op["padding"]
    attributes = dict(kernel_shape=list(weight.shape[2:]), strides=list(op["stride"]),
                      pads=[rows, cols, rows, cols], dilations=list(op["dilation"]),
                      group=int(op["groups"]))
    if op["op"] == "conv_transpose2d":
        return graph.node("ConvTranspose", inputs, out,
                          output_padding=list(op["output_padding"]), **attributes)
    residual = op["inputs"][1] if len(op["inputs"]) > 1 else None
    slope = op.get("negative_slope")
    value = graph.node("Conv", inputs, out if residual is None and slope is None
                       else graph.fresh("conv"), **attributes)
    if residual is not None:
        value = graph.node("Add", [value, names[residual]],
                           out if slope is None else graph.fresh("residual"))
    return _epilogue(graph, slope, value, out)


def _linear(graph, index, op, names, out):
    inputs = [names[op["inputs"][0]], graph.weight(op, "weight")]
    if "bias" in op["weights"]:
        inputs.append(graph.weight(op, "bias"))
    slope = op.get("negative_slope")
    value = graph.node("Gemm", inputs, out if slope is None else graph.fresh("gemm"),
                       transB=1)
    return _epilogue(graph, slope, value, out)


def _pool(graph, index, op, names, out):
    kind, source = op["op"], op["inputs"][0]
    shape = graph.plan.shapes[source]
    kernel, stride, padding, output_hw = pool_kernels.validate_pool2d_args(
        kind, shape, op["kernel_size"], op["stride"], op["padding"], op["ceil_mode"])
    # ceil mode as extra padding at the end: ONNX then computes the plan's output size
    # with floor division, and the extra cells are ignored (max) or not counted (average)
    extra = [max(0, (output_hw[a] - 1) * stride[a] + kernel[a] - shape[2 + a]
                 - 2 * padding[a]) for a in (0, 1)]
    for a in (0, 1):
        size = (shape[2 + a] + 2 * padding[a] + extra[a] - kernel[a]) // stride[a] + 1
        if size != output_hw[a]:
            _refuse(index, op, "its output size %s has no ONNX padding" % (output_hw,))
    x = names[source]
    pads = [padding[0], padding[1], padding[0] + extra[0], padding[1] + extra[1]]
    attributes = dict(kernel_shape=list(kernel), strides=list(stride))
    if kind == "max_pool2d":
        return graph.node("MaxPool", [x], out, pads=pads, **attributes)
    include = bool(op["count_include_pad"])
    if include and any(extra) and any(padding):
        # the divisor counts the zero padding but not the cells past it: pad with zeros
        # explicitly, then count only the padded input's cells
        x = graph.node("Pad", [x, graph.constant("pads", np.array(
            [0, 0, padding[0], padding[1], 0, 0, padding[0], padding[1]], np.int64))],
            graph.fresh("padded"), mode="constant")
        pads, include = [0, 0, extra[0], extra[1]], False
    elif any(extra):
        include = False   # without zero padding, only the cells past the input are extra
    return graph.node("AveragePool", [x], out, pads=pads,
                      count_include_pad=int(include), **attributes)


def _adaptive_matrix(size, out_size, dtype):
    """The (out_size, size) matrix of torch's adaptive average bins along one axis."""
    matrix = np.zeros((out_size, size), np.float64)
    for o in range(out_size):
        start, stop = o * size // out_size, -(-((o + 1) * size) // out_size)
        matrix[o, start:stop] = 1.0 / (stop - start)
    return matrix.astype(dtype)


def _adaptive_pool(graph, index, op, names, out):
    _, _, height, width = graph.plan.shapes[op["inputs"][0]]
    rows, cols = op["output_size"]
    x = names[op["inputs"][0]]
    if (rows, cols) == (1, 1):
        return graph.node("GlobalAveragePool", [x], out)
    if height % rows == 0 and width % cols == 0:
        kernel = [height // rows, width // cols]
        return graph.node("AveragePool", [x], out, kernel_shape=kernel, strides=kernel)
    # bins of different sizes: (rows, H) @ x @ (W, cols)
    left = graph.constant("adaptive_rows", _adaptive_matrix(height, rows, graph.dtype))
    right = graph.constant("adaptive_cols", _adaptive_matrix(width, cols, graph.dtype).T)
    value = graph.node("MatMul", [left, x], graph.fresh("adaptive"))
    return graph.node("MatMul", [value, right], out)


def _flatten(graph, index, op, names, out):
    x, start = names[op["inputs"][0]], op["start_dim"]
    if start == 1:
        return graph.node("Flatten", [x], out, axis=1)
    return graph.node("Reshape", [x, graph.constant("shape", np.array(
        [0] * start + [-1], np.int64))], out)


def _affine(graph, index, op, names, out):
    rank = len(graph.plan.shapes[op["inputs"][0]])
    shape = (-1,) + (1,) * (rank - 2)
    scaled = graph.node("Mul", [names[op["inputs"][0]], graph.weight(op, "scale", shape)],
                        graph.fresh("scaled"))
    return graph.node("Add", [scaled, graph.weight(op, "shift", shape)], out)


def _activation(graph, index, op, names, out):
    entry = _ACTIVATIONS.get(op.get("kind"))
    if entry is None:
        _refuse(index, op, "no ONNX form is known for it")
    least, write = entry
    if graph.opset < least:
        _refuse(index, op, "it needs opset %d or later, the export asks for opset %d"
                % (least, graph.opset))
    return write(graph, op, names[op["inputs"][0]], out)


def _prelu(graph, index, op, names, out):
    rank = len(graph.plan.shapes[op["inputs"][0]])
    weight = graph.plan.tensors[op["weights"]["weight"]]
    shape = (weight.size,) + (1,) * (rank - 2) if weight.size > 1 else (1,)
    return graph.node("PRelu", [names[op["inputs"][0]], graph.weight(op, "weight", shape)],
                      out)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
              "circular": "wrap"}


def _pad(graph, index, op, names, out):
    if op["mode"] == "circular" and graph.opset < 19:
        _refuse(index, op, "circular padding (Pad's wrap) needs opset 19 or later, the "
                "export asks for opset %d" % graph.opset)
    top, bottom, left, right = op["padding"]
    pads = graph.constant("pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
    return graph.node("Pad", [names[op["inputs"][0]], pads], out,
                      mode=_PAD_MODES[op["mode"]])


_WRITERS = {"conv2d": _conv, "conv_transpose2d": _conv, "linear": _linear,
            "max_pool2d": _pool, "avg_pool2d": _pool,
            "adaptive_avg_pool2d": _adaptive_pool, "flatten": _flatten,
            "affine_channels": _affine, "activation": _activation, "prelu": _prelu,
            "pad2d": _pad, **_GRAPH_WRITERS}


# ------------------------------------------------------------------------ the model

def _check_opset(onnx, opset):
    latest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not (
            MIN_OPSET <= opset <= latest):
        raise ValueError("deploy.export_onnx: opset must be an int in [%d, %d] (the "
                         "installed onnx package's latest), got %r" % (MIN_OPSET, latest,
                                                                       opset))
    return int(opset)


def to_onnx(plan, opset=DEFAULT_OPSET):
    """The ``onnx.ModelProto`` of ``plan`` (checked by ``onnx.checker``); see
    ``export_onnx``."""
    onnx = _onnx()
    opset = _check_opset(onnx, opset)
    if plan.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError("deploy.export_onnx: plan dtype %s has no ONNX form" % plan.dtype)
    elem = onnx.helper.np_dtype_to_tensor_dtype(plan.dtype)
    graph = _Graph(onnx, plan, opset)
    last = len(plan.ops)
    several = getattr(plan, "outputs", None)
    names = {0: "input"}
    for index, op in enumerate(plan.ops):
        writer = _WRITERS.get(op.get("op"))
        if writer is None:
            _refuse(index, op, "no ONNX form is known for it")
        out = "output" if index + 1 == last and several is None else "v%d" % (index + 1)
        names[index + 1] = writer(graph, index, op, names, out)
    helper = onnx.helper
    inputs = [helper.make_tensor_value_info("input", elem, ["batch"] + list(plan.input_shape))]
    returned = [("output", last)] if several is None else [
        ("output_%d" % i, value) for i, value in enumerate(several)]
    for name, value in returned:
        if several is not None:
            graph.node("Identity", [names[value]], name)
    outputs = [helper.make_tensor_value_info(name, elem, ["batch"] + list(
        plan.shapes[value][1:])) for name, value in returned]
    model = helper.make_model(
        helper.make_graph(graph.nodes, "fastdl_plan", inputs, outputs, graph.initializers),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="fastdl")
    model.ir_version = max(7, helper.find_min_ir_version_for(list(model.opset_import)))
    if model.ByteSize() > _MAX_PROTO_BYTES:
        raise ValueError("deploy.export_onnx: the model takes %d bytes, more than the 2 GiB "
                         "one ONNX file without external data may hold" % model.ByteSize())
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(model_or_plan, example, path, opset=DEFAULT_OPSET):
    """Write ``model_or_plan`` as an ONNX model to ``path``, atomically.

    Parameters
    ----------
    model_or_plan : nn.Module or InferencePlan
        A module is compiled first (``deploy.compile(model, example)``): whatever
        ``compile`` accepts exports.
    example : ndarray or Tensor (N, C, H, W), or None for a plan
        Fixes (C, H, W) and the dtype; the batch dimension of the ONNX model is
        dynamic. For a plan, its shape must be the plan's input shape.
    path : str or os.PathLike
    opset : int
        The ONNX opset to write (``MIN_OPSET`` up to the installed onnx's latest).

    Returns
    -------
    onnx.ModelProto
        The model written, checked by ``onnx.checker.check_model``.

    Raises
    ------
    ValueError
        A module ``compile`` refuses, an op or activation without an ONNX form at this
        opset (named), or an opset out of range; nothing is written then.
    """
    if isinstance(model_or_plan, InferencePlan):
        plan = model_or_plan
        if example is not None:
            shape = np.shape(getattr(example, "array", example))
            if tuple(shape[1:]) != plan.input_shape or len(shape) != 4:
                raise ValueError("deploy.export_onnx: example has shape %s, the plan takes "
                                 "(N, %d, %d, %d)" % ((tuple(shape),) + plan.input_shape))
    else:
        from fastdl.deploy import compile as compile_plan
        if example is None:
            raise ValueError("deploy.export_onnx: a module needs an example input")
        plan = compile_plan(model_or_plan, example)
    model = to_onnx(plan, opset)
    atomic_write_bytes(path, model.SerializeToString())
    return model


__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "export_onnx", "to_onnx"]
