"""The tape walk of :meth:`Tensor.backward`: order the recorded nodes, run each node's
backward once with the summed gradient of its outputs, accumulate into the leaves.

Gradients that a node's backward returns as new arrays (``Function.new_grads``) are
owned by the walk: a second gradient reaching the same output is added into one of
them in place, and a leaf's first gradient is taken over without a copy.
"""
import numpy as np

from fastdl.autograd import Tensor

__all__ = ["run_backward", "input_version"]


def input_version(node, tensor):
    """The version of ``tensor`` that ``node`` read: an in-place op made since then left
    a snapshot of the earlier value, stamped with the in-place node's number."""
    for stamp, old in tensor._versions:
        if node.seq < stamp:
            return old
    return tensor


_SECOND_BACKWARD = ("Trying to backward through the graph a second time; pass "
                    "retain_graph=True the first time")


def _topological_order(root_ctx):
    """Nodes reachable from ``root_ctx``, each after every node that consumes it."""
    order = []
    visited = {id(root_ctx)}
    stack = [(root_ctx, iter(root_ctx.inputs))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if not isinstance(child, Tensor):
                continue
            if child._versions is not None:
                child = input_version(node, child)
            if child._ctx is not None and id(child._ctx) not in visited:
                if child._ctx.function is None:
                    raise RuntimeError(_SECOND_BACKWARD)
                visited.add(id(child._ctx))
                stack.append((child._ctx, iter(child._ctx.inputs)))
                break
        else:
            stack.pop()
            order.append(node)
    order.reverse()
    return order


def _distinct(arrays):
    """Whether no array (None aside) occurs twice in ``arrays``."""
    present = [id(array) for array in arrays if array is not None]
    return len(set(present)) == len(present)


def run_backward(root, grad, retain_graph):
    """Run every recorded node's backward once, in reverse topological order from
    ``root`` (seeded with ``grad``), accumulating into the leaves' ``.grad``; free the
    tape unless ``retain_graph``."""
    if root._ctx.function is None:
        raise RuntimeError(_SECOND_BACKWARD)
    # per node still to run: its outputs' gradients, and which of them autograd owns (new
    # arrays nothing else holds, so that a second gradient of that output is added into one
    # of them in place); the caller's ``grad`` is never owned
    pending = {id(root._ctx): [None] * root._ctx.num_outputs}
    pending[id(root._ctx)][root._out_index] = grad
    owned = {id(root._ctx): [False] * root._ctx.num_outputs}
    for node in _topological_order(root._ctx):
        output_grads = pending.pop(id(node), None)
        if output_grads is None:
            continue
        owned.pop(id(node), None)
        if node.num_outputs == 1:
            grad_outputs = output_grads[0]
        else:
            grad_outputs = tuple(output_grads)
        input_grads = node.function.backward(node, grad_outputs)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        new = node.function.new_grads and _distinct(input_grads)
        for tensor_input, needs, input_grad in zip(node.inputs, node.needs_input_grad,
                                                    input_grads):
            if not needs or input_grad is None:
                continue
            fresh = new and isinstance(input_grad, np.ndarray) and input_grad.flags.writeable
            if tensor_input._versions is not None:
                tensor_input = input_version(node, tensor_input)
            if input_grad.shape != tensor_input._data.shape:
                # compiled backward kernels trust their grad_out's shape (as torch's
                # validate_outputs, this catches a custom Function's bad gradient)
                raise RuntimeError("%s.backward returned a gradient of shape %s for an input "
                                   "of shape %s" % (node.function.__name__, input_grad.shape,
                                                    tensor_input._data.shape))
            parent = tensor_input._ctx
            if parent is None:
                tensor_input._accumulate_grad(input_grad, fresh)
                continue
            slots = pending.get(id(parent))
            if slots is None:
                slots = pending[id(parent)] = [None] * parent.num_outputs
                owned[id(parent)] = [False] * parent.num_outputs
            mine = owned[id(parent)]
            index = tensor_input._out_index
            earlier = slots[index]
            if earlier is None:
                slots[index], mine[index] = input_grad, fresh
            elif mine[index] and earlier.dtype == input_grad.dtype:
                earlier += input_grad
            elif fresh and earlier.dtype == input_grad.dtype:
                input_grad += earlier   # IEEE addition commutes: the same bits as earlier + g
                slots[index] = input_grad
                mine[index] = True
            else:
                total = earlier + input_grad
                slots[index], mine[index] = total, isinstance(total, np.ndarray)
        if not retain_graph:
            node.function = None
            node.inputs = ()
            node.saved_tensors = ()
