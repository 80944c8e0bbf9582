"""ONNX in: an ONNX model as an inference plan, for the ONNX ops the plan's ops run.

``from_onnx(path_or_bytes)`` reads the file (``onnx`` package, no code run, no
external data outside the model's directory), maps its nodes onto plan ops and returns
a validated ``InferencePlan``:

=======================================  ============================================
ONNX                                     plan op
=======================================  ============================================
Conv (groups, dilations, symmetric pads)  conv2d
ConvTranspose (symmetric pads)           conv_transpose2d
BatchNormalization                       folded into the Conv / ConvTranspose / Gemm
                                         before it, else affine_channels
Gemm, MatMul (+ Add of a constant)       linear (the Add as its bias)
Relu, LeakyRelu, Clip(0, inf)            the epilogue of the conv2d / linear before
                                         them, else activation
Sigmoid, Tanh                            activation
MaxPool, AveragePool (end padding of     max_pool2d, avg_pool2d (ceil_mode)
  less than a stride: ceil mode)
GlobalAveragePool                        adaptive_avg_pool2d (1, 1)
Add of two values                        a conv2d's residual input
Mul, Add of per-channel constants        affine_channels
Flatten(axis=1), Reshape to [0.., -1]    flatten
Identity, Dropout, Constant              (none)
=======================================  ============================================

Any other op, domain or attribute value raises ValueError naming the node. A file is
as untrusted as a plan file: it may not be larger than ``max_bytes``, hold more than
``MAX_OPS`` nodes, declare a tensor whose data it does not hold, or whose size passes
``MAX_INT`` per dimension or ``max_bytes`` in all, and the plan is then validated with
the plan's own limits (``InferencePlan(..., max_bytes=max_bytes)``).
"""
import math
import re

import numpy as np

from fastdl.deploy._onnx_files import (_MAX_DIMS, _Tensors, _checked_graph, _fail,
                                       _input_signature, _load, _onnx)
from fastdl.deploy._opgraph import ACTIVATIONS, MAX_INT
from fastdl.deploy._pending import INPUT, Pending, depends, plan_ops
from fastdl.deploy.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
from fastdl.deploy.planfile import MAX_OPS, MAX_PLAN_BYTES
from fastdl.deploy.plan import InferencePlan

#: The oldest opset whose ops ``from_onnx`` reads (BatchNormalization without
#: ``spatial``, Clip's attributes before 11 and its inputs after are both read).
MIN_OPSET = 9


