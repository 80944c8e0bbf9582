"""A small define-by-run autograd: ``Tensor``, ``Function`` and the tape walk.

An op is a :class:`Function` subclass with static ``forward(ctx, *arrays)`` and
``backward(ctx, grad_output)`` that work on ndarrays (calling kernels).
``Function.apply`` unwraps Tensors, runs ``forward``, and — only when some
input requires a gradient and recording is on — links the output to ``ctx``.
``Tensor.backward`` orders the recorded nodes once (iterative DFS, so deep
graphs do not hit Python's recursion limit), calls each node's ``backward``
exactly once with the summed gradient of its outputs, accumulates into the
leaves' ``.grad``, and frees the tape.

The per-op Python cost is kept small on purpose (slots, no dict per node, one
thread-local flag read), because small networks at batch 1 are dominated by it.
"""
import threading

import numpy as np

__all__ = ["Tensor", "Function", "Context", "tensor", "no_grad", "enable_grad",
           "is_grad_enabled", "cat", "stack"]


class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled():
    """Whether operations are currently recorded for backward (per thread)."""
    return _grad_mode.enabled


class no_grad:
    """Context manager (and decorator) that turns gradient recording off in this thread."""

    def __enter__(self):
        self._previous = _grad_mode.enabled
        _grad_mode.enabled = False
        return self

    def __exit__(self, *exc_info):
        _grad_mode.enabled = self._previous
        return False

    def __call__(self, function):
        def wrapper(*args, **kwargs):
            with type(self)():
                return function(*args, **kwargs)
        wrapper.__name__ = getattr(function, "__name__", "wrapper")
        wrapper.__doc__ = getattr(function, "__doc__", None)
        return wrapper


class enable_grad(no_grad):
    """Context manager that turns gradient recording back on inside ``no_grad``."""

    def __enter__(self):
        self._previous = _grad_mode.enabled
        _grad_mode.enabled = True
        return self


class Context:
    """What a node keeps for its backward: saved arrays, flags and hyper-parameters."""

    __slots__ = ("saved_tensors", "needs_input_grad", "inputs", "function", "num_outputs",
                 "__dict__")

    def __init__(self):
        self.saved_tensors = ()

    def save_for_backward(self, *arrays):
        """Keep ``arrays`` (ndarrays) for backward, available as ``ctx.saved_tensors``."""
        self.saved_tensors = arrays


