"""ONNX in: an ONNX model as an inference plan, for the CNN ops a plan runs.

``from_onnx(path_or_bytes)`` reads the file (``onnx`` package, no code run, no
external data outside the model's directory), maps its nodes onto plan ops and returns
a validated ``InferencePlan``. The plan's input is the graph's one float input
``(N, C, H, W)`` (fixed C, H, W; any batch); several graph outputs become the plan's
``outputs``. Opsets 9 on are read (the converters follow each op's semantics at the
model's opset where they changed: Softmax's axis at 13, GroupNormalization's scale at
21, inputs that were attributes).

==============================================  =========================================
ONNX                                            plan op
==============================================  =========================================
Conv (groups, dilations, any pads, auto_pad)    conv2d (asymmetric pads: pad2d first)
ConvTranspose (pads, output_shape, auto_pad)    conv_transpose2d (uneven pads: a slice)
BatchNormalization                              folded into the Conv / ConvTranspose /
                                                Gemm before it, else affine_channels
Gemm, MatMul by a constant                      linear (a value of more than 2 dims: a
                                                1x1 conv2d between reshapes/transposes)
Add, Sub, Mul, Div, Sum (values, constants,     binary; an Add of a constant onto a
  broadcasting)                                 conv's output as its bias, of a value as
                                                its residual; per-channel Mul:
                                                affine_channels
Relu, LeakyRelu, Clip (any bounds), Sigmoid,    activation (Relu, LeakyRelu: the conv2d
  Tanh, HardSwish, HardSigmoid, Elu, Selu,      or linear epilogue where they follow
  Softplus, Mish, Gelu, the Erf form of GELU,   one); HardSigmoid of other constants:
  x * Sigmoid(x) (SiLU)                         affine_channels + hardtanh(0, 1)
PRelu                                           prelu
Softmax, LogSoftmax                             softmax
MaxPool, AveragePool (any pads, ceil_mode,      max_pool2d, avg_pool2d (pads the pool
  count_include_pad, auto_pad)                  cannot take: pad2d first, and for an
                                                average a binary mul by the divisors)
GlobalAveragePool, GlobalMaxPool, ReduceMean    adaptive_avg_pool2d, max_pool2d
  over (H, W)
Flatten(axis=1), Reshape, Squeeze, Unsqueeze    flatten or reshape
Transpose, Concat, Split, Slice, Gather         transpose, concat, slice (+ reshape)
Pad (constant, reflect, edge, wrap)             pad2d (a nonzero constant: + binary add;
                                                negative pads: slice)
Resize (nearest, linear, cubic as torch's)      resize
InstanceNormalization, GroupNormalization,      group_norm, layer_norm
  LayerNormalization
Identity, Dropout, Constant                     (none)
Shape, Size, Gather, Concat, Slice, Cast, ...   folded at import (_onnx_fold)
  of constants
==============================================  =========================================

Any other op, domain or attribute value raises ValueError naming the node. A file is
as untrusted as a plan file: it may not be larger than ``max_bytes``, hold more than
``MAX_OPS`` nodes, declare a tensor whose data it does not hold, or whose size passes
``MAX_INT`` per dimension or ``max_bytes`` in all (with the constants folded at
import), and the plan is then validated with the plan's own limits
(``InferencePlan(..., max_bytes=max_bytes)``).
"""
import re

import numpy as np

from fastdl.deploy import _onnx_fold as fold
from fastdl.deploy import _onnx_layout, _onnx_ops
from fastdl.deploy._onnx_files import (_MAX_DIMS, _Tensors, _checked_graph, _fail,
                                       _input_signature, _load, _onnx)
from fastdl.deploy._onnx_patterns import DOMAIN, rewrite
from fastdl.deploy._onnx_resize import resize
from fastdl.deploy._opgraph import MAX_INT, infer
from fastdl.deploy._pending import INPUT, Pending, plan_ops
from fastdl.deploy.planfile import MAX_OPS, MAX_PLAN_BYTES
from fastdl.deploy.plan import InferencePlan

#: The oldest opset whose ops ``from_onnx`` reads (BatchNormalization without
#: ``spatial``, Clip's attributes before 11 and its inputs after are both read).
MIN_OPSET = 9

