"""Lower a traced op graph (``fastdl.deploy.trace``) to the plan's ops, with its fusions.

The fusions match on the graph, never on module classes (as ``onnx_import``'s on an
ONNX graph):

* a ``batch_norm`` whose input is a conv2d / conv_transpose2d / linear output read by
  nothing else (and not yet given a residual or an activation) is folded into that
  layer's weights; any other is a per-channel ``affine_channels``;
* a relu / leaky_relu of such an output runs in the layer's epilogue;
* an ``add`` of two values becomes the residual input of the conv2d that computes one
  of them (read by nothing else, not yet given an activation), where the other does not
  depend on that conv; the activation after it then runs after the add, as a
  BasicBlock's does; any other sum, difference, product or quotient is a ``binary`` op;
* an ``expand`` read only by binary ops of its shape is left to their broadcasting;
* a reshape of a reshape read by nothing else is one reshape;
* the other nodes map one to one onto plan ops.

A value the forward returns counts as read once more, so no fusion takes it away. Anything
else raises a ValueError naming the op and the module that ran it. ``compile_traced``
traces the model twice (the example, and a batch of another size and other values) and
refuses a model whose traced ops differ between the two — its forward depends on its
input — and checks the plan against both forwards.
"""
import numpy as np

from fastdl.deploy._pending import INPUT, Pending, depends, plan_ops
from fastdl.deploy.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
from fastdl.deploy.plan import InferencePlan
from fastdl.deploy.trace import describe, trace

_SUPPORTED = ("conv2d, conv_transpose2d, batch_norm / instance_norm (eval), group_norm, "
              "layer_norm, linear, the activations (relu, leaky_relu, sigmoid, tanh, relu6, "
              "hardtanh, hardsigmoid, hardswish, silu, mish, gelu, elu, selu, softplus), "
              "prelu, softmax, max_pool2d, avg_pool2d, adaptive_avg_pool2d, a mean over "
              "(2, 3), pad, interpolate, views / reshapes / permutes keeping the batch axis, "
              "slicing, chunk / split, cat, expand, and + - * / of values, numbers and the "
              "model's parameters")
# node kinds that are one plan op each, with the node's attributes and weights
_DIRECT = ("conv_transpose2d", "prelu", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
           "flatten", "transpose", "slice", "concat", "resize", "softmax",
           "pad2d", "group_norm", "layer_norm")


def _fail(name, message):
    raise ValueError("deploy.compile: cannot compile %s by tracing its forward: %s"
                     % (name, message))


