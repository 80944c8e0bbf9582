"""Node patterns :mod:`fastdl.deploy.onnx_import` reads as one op: exporters write
some activations and norms as several elementwise nodes (torch's exact GELU as
``Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5``, SiLU as ``x * Sigmoid(x)``,
HardSwish as ``x * HardSigmoid(x)``, LayerNorm before opset 17 as ``ReduceMean ->
Sub -> Pow 2 -> ReduceMean -> Add eps -> Sqrt -> Div``). ``rewrite`` replaces each such
chain whose inner values nothing else reads by one node of the ``fastdl`` domain
(``Gelu``, ``Silu``, ``HardSwish``, ``LayerNorm`` with ``axes`` and ``epsilon``), which
only this pass may write.
"""
import math

from fastdl.deploy._onnx_files import _fail

#: The domain of the nodes ``rewrite`` writes.
DOMAIN = "fastdl"


class _Graph:
    """The nodes, who produces and reads each name, and the scalar constants."""

    def __init__(self, nodes, outputs, scalar):
        self.nodes, self.scalar = nodes, scalar
        self.producer, self.readers = {}, {}
        for node in nodes:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.readers.setdefault(name, []).append(node)
        for name in outputs:
            self.readers.setdefault(name, []).append(None)

    def only_reader(self, name):
        """The one node reading ``name`` (not a graph output), else None."""
        readers = self.readers.get(name, [])
        return readers[0] if len(readers) == 1 else None

    def made_by(self, name, kind):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == kind and node.domain in (
            "", "ai.onnx") else None

    def split(self, node, constant):
        """``(other input, scalar)`` of a binary node with a scalar constant input equal
        to ``constant`` (to float32 precision), else None."""
        if len(node.input) != 2:
            return None
        for index in (0, 1):
            value = self.scalar(node.input[index])
            if value is not None and math.isclose(value, constant, rel_tol=1e-6):
                return node.input[1 - index]
        return None


def _gelu_at(graph, erf):
    """The nodes of torch's exact GELU around ``erf``, and its input; else None."""
    scaled = erf.input[0]
    inner = graph.made_by(scaled, "Div")
    x = graph.split(inner, math.sqrt(2.0)) if inner is not None else None
    if inner is not None and x is not None and inner.input[0] != x:
        x = None                                    # sqrt2 / x is not x / sqrt2
    if x is None:
        inner = graph.made_by(scaled, "Mul")
        x = graph.split(inner, 1.0 / math.sqrt(2.0)) if inner is not None else None
    if x is None or graph.only_reader(scaled) is not erf:
        return None
    plus = graph.only_reader(erf.output[0])
    if plus is None or plus.op_type != "Add" or graph.split(plus, 1.0) != erf.output[0]:
        return None
    first = graph.only_reader(plus.output[0])
    if first is None or first.op_type != "Mul":
        return None
    # x * (1 + erf) * 0.5, 0.5 * x * (1 + erf) or x * ((1 + erf) * 0.5)
    if sorted(first.input) == sorted([x, plus.output[0]]):
        last = graph.only_reader(first.output[0])
        if last is not None and last.op_type == "Mul" and graph.split(
                last, 0.5) == first.output[0]:
            return [inner, erf, plus, first, last], x
    if graph.split(first, 0.5) == plus.output[0]:
        last = graph.only_reader(first.output[0])
        if last is not None and last.op_type == "Mul" and sorted(last.input) == sorted(
                [x, first.output[0]]):
            return [inner, erf, plus, first, last], x
    half = graph.made_by(_other(first, plus.output[0]), "Mul")
    if half is not None and graph.split(half, 0.5) == x and graph.only_reader(
            half.output[0]) is first:
        return [inner, erf, plus, half, first], x
    return None


def _other(node, name):
    inputs = list(node.input)
    if len(inputs) != 2 or name not in inputs:
        return ""
    return inputs[1] if inputs[0] == name else inputs[0]


def _gated_at(graph, gate):
    """``x * Sigmoid(x)`` or ``x * HardSigmoid(x)`` (torch's constants) at ``gate``."""
    x = gate.input[0] if gate.input else ""
    if gate.op_type == "HardSigmoid":
        attributes = {a.name: a for a in gate.attribute}
        alpha = attributes["alpha"].f if "alpha" in attributes else 0.2
        beta = attributes["beta"].f if "beta" in attributes else 0.5
        if set(attributes) - {"alpha", "beta"} or not (
                math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5):
            return None
    elif gate.attribute:
        return None
    product = graph.only_reader(gate.output[0])
    if product is None or product.op_type != "Mul" or sorted(product.input) != sorted(
            [x, gate.output[0]]):
        return None
    return [gate, product], x