# (written by the pattern pass, op type): convert(importer, node)
_CONVERTERS = {(False, kind): convert for kind, convert in {
    **_onnx_ops.CONVERTERS, **_onnx_layout.CONVERTERS, "Resize": resize}.items()}
_CONVERTERS.update({(True, kind): convert for kind, convert in _onnx_ops.FUSED.items()})


class _Importer:
    """The state of one import: the pending plan ops, what each ONNX name is (a value,
    the pending op that computes it; or a constant) and every value's shape at
    batch 1."""

    def __init__(self, onnx, nodes, outputs, tensors, opset, dtype, input_shape, batch):
        self.onnx, self.tensors, self.opset, self.dtype = onnx, tensors, opset, dtype
        self.pending, self.values, self.constants = [], {}, {}
        self.shapes = {INPUT: (1,) + tuple(input_shape)}
        # the batch size the graph declares (None: not fixed); a shape computed for it
        # may hold it as a constant where the batch is meant
        self.batch = batch
        self.uses = {}
        for node in nodes:
            for name in node.input:
                if name:
                    self.uses[name] = self.uses.get(name, 0) + 1
        for name in outputs:
            self.uses[name] = self.uses.get(name, 0) + 1

    # ----------------------------------------------------------- reading nodes
    def where(self, node):
        if node is None:
            return "the graph"
        return "node %r (%s)" % (node.name or (node.output[0] if node.output else ""),
                                 node.op_type)

    def attributes(self, node, allowed):
        """The node's attributes as Python values; any not in ``allowed`` refused."""
        result = {}
        for attribute in node.attribute:
            if attribute.name not in allowed:
                _fail("%s: attribute %r is not supported" % (self.where(node), attribute.name))
            if attribute.type == self.onnx.AttributeProto.TENSOR:
                result[attribute.name] = self.tensors.read(attribute.t, self.where(node))
                continue
            value = self.onnx.helper.get_attribute_value(attribute)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif isinstance(value, list):
                if len(value) > _MAX_DIMS:
                    _fail("%s: attribute %r has %d values" % (self.where(node), attribute.name,
                                                             len(value)))
                value = list(value)
            elif not isinstance(value, (int, float)):
                _fail("%s: attribute %r must be a number, string, tensor or list"
                      % (self.where(node), attribute.name))
            result[attribute.name] = value
        return result

    def input(self, node, index):
        """The name of input ``index`` ('' where absent)."""
        return node.input[index] if index < len(node.input) else ""

    def is_value(self, name):
        return name in self.values

    def value(self, node, name):
        if name not in self.values:
            _fail("%s: input %r is not a value computed from the graph's input (a constant "
                  "there, or not defined before the node)" % (self.where(node), name))
        return self.values[name]

    def known(self, node, name):
        """The constant (ndarray or ``Batched``) called ``name``; None for ''."""
        if not name:
            return None
        if name not in self.constants:
            _fail("%s: input %r must be a constant (an initializer, a Constant or computed "
                  "from them and the input's shape)" % (self.where(node), name))
        return self.constants[name]

    def constant(self, node, name, optional=False):
        """The ndarray called ``name``, which may not depend on the batch size."""
        if not name:
            if optional:
                return None
            _fail("%s: a required input is missing" % self.where(node))
        array = self.known(node, name)
        if isinstance(array, fold.Batched):
            _fail("%s: input %r depends on the batch size" % (self.where(node), name))
        return array

    def shape(self, ref):
        """The shape of a value at batch 1."""
        return self.shapes[ref]

    # ----------------------------------------------------------- writing ops
    def emit(self, node, op, inputs, weights=None, **fields):
        """Append a pending op (its output shape inferred now, so a bad one is refused
        naming the node) and return its reference; ``alias`` names it."""
        if len(self.pending) >= MAX_OPS:
            _fail("more than MAX_OPS=%d plan ops" % MAX_OPS)
        pending = Pending(node, op, inputs, **fields)
        pending.weights.update(weights or {})
        shape = self._infer(node, pending)
        self.pending.append(pending)
        ref = len(self.pending) - 1
        self.shapes[ref] = shape
        return ref

    def _infer(self, node, pending):
        local = {ref: i for i, ref in enumerate(dict.fromkeys(pending.inputs))}
        shapes = {i: self.shapes[ref] for ref, i in local.items()}
        index = len(local)
        op = dict(op=pending.op, inputs=[local[ref] for ref in pending.inputs],
                  output=index + 1, **pending.fields)
        tensors = {}
        if pending.weights:
            op["weights"] = {role: role for role in pending.weights}
            tensors = {role: np.asarray(array) for role, array in pending.weights.items()}
        try:
            return infer(op, index, shapes, tensors)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            message = re.sub(r"^invalid inference plan: (op \d+:? ?)?", "", str(error))
            _fail("%s: the plan's %s op refuses it: %s" % (self.where(node), pending.op,
                                                          message))

    def alias(self, name, ref):
        self.values[name] = ref

    def producer(self, ref, name, kinds):
        """The pending op ``ref`` where it is one of ``kinds``, its output ``name`` read
        by this node alone, with no fused epilogue yet; else None."""
        if ref == INPUT or self.uses.get(name, 0) != 1:
            return None
        op = self.pending[ref]
        if op.op not in kinds or op.fields.get("negative_slope") is not None:
            return None
        return op

    # ----------------------------------------------------------- the nodes
    def node(self, node):
        kind = node.op_type
        if node.domain not in ("", "ai.onnx", DOMAIN):
            _fail("%s: domain %r is not supported" % (self.where(node), node.domain))
        if kind == "Constant" and node.domain != DOMAIN:
            return self.constant_node(node)
        if not node.output or not node.output[0]:
            _fail("%s: no output" % self.where(node))
        names = [name for name in node.input if name]
        if node.domain != DOMAIN and fold.foldable(kind) and names and (
                all(name in self.constants for name in names) or (
                kind in ("Shape", "Size") and names[0] in self.values)):
            self.fold(node)
        else:
            converter = _CONVERTERS.get((node.domain == DOMAIN, kind))
            if converter is None:
                _fail("%s: op %s is not supported" % (self.where(node), kind))
            converter(self, node)
        for name in node.output:
            if name and self.uses.get(name) and name not in self.values and (
                    name not in self.constants):
                _fail("%s: its output %r is not supported" % (self.where(node), name))

    def fold(self, node):
        where = self.where(node)
        attributes = self.attributes(node, fold.allowed_attributes(node.op_type))
        inputs = []
        for name in node.input:
            if name in self.values:   # Shape or Size of a value: of its shape alone
                rest = self.shape(self.values[name])[1:]
                inputs.append(fold.Batched([np.broadcast_to(np.zeros((), np.int8),
                                                            (batch,) + rest)
                                            for batch in fold.BATCHES]))
            else:
                inputs.append(self.known(node, name))
        left = None if self.tensors.limit is None else self.tensors.limit - self.tensors.total
        results = fold.fold(where, node.op_type, attributes, inputs, self.opset,
                            len(node.output), left)
        for name, result in zip(node.output, results):
            if name:
                arrays = result.arrays if isinstance(result, fold.Batched) else [result]
                self.tensors.charge(sum(a.nbytes for a in arrays), where, name)
                self.constants[name] = result

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