class _Importer:
    def __init__(self, onnx, graph, tensors, opset):
        self.onnx, self.graph, self.tensors, self.opset = onnx, graph, tensors, opset
        self.pending, self.values, self.constants = [], {}, {}
        self.uses = {}
        for node in graph.node:
            for name in node.input:
                if name:
                    self.uses[name] = self.uses.get(name, 0) + 1
        for output in graph.output:
            self.uses[output.name] = self.uses.get(output.name, 0) + 1

    # ----------------------------------------------------------- helpers
    def where(self, node):
        return "node %r (%s)" % (node.name or (node.output[0] if node.output else ""),
                                 node.op_type)

    def attributes(self, node, allowed):
        """The node's attributes as Python values; any not in ``allowed`` refused."""
        result = {}
        for attribute in node.attribute:
            if attribute.name not in allowed:
                _fail("%s: attribute %r is not supported" % (self.where(node), attribute.name))
            value = self.onnx.helper.get_attribute_value(attribute)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif isinstance(value, list):
                if len(value) > _MAX_DIMS:
                    _fail("%s: attribute %r has %d values" % (self.where(node), attribute.name,
                                                             len(value)))
                value = list(value)
            elif not isinstance(value, (int, float)):
                _fail("%s: attribute %r must be a number, string or list"
                      % (self.where(node), attribute.name))
            result[attribute.name] = value
        return result

    def value(self, node, name):
        if name not in self.values:
            _fail("%s: input %r is not a value computed from the graph's input (a constant "
                  "there, or not defined before the node)" % (self.where(node), name))
        return self.values[name]

    def constant(self, node, name, optional=False):
        if not name:
            if optional:
                return None
            _fail("%s: a required input is missing" % self.where(node))
        if name not in self.constants:
            _fail("%s: input %r must be a constant (an initializer)" % (self.where(node),
                                                                          name))
        return self.constants[name]

    def producer(self, ref, name, kinds):
        """The pending op ``ref`` where it is one of ``kinds``, its output ``name`` read
        by this node alone, with no fused epilogue yet; else None."""
        if ref == INPUT or self.uses.get(name, 0) != 1:
            return None
        op = self.pending[ref]
        if op.op not in kinds or op.fields.get("negative_slope") is not None:
            return None
        return op

    def emit(self, node, op, inputs, **fields):
        if len(self.pending) >= MAX_OPS:
            _fail("more than MAX_OPS=%d plan ops" % MAX_OPS)
        self.pending.append(Pending(node, op, inputs, **fields))
        self.values[node.output[0]] = len(self.pending) - 1
        return self.pending[-1]

    def alias(self, node, ref):
        self.values[node.output[0]] = ref

    def single_output(self, node):
        extra = [name for name in node.output[1:] if name and self.uses.get(name)]
        if len(node.output) < 1 or extra:
            _fail("%s: only its first output may be used, %s are" % (self.where(node), extra))

    # ----------------------------------------------------------- conv and dense
    def window(self, node, attributes, kernel, allow_ceil=False):
        """(stride, padding, dilation, extra end padding) of a conv or pool."""
        where = self.where(node)
        if attributes.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            _fail("%s: auto_pad %r is not supported (give explicit pads)"
                  % (where, attributes["auto_pad"]))
        if "kernel_shape" in attributes and list(attributes["kernel_shape"]) != list(kernel):
            _fail("%s: kernel_shape %s differs from the weight's %s"
                  % (where, attributes["kernel_shape"], list(kernel)))
        stride = list(attributes.get("strides", [1, 1]))
        dilation = list(attributes.get("dilations", [1, 1]))
        pads = list(attributes.get("pads", [0, 0, 0, 0]))
        if len(stride) != 2 or len(dilation) != 2 or len(pads) != 4:
            _fail("%s: only 2-D strides, dilations and pads are supported" % where)
        extra = [pads[2] - pads[0], pads[3] - pads[1]]
        if extra != [0, 0] and not (allow_ceil and all(0 <= e < s for e, s in zip(extra,
                                                                               stride))):
            _fail("%s: pads %s are not symmetric" % (where, pads))
        return stride, pads[:2], dilation, extra

    def conv(self, node):
        transposed = node.op_type == "ConvTranspose"
        allowed = {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}
        attributes = self.attributes(node, allowed | ({"output_padding"} if transposed
                                                      else set()))
        x = self.value(node, node.input[0])
        weight = self.constant(node, node.input[1])
        bias = self.constant(node, node.input[2] if len(node.input) > 2 else "", True)
        if weight.ndim != 4:
            _fail("%s: only 2-D convolutions are supported (weight shape %s)"
                  % (self.where(node), weight.shape))
        stride, padding, dilation, _ = self.window(node, attributes, weight.shape[2:])
        fields = dict(stride=stride, padding=padding, dilation=dilation,
                      groups=int(attributes.get("group", 1)))
        if transposed:
            op = self.emit(node, "conv_transpose2d", [x], **fields,
                           output_padding=list(attributes.get("output_padding", [0, 0])))
        else:
            op = self.emit(node, "conv2d", [x], negative_slope=None, **fields)
        op.weights["weight"] = weight
        if bias is not None:
            op.weights["bias"] = bias

    def linear(self, node, weight, bias):
        op = self.emit(node, "linear", [self.value(node, node.input[0])], negative_slope=None)
        op.weights["weight"] = np.ascontiguousarray(weight)
        if bias is not None:
            op.weights["bias"] = bias

    def gemm(self, node):
        attributes = self.attributes(node, {"alpha", "beta", "transA", "transB"})
        if attributes.get("transA", 0):
            _fail("%s: transA=1 is not supported" % self.where(node))
        weight = self.constant(node, node.input[1])
        if weight.ndim != 2:
            _fail("%s: B must be 2-D, got shape %s" % (self.where(node), weight.shape))
        weight = (weight if attributes.get("transB", 0) else weight.T) * attributes.get(
            "alpha", 1.0)
        bias = self.constant(node, node.input[2] if len(node.input) > 2 else "", True)
        if bias is not None:
            bias = self.broadcast(node, bias, weight.shape[0], 2) * attributes.get("beta", 1.0)
        self.linear(node, weight.astype(self.constant(node, node.input[1]).dtype), bias)

    def matmul(self, node):
        weight = self.constant(node, node.input[1])
        if weight.ndim != 2:
            _fail("%s: only a value times a 2-D constant is supported" % self.where(node))
        self.linear(node, weight.T, None)

    def rank(self, ref):
        """The rank of a value: 4 for the input and the image ops, 2 after a linear
        layer, ``start_dim + 1`` after a flatten."""
        while ref != INPUT:
            op = self.pending[ref]
            if op.op == "linear":
                return 2
            if op.op == "flatten":
                return op.fields["start_dim"] + 1
            ref = op.inputs[0]
        return 4

    def broadcast(self, node, array, channels, rank):
        """A constant that broadcasts onto a value of ``rank`` dims along its channels
        (axis 1) alone — ``(C,)`` for 2-D values, ``(C, 1, 1)`` for images, or one
        number — as a ``(C,)`` array (``channels`` None: C is the constant's); else a
        ValueError."""
        if array.ndim > rank:
            _fail("%s: constant of shape %s has more dims than the value's %d"
                  % (self.where(node), array.shape, rank))
        shape = (1,) * (rank - array.ndim) + array.shape
        if channels is None:
            channels = shape[1]
        if any(n != 1 for i, n in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
            _fail("%s: constant of shape %s is not one per channel (%d) of a %d-D value"
                  % (self.where(node), array.shape, channels, rank))
        return np.broadcast_to(array.reshape(-1), (channels,)).copy()

    def batch_norm(self, node):
        attributes = self.attributes(node, {"epsilon", "momentum", "spatial",
                                            "training_mode"})
        if attributes.get("training_mode", 0) or attributes.get("spatial", 1) != 1:
            _fail("%s: only inference mode (training_mode=0, spatial=1) is supported"
                  % self.where(node))
        self.single_output(node)
        x = self.value(node, node.input[0])
        gamma, beta, mean, var = (self.constant(node, name) for name in node.input[1:5])
        eps = float(attributes.get("epsilon", 1e-5))
        op = self.producer(x, node.input[0], ("conv2d", "conv_transpose2d", "linear"))
        if op is not None and not (op.op == "conv2d" and len(op.inputs) > 1):
            weight, bias = op.weights["weight"], op.weights.get("bias")
            if op.op == "linear":
                weight, bias = fuse_linear_bn_weights(weight, bias, mean, var, eps, gamma, beta)
            else:
                weight, bias = fuse_conv_bn_weights(
                    weight, bias, mean, var, eps, gamma, beta,
                    transposed=op.op == "conv_transpose2d", groups=op.fields["groups"])
            op.weights.update(weight=weight, bias=bias)
            self.alias(node, x)
            return
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        op = self.emit(node, "affine_channels", [x])
        op.weights.update(scale=scale.astype(gamma.dtype),
                          shift=(beta - mean * scale).astype(gamma.dtype))

    # ----------------------------------------------------------- elementwise
    def add(self, node):
        self.attributes(node, set())
        names = list(node.input)
        if len(names) != 2:
            _fail("%s: needs two inputs" % self.where(node))
        known = [name in self.values for name in names]
        if all(known):
            return self.residual(node, names)
        if not any(known):
            _fail("%s: adds two constants" % self.where(node))
        name = names[0] if known[0] else names[1]
        array = self.constant(node, names[1] if known[0] else names[0])
        x = self.value(node, name)
        op = self.producer(x, name, ("conv2d", "conv_transpose2d", "linear",
                                     "affine_channels"))
        if op is None or (op.op == "conv2d" and len(op.inputs) > 1):
            _fail("%s: a constant is added only onto a Conv, Gemm, MatMul or per-channel "
                  "Mul output (as its bias)" % self.where(node))
        role = "shift" if op.op == "affine_channels" else "bias"
        if op.op == "linear":
            channels = op.weights["weight"].shape[0]
        elif op.op == "conv2d":
            channels = op.weights["weight"].shape[0]
        elif op.op == "conv_transpose2d":
            channels = op.weights["weight"].shape[1] * op.fields["groups"]
        else:
            channels = op.weights["scale"].shape[0]
        add = self.broadcast(node, array, channels, self.rank(x))
        current = op.weights.get(role)
        op.weights[role] = add if current is None else current + add
        self.alias(node, x)

    def residual(self, node, names):
        refs = [self.values[name] for name in names]
        for first in (0, 1):
            op = self.producer(refs[first], names[first], ("conv2d",))
            other = refs[1 - first]
            if op is not None and len(op.inputs) == 1 and not depends(self.pending, other,
                                                                             refs[first]):
                op.inputs.append(other)
                self.alias(node, refs[first])
                return
        _fail("%s: the plan adds two values only as a residual onto a Conv's output (read "
              "by nothing else)" % self.where(node))

    def mul(self, node):
        self.attributes(node, set())
        names = list(node.input)
        known = [name in self.values for name in names]
        if len(names) != 2 or known.count(True) != 1:
            _fail("%s: only a value times a per-channel constant is supported"
                  % self.where(node))
        name = names[0] if known[0] else names[1]
        array = self.constant(node, names[1] if known[0] else names[0])
        x = self.value(node, name)
        scale = self.broadcast(node, array, None, self.rank(x))
        op = self.emit(node, "affine_channels", [x])
        op.weights.update(scale=scale, shift=np.zeros_like(scale))

    def activation(self, node, kind, slope=0.0):
        x = self.value(node, node.input[0])
        if kind in ("relu", "leaky_relu"):
            op = self.producer(x, node.input[0], ("conv2d", "linear"))
            if op is not None:
                op.fields["negative_slope"] = float(slope)
                self.alias(node, x)
                return
        if kind not in ACTIVATIONS:
            _fail("%s: the plan has no %s activation" % (self.where(node), kind))
        self.emit(node, "activation", [x], kind=kind, negative_slope=float(slope))

    def clip(self, node):
        attributes = self.attributes(node, {"min", "max"} if self.opset < 11 else set())
        low, high = attributes.get("min"), attributes.get("max")
        if self.opset >= 11:
            bounds = [self.constant(node, name, True) for name in list(node.input[1:3])]
            bounds += [None] * (2 - len(bounds))
            if any(b is not None and np.size(b) != 1 for b in bounds):
                _fail("%s: Clip's bounds must be scalars" % self.where(node))
            low, high = (None if b is None else float(np.asarray(b).reshape(-1)[0])
                         for b in bounds)
        high = math.inf if high is None else high
        if low == 0 and high == math.inf:
            return self.activation(node, "relu")
        if low == 0 and high == 6:
            return self.activation(node, "relu6")
        _fail("%s: only Clip(0) and Clip(0, 6) are supported, got Clip(%s, %s)"
              % (self.where(node), low, high))

    # ----------------------------------------------------------- pools and shapes
    def pool(self, node):
        kind = "max_pool2d" if node.op_type == "MaxPool" else "avg_pool2d"
        allowed = {"auto_pad", "ceil_mode", "kernel_shape", "pads", "strides", "dilations"}
        allowed |= {"storage_order"} if kind == "max_pool2d" else {"count_include_pad"}
        attributes = self.attributes(node, allowed)
        self.single_output(node)
        kernel = list(attributes.get("kernel_shape", []))
        if len(kernel) != 2:
            _fail("%s: only 2-D pooling is supported" % self.where(node))
        stride, padding, dilation, extra = self.window(node, attributes, kernel, True)
        if dilation != [1, 1] or attributes.get("storage_order", 0):
            _fail("%s: dilations and storage_order are not supported" % self.where(node))
        ceil_mode = bool(attributes.get("ceil_mode", 0))
        include = bool(attributes.get("count_include_pad", 0))
        if any(extra) and (ceil_mode or (include and any(padding))):
            _fail("%s: pads %s: uneven padding with ceil_mode or count_include_pad is not "
                  "supported" % (self.where(node), attributes.get("pads")))
        x = self.value(node, node.input[0])
        fields = dict(kernel_size=kernel, stride=stride, padding=padding,
                      ceil_mode=ceil_mode or any(extra))
        if kind == "avg_pool2d":
            fields["count_include_pad"] = include and not any(extra)
        op = self.emit(node, kind, [x], **fields)
        op.check = (kernel, stride, padding, extra, ceil_mode)

    def flatten(self, node):
        attributes = self.attributes(node, {"axis"})
        if attributes.get("axis", 1) != 1:
            _fail("%s: only Flatten(axis=1) is supported" % self.where(node))
        self.emit(node, "flatten", [self.value(node, node.input[0])], start_dim=1)

    def reshape(self, node):
        attributes = self.attributes(node, {"allowzero"})
        shape = [int(v) for v in self.constant(node, node.input[1]).reshape(-1)]
        start = len(shape) - 1
        if attributes.get("allowzero", 0) or start < 1 or shape[-1] != -1 or any(
                v != 0 for v in shape[1:-1]) or shape[0] not in (0, -1):
            _fail("%s: only a reshape to [0 or -1, 0, ..., -1] (a flatten) is supported, got "
                  "%s" % (self.where(node), shape))
        self.emit(node, "flatten", [self.value(node, node.input[0])], start_dim=start)

    def constant_node(self, node):
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if set(attributes) - {"value", "value_float", "value_floats", "value_int",
                              "value_ints"} or len(attributes) != 1:
            _fail("%s: only value, value_float(s) and value_int(s) are supported"
                  % self.where(node))
        (name, attribute), = attributes.items()
        if name == "value":
            array = self.tensors.read(attribute.t, self.where(node))
        else:
            value = self.onnx.helper.get_attribute_value(attribute)
            if isinstance(value, list) and len(value) > MAX_INT:
                _fail("%s: constant too large" % self.where(node))
            array = np.asarray(value, np.float32 if "float" in name else np.int64)
        self.constants[node.output[0]] = array

    def dropout(self, node):
        self.attributes(node, {"ratio", "seed", "is_test"})
        self.single_output(node)
        if len(node.input) > 2 and node.input[2]:
            if bool(np.any(self.constant(node, node.input[2]))):
                _fail("%s: training_mode must be false" % self.where(node))
        self.alias(node, self.value(node, node.input[0]))

    def node(self, node):
        kind = node.op_type
        if node.domain not in ("", "ai.onnx"):
            _fail("%s: domain %r is not supported" % (self.where(node), node.domain))
        if kind == "Constant":
            return self.constant_node(node)
        if not node.output or not node.input:
            _fail("%s: no input or output" % self.where(node))
        if kind not in ("BatchNormalization", "Dropout", "MaxPool"):
            if len([name for name in node.output if name]) != 1:
                _fail("%s: one output expected" % self.where(node))
        simple = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
        if kind in simple:
            self.attributes(node, set())
            return self.activation(node, simple[kind])
        if kind == "LeakyRelu":
            slope = self.attributes(node, {"alpha"}).get("alpha", 0.01)
            return self.activation(node, "leaky_relu", slope)
        if kind == "Identity":
            return self.alias(node, self.value(node, node.input[0]))
        if kind == "GlobalAveragePool":
            self.attributes(node, set())
            self.emit(node, "adaptive_avg_pool2d", [self.value(node, node.input[0])],
                      output_size=[1, 1])
            return None
        handlers = {"Conv": self.conv, "ConvTranspose": self.conv, "Gemm": self.gemm,
                    "MatMul": self.matmul, "BatchNormalization": self.batch_norm,
                    "Add": self.add, "Mul": self.mul, "Clip": self.clip,
                    "MaxPool": self.pool, "AveragePool": self.pool, "Flatten": self.flatten,
                    "Reshape": self.reshape, "Dropout": self.dropout}
        if kind not in handlers:
            _fail("%s: op %s is not supported" % (self.where(node), kind))
        return handlers[kind](node)


# ------------------------------------------------------------------------ the plan

def from_onnx(source, max_bytes=MAX_PLAN_BYTES, warmup=False):
    """An ``InferencePlan`` of the ONNX model at ``source`` (a path, or the file's bytes).

    Parameters
    ----------
    source : str, os.PathLike or bytes
    max_bytes : int or None
        The most bytes the file, its tensors (external data included) and a call at
        batch 1 of the plan (``InferencePlan.call_bytes``) may take (default
        ``MAX_PLAN_BYTES``, 256 MiB); None: no limit, for a trusted model.
    warmup : bool
        Run the plan once at batch 1 before returning it.

    Raises
    ------
    ValueError
        Naming the node, for an op, attribute or pattern the plan cannot run; for a
        malformed or hostile file (sizes it does not hold or above the limits,
        external data outside the model's directory).
    """
    onnx = _onnx()
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(
            max_bytes, (int, np.integer)) or max_bytes < 1):
        raise TypeError("deploy.from_onnx: max_bytes must be a positive int or None, got %r"
                        % (max_bytes,))
    model, directory = _load(onnx, source, max_bytes)
    graph, opset = _checked_graph(model, MIN_OPSET)
    tensors = _Tensors(onnx, directory, max_bytes)
    importer = _Importer(onnx, graph, tensors, opset)
    for proto in graph.initializer:
        importer.constants[proto.name] = tensors.read(proto, "initializer")
    inputs = [value for value in graph.input if value.name not in importer.constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        _fail("the plan takes one input and gives one output, the graph has %d and %d"
              % (len(inputs), len(graph.output)))
    dtype, input_shape = _input_signature(onnx, inputs[0])
    importer.values[inputs[0].name] = INPUT
    for node in graph.node:
        importer.node(node)
    output = graph.output[0].name
    if output not in importer.values:
        _fail("output %r is not computed from the input" % output)
    ref = importer.values[output]
    if ref == INPUT:
        importer.pending.append(Pending(None, "activation", [INPUT], kind="identity",
                                         negative_slope=0.0))
        ref = len(importer.pending) - 1
    for op in importer.pending:
        for array in op.weights.values():
            if array.dtype.kind != "f":
                _fail("%s: weights must be floats" % importer.where(op.node))
    ops, weights, order = plan_ops(importer.pending, ref, dtype)
    nodes = [importer.pending[i].node for i in order]
    try:
        plan = InferencePlan(ops, weights, input_shape, max_bytes=max_bytes)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError,
            ZeroDivisionError) as error:
        message = str(error)
        found = re.search(r"\bop (\d+)", message)
        if found and int(found.group(1)) < len(nodes) and nodes[int(found.group(1))]:
            message += " (from %s)" % importer.where(nodes[int(found.group(1))])
        _fail(message)
    _check_pools(plan, {index: importer.pending[ref].check for index, ref in enumerate(order)
                        if hasattr(importer.pending[ref], "check")}, nodes)
    return plan.warmup() if warmup else plan


def _check_pools(plan, pending, order_nodes):
    """Refuse pools whose ONNX output size differs from the plan's (ONNX's ceil mode, or
    uneven end padding read as ceil mode, against torch's, which drops a last window
    starting in the padding)."""
    for index, (op, node) in enumerate(zip(plan.ops, order_nodes)):
        check = pending.get(index)
        if check is None:
            continue
        kernel, stride, padding, extra, ceil_mode = check
        height, width = plan.shapes[op["inputs"][0]][2:]
        size = []
        for a, n in enumerate((height, width)):
            span = n + 2 * padding[a] + extra[a] - kernel[a]
            size.append((-(-span // stride[a]) if ceil_mode else span // stride[a]) + 1)
        if tuple(size) != tuple(plan.shapes[index + 1][2:]):
            _fail("node %r (%s): its output size %s differs from the plan's %s (a last "
                  "window starting in the padding)" % (node.name, node.op_type, tuple(size),
                                                       tuple(plan.shapes[index + 1][2:])))


__all__ = ["MIN_OPSET", "from_onnx"]
