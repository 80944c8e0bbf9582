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
  BasicBlock's does;
* flatten, pools and the other activations map one to one.

Anything else raises a ValueError naming the op and the module that ran it.
``compile_traced`` traces the model twice (the example, and a batch of another size
and other values) and refuses a model whose traced ops differ between the two — its
forward depends on its input — and checks the plan against both forwards.
"""
import numpy as np

from fastdl.deploy._pending import INPUT, Pending, depends, plan_ops
from fastdl.deploy.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
from fastdl.deploy.plan import InferencePlan
from fastdl.deploy.trace import trace

_SUPPORTED = ("conv2d, conv_transpose2d, batch_norm (eval), linear, relu, leaky_relu, "
              "sigmoid, tanh, max_pool2d, avg_pool2d, adaptive_avg_pool2d, flatten / a view "
              "to (N, -1), and the sum of two values (a residual onto a convolution)")


def _fail(name, message):
    raise ValueError("deploy.compile: cannot compile %s by tracing its forward: %s"
                     % (name, message))


class _Lowering:
    def __init__(self, graph, name):
        self.graph, self.name = graph, name
        self.pending, self.values = [], {INPUT: INPUT}
        self.needed = self._needed()
        self.uses = {}
        for index in sorted(self.needed):
            for ref in graph.nodes[index].inputs:
                self.uses[ref] = self.uses.get(ref, 0) + 1
        self.uses[graph.output] = self.uses.get(graph.output, 0) + 1

    def _needed(self):
        """The nodes the output reads."""
        needed, stack = set(), [self.graph.output]
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
        if node_ref == INPUT or self.uses.get(node_ref, 0) != 1:
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
        for index, node in enumerate(self.graph.nodes):
            if index in self.needed:
                getattr(self, "node_" + node.kind)(index, node)
        return self.values[self.graph.output]

    def node_unsupported(self, index, node):
        reason = node.attributes.get("reason")
        self.fail(node, "%sthe plan runs only %s" % (reason + "; " if reason else
                                                    "not an op a plan runs; ", _SUPPORTED))

    def _layer(self, index, node, op, **fields):
        pending = self.emit(index, op, node.inputs, **fields)
        pending.weights.update(node.arrays)
        pending.names.update(node.names)

    def node_conv2d(self, index, node):
        self._layer(index, node, "conv2d", negative_slope=None, **node.attributes)

    def node_conv_transpose2d(self, index, node):
        self._layer(index, node, "conv_transpose2d", **node.attributes)

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
        self.emit(index, "activation", [x], kind=kind, negative_slope=float(slope))

    def node_max_pool2d(self, index, node):
        self.emit(index, "max_pool2d", node.inputs, **node.attributes)

    def node_avg_pool2d(self, index, node):
        self.emit(index, "avg_pool2d", node.inputs, **node.attributes)

    def node_adaptive_avg_pool2d(self, index, node):
        self.emit(index, "adaptive_avg_pool2d", node.inputs, **node.attributes)

    def node_flatten(self, index, node):
        self.emit(index, "flatten", node.inputs, **node.attributes)

    def node_add(self, index, node):
        refs = node.inputs
        for first in (0, 1):
            op = self.producer(refs[first], ("conv2d",))
            other = self.values[refs[1 - first]]
            conv = self.values[refs[first]] if op is not None else None
            if op is not None and len(op.inputs) == 1 and not depends(self.pending, other, conv):
                op.inputs.append(other)
                self.values[index] = conv
                return
        self.fail(node, "the plan adds two values only as a residual onto a convolution's "
                        "output that nothing else reads (before any activation of it)")


def lower_graph(graph, name="model"):
    """(ops, tensors, nodes) of ``graph``: plan ops over named weights, and the graph
    node each op comes from; a ValueError naming the op and module it cannot lower."""
    lowering = _Lowering(graph, name)
    output = lowering.lower()
    if output == INPUT:
        lowering.pending.append(Pending(None, "activation", [INPUT], kind="identity",
                                         negative_slope=0.0))
        output = len(lowering.pending) - 1
    dtype = graph.result.dtype
    ops, tensors, order = plan_ops(lowering.pending, output, dtype)
    return ops, tensors, [lowering.pending[ref].node for ref in order]


def _second_example(example):
    """Another batch for the second trace: the samples reversed and one more, their mean,
    all negated: a forward branching on its input's batch size, or on the sign of a sum
    or mean of it, takes another branch on it."""
    mean = example.mean(axis=0, keepdims=True).astype(example.dtype)
    return np.ascontiguousarray(-np.concatenate([example[::-1], mean]))


def _check_result(name, plan, example, expected, which):
    got = plan(example)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    tolerance = (1e-3 if expected.dtype == np.float32 else 1e-8) * max(scale, 1e-6)
    if got.shape != expected.shape or not np.all(np.abs(got - expected) <= tolerance):
        difference = (float(np.max(np.abs(got - expected))) if got.shape == expected.shape
                      else "shape %s vs %s" % (got.shape, expected.shape))
        _fail(name, "the plan's output differs from the forward's on the %s (%s): the "
              "forward computes something the traced ops do not show (it writes into a "
              "tensor's array, or uses values made outside fastdl's ops)"
              % (which, difference))


def compile_traced(model, example, max_shapes=4):
    """An ``InferencePlan`` of ``model`` from traces of its eval-mode forward on
    ``example`` (N, C, H, W) and on a second batch; see the module docstring."""
    name = "model %r (%s)" % ("model", type(model).__name__)
    example = np.ascontiguousarray(example)
    first = trace(model, example)
    second_input = _second_example(example)
    second = trace(model, second_input)
    if first.signature() != second.signature():
        _fail(name, "its forward depends on its input: the ops it runs differ between a "
              "batch of %d and one of %d other values (Python control flow on the input's "
              "values or size); a plan runs one fixed sequence of ops"
              % (example.shape[0], second_input.shape[0]))
    ops, tensors, nodes = lower_graph(first, name)
    try:
        plan = InferencePlan(ops, tensors, example.shape[1:], max_shapes)
    except ValueError as error:
        message = str(error)
        _fail(name, message)
    plan.warmup()
    _check_result(name, plan, example, first.result, "example")
    _check_result(name, plan, second_input, second.result, "second trace's batch")
    return plan


__all__ = ["compile_traced", "lower_graph"]