# ------------------------------------------------------------------------ the plan

def _scalars(onnx, graph, tensors):
    """``scalar(name)``: the float of a one-element initializer or Constant, else None
    (for the pattern pass, before the constants are read)."""
    protos = {proto.name: proto for proto in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.type == \
                        onnx.AttributeProto.TENSOR:
                    protos[node.output[0]] = attribute.t
                elif attribute.name == "value_float":
                    protos[node.output[0]] = float(attribute.f)

    def scalar(name):
        proto = protos.get(name)
        if isinstance(proto, float):
            return proto
        if proto is None or len(proto.dims) > _MAX_DIMS or any(d != 1 for d in proto.dims):
            return None
        try:
            return float(np.asarray(tensors.read(proto, "constant")).reshape(-1)[0])
        except (ValueError, IndexError):
            return None
    return scalar


def _ordered(pending, outputs, dtype):
    """(ops, tensors, order, plan outputs) of the pending ops ``outputs`` read; plan
    outputs None for a graph of one output."""
    if len(outputs) == 1:
        return plan_ops(pending, outputs[0], dtype) + (None,)
    # one sink reading every output orders them all; every op it needs comes first
    sink = Pending(None, "outputs", list(outputs))
    ops, tensors, order = plan_ops(pending + [sink], len(pending), dtype)
    ops.pop()
    order.pop()
    position = {ref: index + 1 for index, ref in enumerate(order)}
    return ops, tensors, order, [position[ref] for ref in outputs]


def from_onnx(source, max_bytes=MAX_PLAN_BYTES, warmup=False):
    """An ``InferencePlan`` of the ONNX model at ``source`` (a path, or the file's bytes).

    Parameters
    ----------
    source : str, os.PathLike or bytes
    max_bytes : int or None
        The most bytes the file, its tensors (external data and the constants folded
        at import included) and a call at batch 1 of the plan
        (``InferencePlan.call_bytes``) may take (default ``MAX_PLAN_BYTES``, 256 MiB);
        None: no limit, for a trusted model.
    warmup : bool
        Run the plan once at batch 1 before returning it.

    Returns
    -------
    InferencePlan
        Input ``(N, C, H, W)`` in the graph input's dtype (float32 or float64); one
        output, or ``outputs`` (a tuple from each call) for a graph of several.

    Raises
    ------
    ValueError
        Naming the node, for an op, attribute or pattern the plan cannot run; for a
        malformed or hostile file (sizes it does not hold or above the limits,
        external data outside the model's directory, names used before they are
        defined).
    """
    onnx = _onnx()
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(
            max_bytes, (int, np.integer)) or max_bytes < 1):
        raise TypeError("deploy.from_onnx: max_bytes must be a positive int or None, got %r"
                        % (max_bytes,))
    model, directory = _load(onnx, source, max_bytes)
    graph, opset = _checked_graph(model, MIN_OPSET)
    tensors = _Tensors(onnx, directory, max_bytes)
    initializers = {proto.name for proto in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    outputs = [value.name for value in graph.output]
    if len(inputs) != 1 or not outputs or len(outputs) > MAX_OPS:
        _fail("the plan takes one input and gives 1 to MAX_OPS outputs, the graph has %d "
              "inputs and %d outputs" % (len(inputs), len(outputs)))
    dtype, input_shape, batch = _input_signature(onnx, inputs[0])
    nodes = rewrite(list(graph.node), outputs, _scalars(onnx, graph, tensors), onnx.helper)
    importer = _Importer(onnx, nodes, outputs, tensors, opset, dtype, input_shape, batch)
    for proto in graph.initializer:
        importer.constants[proto.name] = tensors.read(proto, "initializer")
    importer.values[inputs[0].name] = INPUT
    for node in nodes:
        importer.node(node)
    refs = []
    for name in outputs:
        if name not in importer.values:
            _fail("output %r is not computed from the input" % name)
        ref = importer.values[name]
        if ref == INPUT:   # the input itself: a copy
            ref = importer.emit(None, "activation", [INPUT], kind="identity",
                                negative_slope=0.0)
        refs.append(ref)
    for op in importer.pending:
        for array in op.weights.values():
            if np.asarray(array).dtype.kind != "f":
                _fail("%s: weights must be floats" % importer.where(op.node))
    ops, weights, order, plan_outputs = _ordered(importer.pending, refs, dtype)
    nodes = [importer.pending[i].node for i in order]
    several = {} if plan_outputs is None else {"outputs": plan_outputs}
    try:
        plan = InferencePlan(ops, weights, input_shape, max_bytes=max_bytes, dtype=dtype,
                             **several)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError,
            ZeroDivisionError) as error:
        message = str(error)
        found = re.search(r"\bop (\d+)", message)
        if found and int(found.group(1)) < len(nodes) and nodes[int(found.group(1))]:
            message += " (from %s)" % importer.where(nodes[int(found.group(1))])
        _fail(message)
    return plan.warmup() if warmup else plan


__all__ = ["MIN_OPSET", "from_onnx"]