class _Lowering:
    def __init__(self, graph, name):
        self.graph, self.name = graph, name
        self.pending, self.values = [], {INPUT: INPUT}
        self.needed = self._needed()
        self.readers = {}       # value ref: the needed nodes reading it (an output: None)
        for index in sorted(self.needed):
            for ref in graph.nodes[index].inputs:
                self.readers.setdefault(ref, []).append(index)
        for ref in graph.outputs:
            self.readers.setdefault(ref, []).append(None)

    def _needed(self):
        """The nodes the outputs read."""
        needed, stack = set(), list(self.graph.outputs)
        while stack:
            ref = stack.pop()
            if ref == INPUT or ref in needed:
                continue
            needed.add(ref)
            stack.extend(self.graph.nodes[ref].inputs)
        return needed

    def fail(self, node, message):
        _fail(self.name, "%s in %s: %s" % (node.attributes.get("op", node.kind), node.where,
                                           message))

    def producer(self, node_ref, kinds):
        """The pending op computing graph value ``node_ref`` where it is one of ``kinds``,
        read by one node alone, with no epilogue yet; else None."""
        if node_ref == INPUT or len(self.readers.get(node_ref, ())) != 1:
            return None
        ref = self.values[node_ref]
        if ref == INPUT:
            return None
        op = self.pending[ref]
        if op.op not in kinds or op.fields.get("negative_slope") is not None:
            return None
        return op

    def emit(self, index, op, inputs, **fields):
        self.pending.append(Pending(self.graph.nodes[index], op,
                                     [self.values[i] for i in inputs], **fields))
        self.values[index] = len(self.pending) - 1
        return self.pending[-1]

    # ------------------------------------------------------------ the nodes
    def lower(self):
        """The pending ops of the graph; returns the pending refs of its outputs."""
        for index, node in enumerate(self.graph.nodes):
            if index in self.needed:
                kind = "direct" if node.kind in _DIRECT else node.kind
                getattr(self, "node_" + kind)(index, node)
        return [self.values[ref] for ref in self.graph.outputs]

    def node_unsupported(self, index, node):
        reason = node.attributes.get("reason")
        self.fail(node, "%sthe plan runs only %s" % (reason + "; " if reason else
                                                    "not an op a plan runs; ", _SUPPORTED))

    def _layer(self, index, node, op, **fields):
        pending = self.emit(index, op, node.inputs, **fields)
        pending.weights.update(node.arrays)
        pending.names.update(node.names)
        return pending

    def node_direct(self, index, node):
        self._layer(index, node, node.kind, **node.attributes)

    def node_reshape(self, index, node):
        """One reshape for a reshape of a reshape read by nothing else."""
        op = self.producer(node.inputs[0], ("reshape",))
        if op is not None:
            op.fields["shape"] = list(node.attributes["shape"])
            self.values[index] = self.values[node.inputs[0]]
            return
        self.node_direct(index, node)

    def node_conv2d(self, index, node):
        self._layer(index, node, "conv2d", negative_slope=None, **node.attributes)

    def node_linear(self, index, node):
        self._layer(index, node, "linear", negative_slope=None)

    def node_batch_norm(self, index, node):
        x = node.inputs[0]
        arrays, eps = node.arrays, node.attributes["eps"]
        mean, var = arrays["running_mean"], arrays["running_var"]
        gamma, beta = arrays.get("weight"), arrays.get("bias")
        op = self.producer(x, ("conv2d", "conv_transpose2d", "linear"))
        if op is not None and not (op.op == "conv2d" and len(op.inputs) > 1):
            weight, bias = op.weights["weight"], op.weights.get("bias")
            if op.op == "linear":
                weight, bias = fuse_linear_bn_weights(weight, bias, mean, var, eps, gamma,
                                                      beta)
            else:
                weight, bias = fuse_conv_bn_weights(
                    weight, bias, mean, var, eps, gamma, beta,
                    transposed=op.op == "conv_transpose2d", groups=op.fields["groups"])
            op.weights.update(weight=weight, bias=bias)
            op.names.setdefault("bias", op.names["weight"][:-len("weight")] + "bias")
            self.values[index] = self.values[x]
            return
        dtype = mean.dtype
        scale = (1.0 if gamma is None else gamma) / np.sqrt(var.astype(np.float64) + eps)
        shift = (0.0 if beta is None else beta) - mean * scale
        pending = self.emit(index, "affine_channels", [x])
        prefix = node.names["running_mean"][:-len("running_mean")]
        pending.weights.update(scale=np.asarray(scale, dtype), shift=np.asarray(shift, dtype))
        pending.names.update(scale=prefix + "scale", shift=prefix + "shift")

    def node_activation(self, index, node):
        kind, slope = node.attributes["kind"], node.attributes["negative_slope"]
        x = node.inputs[0]
        if kind in ("relu", "leaky_relu"):
            op = self.producer(x, ("conv2d", "linear"))
            if op is not None:
                op.fields["negative_slope"] = float(slope)
                self.values[index] = self.values[x]
                return
        self.emit(index, "activation", [x], **node.attributes)

    def node_binary(self, index, node):
        if len(node.inputs) == 2 and node.attributes["kind"] == "add" and \
                self._residual(index, node):
            return
        fields = {key: node.attributes[key] for key in ("kind", "reverse")}
        self._layer(index, node, "binary", **fields)

    def _shape(self, ref):
        """The shape of graph value ``ref`` after the batch axis."""
        return tuple(self.graph.input_shape) if ref == INPUT else self.graph.nodes[ref].shape

    def _residual(self, index, node):
        """Make the add of two values of one shape a residual input of the conv computing
        one of them (read by nothing else, without one yet, not read by the other value);
        whether it did."""
        refs = node.inputs
        if any(self._shape(ref) != node.shape for ref in refs):
            return False   # a broadcast
        for first in (0, 1):
            op = self.producer(refs[first], ("conv2d",))
            if op is None or len(op.inputs) != 1:
                continue
            other, conv = self.values[refs[1 - first]], self.values[refs[first]]
            if not depends(self.pending, other, conv):
                op.inputs.append(other)
                self.values[index] = conv
                return True
        return False

    def node_expand(self, index, node):
        """Left to the broadcasting of the binary ops reading it where each gives the
        expanded shape; else an add of zeros of that shape (exact)."""
        readers = self.readers.get(index, [])
        if all(reader is not None and self.graph.nodes[reader].kind == "binary" and
               len(self.graph.nodes[reader].inputs) == 2 and
               self.graph.nodes[reader].shape == node.shape for reader in readers):
            self.values[index] = self.values[node.inputs[0]]
            return
        dtype = self.graph.results[0].dtype
        pending = self.emit(index, "binary", node.inputs, kind="add", reverse=False)
        pending.weights["other"] = np.zeros((1,) + node.shape, dtype)