def _reduce_axes(graph, node):
    """The axes of a ReduceMean keeping its dims (an attribute, or a one-element
    constant input), else None."""
    attributes = {a.name: a for a in node.attribute}
    if set(attributes) - {"axes", "keepdims"} or (
            "keepdims" in attributes and attributes["keepdims"].i != 1):
        return None
    if "axes" in attributes:
        return list(attributes["axes"].ints) if len(node.input) == 1 else None
    if len(node.input) == 2:
        axis = graph.scalar(node.input[1])
        return None if axis is None or axis != int(axis) else [int(axis)]
    return None


def _layer_norm_at(graph, mean):
    """The nodes of a LayerNorm's ReduceMean form from ``mean`` on, its input, axes and
    epsilon; else None."""
    axes = _reduce_axes(graph, mean)
    if axes is None or not mean.input:
        return None
    x = mean.input[0]
    centre = graph.only_reader(mean.output[0])
    if centre is None or centre.op_type != "Sub" or list(centre.input) != [x, mean.output[0]]:
        return None
    readers = graph.readers.get(centre.output[0], [])
    square = next((n for n in readers if n is not None and (
        (n.op_type == "Pow" and graph.split(n, 2.0) == centre.output[0]) or
        (n.op_type == "Mul" and list(n.input) == [centre.output[0]] * 2))), None)
    divide = next((n for n in readers if n is not None and n.op_type == "Div" and
                   n.input[0] == centre.output[0]), None)
    if square is None or divide is None or len(readers) != (2 if square.op_type == "Pow"
                                                            else 3):
        return None
    variance = graph.only_reader(square.output[0])
    if variance is None or variance.op_type != "ReduceMean" or variance.input[0] != \
            square.output[0] or _reduce_axes(graph, variance) != axes:
        return None
    plus = graph.only_reader(variance.output[0])
    eps = None
    if plus is not None and plus.op_type == "Add" and len(plus.input) == 2:
        other = _other(plus, variance.output[0])
        eps = graph.scalar(other)
    root = graph.only_reader(plus.output[0]) if eps is not None else None
    if root is None or root.op_type != "Sqrt" or graph.only_reader(root.output[0]) is not \
            divide or list(divide.input) != [centre.output[0], root.output[0]]:
        return None
    return [mean, centre, square, variance, plus, root, divide], x, axes, eps


def rewrite(nodes, outputs, scalar, helper):
    """``nodes`` with each pattern replaced by one ``fastdl``-domain node.

    Parameters
    ----------
    nodes : list of onnx.NodeProto
        In the graph's order.
    outputs : list of str
        The graph's outputs (read by the caller: never inside a pattern).
    scalar : callable
        ``scalar(name)``: the float of a one-element constant called ``name``, else None.
    helper : module
        ``onnx.helper``.
    """
    for node in nodes:
        if node.domain == DOMAIN:
            _fail("node %r: domain %r is not supported" % (node.name, node.domain))
    graph = _Graph(nodes, outputs, scalar)
    replaced, placed = {}, {}
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or id(node) in replaced:
            continue
        found, kind, attributes = None, None, {}
        if node.op_type == "ReduceMean":
            found = _layer_norm_at(graph, node)
            if found is not None:
                chain, x, axes, eps = found
                found, kind, attributes = (chain, x), "LayerNorm", dict(axes=axes,
                                                                        epsilon=eps)
        elif node.op_type == "Erf" and len(node.input) == 1:
            found, kind = _gelu_at(graph, node), "Gelu"
        elif node.op_type in ("Sigmoid", "HardSigmoid") and len(node.input) == 1:
            found = _gated_at(graph, node)
            kind = "Silu" if node.op_type == "Sigmoid" else "HardSwish"
        if found is None:
            continue
        chain, x = found
        if any(id(n) in replaced for n in chain):
            continue
        last = chain[-1]
        fused = helper.make_node(kind, [x], [last.output[0]], name=last.name or
                                 last.output[0], domain=DOMAIN, **attributes)
        for n in chain:
            replaced[id(n)] = fused
        placed[id(last)] = fused
    return [placed.get(id(node), node) for node in nodes if id(node) not in replaced
            or id(node) in placed]


__all__ = ["DOMAIN", "rewrite"]
