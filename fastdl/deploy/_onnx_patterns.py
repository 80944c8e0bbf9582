"""Node patterns :mod:`fastdl.deploy.onnx_import` reads as one activation: exporters
write some activations as several elementwise nodes (torch's exact GELU as
``Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5``, SiLU as ``x * Sigmoid(x)``,
HardSwish as ``x * HardSigmoid(x)``). ``rewrite`` replaces each such chain whose
inner values nothing else reads by one node of the ``fastdl`` domain (``Gelu``,
``Silu``, ``HardSwish``), which only this pass may write.
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
        found, kind = None, None
        if node.op_type == "Erf" and len(node.input) == 1:
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
                                 last.output[0], domain=DOMAIN)
        for n in chain:
            replaced[id(n)] = fused
        placed[id(last)] = fused
    return [placed.get(id(node), node) for node in nodes if id(node) not in replaced
            or id(node) in placed]


__all__ = ["DOMAIN", "rewrite"]