def lower_graph(graph, name="model"):
    """(ops, tensors, nodes, outputs) of ``graph``: plan ops over named weights, the graph
    node each op comes from, and the plan's ``outputs`` (value ids; None where the
    forward returns one Tensor: the last op's value); a ValueError naming the op and
    module it cannot lower."""
    lowering = _Lowering(graph, name)
    pending = lowering.pending
    refs = lowering.lower()
    if INPUT in refs:     # the forward returns its input: a plan op must write it
        pending.append(Pending(None, "activation", [INPUT], kind="identity",
                               negative_slope=0.0))
        refs = [len(pending) - 1 if ref == INPUT else ref for ref in refs]
    dtype = graph.results[0].dtype
    if not graph.several:
        ops, tensors, order = plan_ops(pending, refs[0], dtype)
        return ops, tensors, [pending[ref].node for ref in order], None
    # the ops every output reads, in one order: those of a sink reading them all, which
    # is then dropped (its inputs are the outputs' value ids)
    pending.append(Pending(None, "outputs", refs))
    ops, tensors, order = plan_ops(pending, len(pending) - 1, dtype)
    sink = ops.pop()
    order.pop()
    return ops, tensors, [pending[ref].node for ref in order], sink["inputs"]


def _second_example(example):
    """Another batch for the second trace: the samples reversed and one more, their mean,
    all negated: a forward branching on its input's batch size, or on the sign of a sum
    or mean of it, takes another branch on it."""
    mean = example.mean(axis=0, keepdims=True).astype(example.dtype)
    return np.ascontiguousarray(-np.concatenate([example[::-1], mean]))


def _divergence(first, second):
    """Where two traces' ops first differ: the op, the modules that ran it in each, and
    the innermost module running both (where the forward branched)."""
    def described(node):
        return "%s in %s" % (node.attributes.get("op", node.kind), node.where)
    for index, (mine, theirs) in enumerate(zip(first.nodes, second.nodes)):
        if mine.signature() != theirs.signature():
            shared = None
            for a, b in zip(mine.modules, theirs.modules):
                if a != b:
                    break
                shared = a
            return "at op %d, inside %s: %s, then %s" % (
                index, describe(shared), described(mine), described(theirs))
    common = min(len(first.nodes), len(second.nodes))
    if len(first.nodes) != len(second.nodes):
        longer = first if len(first.nodes) > common else second
        return "at op %d: %s runs in one only" % (common, described(longer.nodes[common]))
    return "in the values the forward returns"


def _check_results(name, plan, example, graph, which):
    got = plan(example)
    got = list(got) if graph.several else [got]
    for index, (mine, expected) in enumerate(zip(got, graph.results)):
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        tolerance = (1e-3 if expected.dtype == np.float32 else 1e-8) * max(scale, 1e-6)
        if mine.shape != expected.shape or not np.all(np.abs(mine - expected) <= tolerance):
            difference = (float(np.max(np.abs(mine - expected)))
                          if mine.shape == expected.shape
                          else "shape %s vs %s" % (mine.shape, expected.shape))
            _fail(name, "the plan's %s differs from the forward's on the %s (%s): the "
                  "forward computes something the traced ops do not show (it writes into a "
                  "tensor's array, or uses values made outside fastdl's ops)"
                  % ("output %d" % index if graph.several else "output", which, difference))


def compile_traced(model, example, max_shapes=4):
    """An ``InferencePlan`` of ``model`` from traces of its eval-mode forward on
    ``example`` (N, C, H, W) and on a second batch; see the module docstring. A forward
    returning a tuple or list of Tensors gives a plan with ``outputs`` (a call returns a
    tuple)."""
    name = "model %r (%s)" % ("model", type(model).__name__)
    example = np.ascontiguousarray(example)
    first = trace(model, example)
    second_input = _second_example(example)
    second = trace(model, second_input)
    ops, tensors, _, outputs = lower_graph(first, name)   # an op it cannot lower: named
    if first.signature() != second.signature():
        _fail(name, "its forward depends on its input: the ops it runs differ between a "
              "batch of %d and one of %d other values (Python control flow on the input's "
              "values or size), first %s; a plan runs one fixed sequence of ops"
              % (example.shape[0], second_input.shape[0], _divergence(first, second)))
    try:
        plan = InferencePlan(ops, tensors, example.shape[1:], max_shapes, outputs=outputs)
    except ValueError as error:
        _fail(name, str(error))
    plan.warmup()
    _check_results(name, plan, example, first, "example")
    _check_results(name, plan, second_input, second, "second trace's batch")
    return plan


__all__ = ["compile_traced", "lower_graph"]