class Function:
    """Base class of differentiable operations.

    Subclasses define ``forward(ctx, *args, **kwargs)`` on ndarrays and
    ``backward(ctx, grad_output)`` returning one gradient (or None) per
    positional input. Use them through ``Subclass.apply(*args, **kwargs)``.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("Function subclasses define forward")  # abstract

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError("Function subclasses define backward")  # abstract

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = Context()
        record = _grad_mode.enabled
        needs = []
        raw = []
        any_needs = False
        for arg in args:
            if isinstance(arg, Tensor):
                raw.append(arg.data)
                flag = record and arg.requires_grad
                any_needs = any_needs or flag
                needs.append(flag)
            else:
                raw.append(arg)
                needs.append(False)
        ctx.needs_input_grad = tuple(needs)
        output = cls.forward(ctx, *raw, **kwargs)
        if not any_needs:
            if isinstance(output, tuple):
                return tuple(Tensor._wrap(o) for o in output)
            return Tensor._wrap(output)
        ctx.inputs = args
        ctx.function = cls
        if isinstance(output, tuple):
            ctx.num_outputs = len(output)
            return tuple(Tensor._wrap(o, ctx, i) for i, o in enumerate(output))
        ctx.num_outputs = 1
        return Tensor._wrap(output, ctx, 0)


def _as_array(data, dtype=None):
    """ndarrays keep float32/float64; Python floats (and float16) become float32."""
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    array = np.asarray(data)
    if array.dtype.kind == "f" and array.dtype != np.float32:
        python_data = not isinstance(data, (np.ndarray, np.generic))
        if python_data or array.dtype != np.float64:
            array = array.astype(np.float32)
    return array


class Tensor:
    """An ndarray with a gradient and the record of the op that made it.

    Parameters
    ----------
    data : array_like
        ndarrays keep float32/float64/integer/bool dtypes; Python floats
        become float32 (the default dtype).
    requires_grad : bool
        Only floating-point tensors can require a gradient.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_out_index", "_grad_storage",
                 "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError("Tensor: only floating-point tensors can require gradients, "
                            "got dtype %s" % self.data.dtype)
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self._out_index = 0
        self._grad_storage = None

    @classmethod
    def _wrap(cls, array, ctx=None, index=0):
        tensor = cls.__new__(cls)
        tensor.data = array
        tensor.grad = None
        tensor.requires_grad = ctx is not None
        tensor._ctx = ctx
        tensor._out_index = index
        tensor._grad_storage = None
        return tensor

    # ------------------------------------------------------------------ basics
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def T(self):
        return self.transpose()

    def size(self, dim=None):
        """The shape, or its entry ``dim`` (as ``torch.Tensor.size``)."""
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def numpy(self):
        """The underlying ndarray (shared, not copied)."""
        return self.data

    def item(self):
        """The value of a one-element tensor as a Python number."""
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self):
        """A new leaf sharing this tensor's data, outside the graph."""
        return Tensor._wrap(self.data)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place (leaves only) and return self."""
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError("requires_grad_: only floating-point tensors can require "
                            "gradients, got dtype %s" % self.data.dtype)
        self.requires_grad = bool(requires_grad)
        return self

    def float(self):
        return _cast(self, np.float32)

    def double(self):
        return _cast(self, np.float64)

    def astype(self, dtype):
        return _cast(self, np.dtype(dtype))

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.data.dtype != np.float32:
            extra = ", dtype=%s%s" % (self.data.dtype, extra)
        return "tensor(%s%s)" % (body, extra)

    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.data)

    def __int__(self):
        return int(self.data)

    def __index__(self):
        return self.data.__index__()

    def __hash__(self):
        return id(self)

    # --------------------------------------------------------------- autograd
    def _accumulate_grad(self, grad):
        """Add ``grad`` into ``.grad`` (in place when it exists; into the optimizer's
        flat gradient storage when one is attached)."""
        if self.grad is None:
            if self._grad_storage is not None:
                np.copyto(self._grad_storage, grad)
                self.grad = self._grad_storage
            else:
                self.grad = np.array(grad, dtype=self.data.dtype, copy=True)
        else:
            self.grad += grad

    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        Parameters
        ----------
        grad : array_like, optional
            Upstream gradient, shape of ``self``; defaults to 1 for a
            one-element tensor.
        retain_graph : bool
            Keep the tape so backward can be called again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: tensor does not require grad and has no grad_fn")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError("backward: grad can be implicitly created only for "
                                   "one-element outputs, got shape %s" % (self.shape,))
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad,
                              dtype=self.data.dtype)
            if grad.shape != self.data.shape:
                raise ValueError("backward: grad has shape %s, expected %s"
                                 % (grad.shape, self.data.shape))
        if self._ctx is None:
            self._accumulate_grad(grad)
            return
        _run_backward(self, grad, retain_graph)

    # ------------------------------------------------------------- operators
    def __add__(self, other):
        return Add.apply(self, other)

    def __radd__(self, other):
        return Add.apply(other, self)

    def __sub__(self, other):
        return Sub.apply(self, other)

    def __rsub__(self, other):
        return Sub.apply(other, self)

    def __mul__(self, other):
        return Mul.apply(self, other)

    def __rmul__(self, other):
        return Mul.apply(other, self)

    def __truediv__(self, other):
        return Div.apply(self, other)

    def __rtruediv__(self, other):
        return Div.apply(other, self)

    def __neg__(self):
        return Neg.apply(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return Exp.apply(Log.apply(self) * exponent)
        return Pow.apply(self, exponent)

    def __matmul__(self, other):
        return MatMul.apply(self, other)

    def __rmatmul__(self, other):
        return MatMul.apply(other, self)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return GetItem.apply(self, index)

    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self.data, other))

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    def eq(self, other):
        return self._compare(other, np.equal)

    def ne(self, other):
        return self._compare(other, np.not_equal)

    # ---------------------------------------------------------------- methods
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return Reshape.apply(self, tuple(shape))

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        ndim = self.data.ndim
        start, end = start_dim % ndim if ndim else 0, end_dim % ndim if ndim else 0
        shape = self.data.shape
        new_shape = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
        return Reshape.apply(self, new_shape)

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return Permute.apply(self, tuple(dims))

    def transpose(self, dim0=-2, dim1=-1):
        if self.data.ndim < 2:
            return self
        dims = list(range(self.data.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return Permute.apply(self, tuple(dims))

    def sum(self, dim=None, keepdim=False):
        return Sum.apply(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return Mean.apply(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return Max.apply(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return Tensor._wrap(np.argmax(self.data, axis=dim, keepdims=keepdim))

    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def sqrt(self):
        return Sqrt.apply(self)

    def abs(self):
        return Abs.apply(self)

    def clamp(self, min=None, max=None):
        return Clamp.apply(self, min, max)

    def relu(self):
        return Clamp.apply(self, 0.0, None)


def tensor(data, requires_grad=False, dtype=None):
    """Create a leaf :class:`Tensor` (float32 by default for Python floats).

    Parameters
    ----------
    data : array_like
    requires_grad : bool
    dtype : numpy dtype, optional
    """
    if isinstance(data, Tensor):
        data = data.data
    array = _as_array(data, dtype)
    return Tensor(array.copy() if array is data or np.shares_memory(array, data) else array,
                  requires_grad=requires_grad)


# ---------------------------------------------------------------- the tape walk

def _topological_order(root_ctx):
    """Nodes reachable from ``root_ctx``, each after every node that consumes it."""
    order = []
    visited = {id(root_ctx)}
    stack = [(root_ctx, iter(root_ctx.inputs))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if isinstance(child, Tensor) and child._ctx is not None \
                    and id(child._ctx) not in visited:
                if child._ctx.function is None:
                    raise RuntimeError(
                        "backward: trying to backward through the graph a second time; "
                        "pass retain_graph=True the first time")
                visited.add(id(child._ctx))
                stack.append((child._ctx, iter(child._ctx.inputs)))
                break
        else:
            stack.pop()
            order.append(node)
    order.reverse()
    return order


def _run_backward(root, grad, retain_graph):
    if root._ctx.function is None:
        raise RuntimeError("backward: trying to backward through the graph a second time; "
                           "pass retain_graph=True the first time")
    pending = {id(root._ctx): [None] * root._ctx.num_outputs}
    pending[id(root._ctx)][root._out_index] = grad
    for node in _topological_order(root._ctx):
        output_grads = pending.pop(id(node), None)
        if output_grads is None:
            continue
        if node.num_outputs == 1:
            grad_outputs = output_grads[0]
        else:
            grad_outputs = tuple(output_grads)
        input_grads = node.function.backward(node, grad_outputs)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for tensor_input, needs, input_grad in zip(node.inputs, node.needs_input_grad,
                                                    input_grads):
            if not needs or input_grad is None:
                continue
            if input_grad.shape != tensor_input.data.shape:
                # compiled backward kernels trust their grad_out's shape (as torch's
                # validate_outputs, this catches a custom Function's bad gradient)
                raise RuntimeError("%s.backward returned a gradient of shape %s for an input "
                                   "of shape %s" % (node.function.__name__, input_grad.shape,
                                                    tensor_input.data.shape))
            parent = tensor_input._ctx
            if parent is None:
                tensor_input._accumulate_grad(input_grad)
                continue
            slots = pending.get(id(parent))
            if slots is None:
                slots = pending[id(parent)] = [None] * parent.num_outputs
            index = tensor_input._out_index
            slots[index] = input_grad if slots[index] is None else slots[index] + input_grad
        if not retain_graph:
            node.function = None
            node.inputs = ()
            node.saved_tensors = ()


# The operations behind Tensor's operators live in their own module; imported last
# because they subclass Function and build Tensors defined above.
from fastdl.tensor_ops import (Abs, Add, Clamp, Div, Exp, GetItem, Log, MatMul,  # noqa: E402
                               Max, Mean, Mul, Neg, Permute, Pow, Reshape, Sqrt, Sub, Sum,
                               cast as _cast, cat, stack)
