"""Plan ops being built from a graph (a trace or an ONNX file): the pending-op record,
the dependency test the residual fusion asks, and the ordering and naming that turn
the ops an output reads into a plan's op list and tensors."""
import numpy as np

INPUT = -1   # the graph input's reference (pending ops are 0, 1, ...)


class Pending:
    """A plan op being built: ``inputs`` refer to pending ops (or ``INPUT``)."""

    def __init__(self, node, op, inputs, **fields):
        self.node, self.op, self.inputs = node, op, list(inputs)
        self.fields = fields                # the plan op's attributes
        self.weights, self.names = {}, {}   # role: ndarray; role: the name it comes from


def depends(pending, ref, target):
    """Whether pending op ``ref`` reads (maybe indirectly) pending op ``target``."""
    stack, seen = [ref], set()
    while stack:
        current = stack.pop()
        if current == target:
            return True
        if current == INPUT or current in seen:
            continue
        seen.add(current)
        stack.extend(pending[current].inputs)
    return False


def order(pending, output):
    """The pending ops the output reads, in a topological order that keeps the graph's
    where it can (a residual may move a conv after its shortcut)."""
    needed, stack = set(), [output]
    while stack:
        ref = stack.pop()
        if ref == INPUT or ref in needed:
            continue
        needed.add(ref)
        stack.extend(pending[ref].inputs)
    order, done, remaining = [], set(), sorted(needed)
    while remaining:
        ref = next((r for r in remaining if all(i == INPUT or i in done
                                                for i in pending[r].inputs)), None)
        if ref is None:   # fusions never make a cycle (the residual checks); never silent
            raise ValueError("deploy: the lowered graph has a cycle")
        order.append(ref)
        done.add(ref)
        remaining.remove(ref)
    return order


def plan_ops(pending, output, dtype):
    """(ops, tensors, order) of the pending ops the output reads; tensors named after the
    parameters they come from."""
    ordered = order(pending, output)
    ids = {INPUT: 0}
    ops, tensors = [], {}
    for index, ref in enumerate(ordered):
        op = pending[ref]
        ids[ref] = index + 1
        entry = dict(op=op.op, inputs=[ids[i] for i in op.inputs], output=index + 1,
                     **op.fields)
        if op.weights:
            entry["weights"] = {}
            for role, array in sorted(op.weights.items()):
                if array is None:
                    continue
                name = op.names.get(role) or "%d.%s" % (index, role)
                if name in tensors:
                    name = "%s@%d" % (name, index)
                tensors[name] = np.ascontiguousarray(array, dtype=dtype)
                entry["weights"][role] = name
        ops.append(entry)
    return ops, tensors, ordered
