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
import itertools
import numbers
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
                 "seq", "__dict__")

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
                raw.append(arg._data)
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
        ctx.seq = next(_sequence)  # creation order: which version of an in-place-modified input
        if isinstance(output, tuple):
            ctx.num_outputs = len(output)
            return tuple(Tensor._wrap(o, ctx, i) for i, o in enumerate(output))
        ctx.num_outputs = 1
        return Tensor._wrap(output, ctx, 0)


# Numbers recorded nodes in creation order (see Tensor._inplace and _input_version).
_sequence = itertools.count()

_LEAF_IN_PLACE = "a leaf Variable that requires grad is being used in an in-place operation."
_COMPARABLE = (np.ndarray, np.generic, numbers.Number, list, tuple)


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

    Notes
    -----
    As in torch, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` compare elementwise
    and return a bool Tensor, while hashing stays by identity (Tensors can be
    dict keys and set members; to look a Tensor up in a list, compare with
    ``is``). ``+=``, ``-=``, ``*=``, ``/=`` work in place (see :meth:`_inplace`).
    """

    __slots__ = ("_data", "grad", "requires_grad", "_ctx", "_out_index", "_grad_storage",
                 "_versions", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator
    __hash__ = object.__hash__  # by identity, as torch's (defining __eq__ would unset it)

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data._data
        self._data = _as_array(data, dtype)
        if requires_grad and self._data.dtype.kind != "f":
            raise TypeError("Tensor: only floating-point tensors can require gradients, "
                            "got dtype %s" % self._data.dtype)
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self._out_index = 0
        self._grad_storage = None
        self._versions = None

    @classmethod
    def _wrap(cls, array, ctx=None, index=0):
        tensor = cls.__new__(cls)
        tensor._data = array
        tensor.grad = None
        tensor.requires_grad = ctx is not None
        tensor._ctx = ctx
        tensor._out_index = index
        tensor._grad_storage = None
        tensor._versions = None
        return tensor

    # ------------------------------------------------------------------ basics
    @property
    def data(self):
        """The underlying ndarray.

        Assigning it rebinds the tensor to the new array (a Tensor's array, or
        an array_like), except for a parameter packed by an optimizer (its
        ``.data`` is a view into the optimizer's flat buffer): a value of the
        same shape and dtype is copied into that storage, so the optimizer keeps
        stepping what the model uses; a value of another shape or dtype is
        rebound and the optimizer re-packs its buffers at its next step.
        """
        return self._data

    @data.setter
    def data(self, value):
        if isinstance(value, Tensor):
            value = value._data
        elif not isinstance(value, np.ndarray):
            value = _as_array(value)
        if self._grad_storage is not None:   # packed by an optimizer
            current = self._data
            if value.shape == current.shape and value.dtype == current.dtype:
                if value is not current:
                    np.copyto(current, value)
                return
            self._grad_storage = None        # the optimizer re-packs at its next step
        self._data = value

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def T(self):
        return self.transpose()

    def size(self, dim=None):
        """The shape, or its entry ``dim`` (as ``torch.Tensor.size``)."""
        return self._data.shape if dim is None else self._data.shape[dim]

    def numel(self):
        return self._data.size

    def __len__(self):
        return len(self._data)

    def numpy(self):
        """The underlying ndarray (shared, not copied)."""
        return self._data

    def item(self):
        """The value of a one-element tensor as a Python number."""
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def detach(self):
        """A new leaf sharing this tensor's data, outside the graph."""
        return Tensor._wrap(self._data)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place (leaves only) and return self."""
        if requires_grad and self._data.dtype.kind != "f":
            raise TypeError("requires_grad_: only floating-point tensors can require "
                            "gradients, got dtype %s" % self._data.dtype)
        self.requires_grad = bool(requires_grad)
        return self

    def float(self):
        return _cast(self, np.float32)

    def double(self):
        return _cast(self, np.float64)

    def long(self):
        """As int64 (outside the graph, as every non-floating cast)."""
        return _cast(self, np.int64)

    def int(self):
        return _cast(self, np.int32)

    def bool(self):
        return _cast(self, np.bool_)

    def astype(self, dtype):
        return _cast(self, np.dtype(dtype))

    def __repr__(self):
        body = np.array2string(np.asarray(self._data), separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self._data.dtype != np.float32:
            extra = ", dtype=%s%s" % (self._data.dtype, extra)
        return "tensor(%s%s)" % (body, extra)

    def __bool__(self):
        return bool(self._data)

    def __float__(self):
        return float(self._data)

    def __int__(self):
        return int(self._data)

    def __index__(self):
        return self._data.__index__()

    # --------------------------------------------------------------- autograd
    def _accumulate_grad(self, grad):
        """Add ``grad`` into ``.grad`` (in place when it exists; into the optimizer's
        flat gradient storage when one is attached)."""
        if self.grad is None:
            storage = self._grad_storage
            if storage is not None and storage.shape == grad.shape:
                np.copyto(storage, grad)
                self.grad = storage
            else:
                self.grad = np.array(grad, dtype=self._data.dtype, copy=True)
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
            if self._data.size != 1:
                raise RuntimeError("backward: grad can be implicitly created only for "
                                   "one-element outputs, got shape %s" % (self.shape,))
            grad = np.ones_like(self._data)
        else:
            grad = np.asarray(grad._data if isinstance(grad, Tensor) else grad,
                              dtype=self._data.dtype)
            if grad.shape != self._data.shape:
                raise ValueError("backward: grad has shape %s, expected %s"
                                 % (grad.shape, self._data.shape))
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
            index = index._data
        elif isinstance(index, tuple):
            index = tuple(i._data if isinstance(i, Tensor) else i for i in index)
        return GetItem.apply(self, index)

    # ------------------------------------------------------------ in place
    def _inplace(self, other, function, ufunc):
        """``self (op)= other`` as torch does it.

        * A leaf that requires grad, with grad mode on: RuntimeError (as torch).
        * Recording (grad mode on, and self or other requires grad): the result is
          computed by ``function`` from a snapshot of self's current value and
          self becomes that result (a non-leaf). The ops that consumed the old
          value keep differentiating through it (each node knows which version
          of an in-place-modified input it read). The result gets a new array,
          so arrays saved for backward are never overwritten.
        * Otherwise (under ``no_grad()``, e.g. a manual SGD step ``w -= lr * g``,
          or when nothing requires grad): the ufunc writes into self's array
          (an optimizer's flat buffer stays shared). Broadcasting may not change
          self's shape and the result must cast to self's dtype (same_kind).
        """
        other_grad = isinstance(other, Tensor) and other.requires_grad
        if _grad_mode.enabled and (self.requires_grad or other_grad):
            if self._ctx is None and self.requires_grad:
                raise RuntimeError(_LEAF_IN_PLACE)
            packed = self._grad_storage is not None
            old = Tensor._wrap(self._data.copy() if packed else self._data, self._ctx,
                               self._out_index)
            old.requires_grad = self.requires_grad
            result = function.apply(old, old if other is self else other)
            data = result._data
            if data.shape != self._data.shape:
                raise RuntimeError("output with shape %s doesn't match the broadcast shape %s"
                                   % (list(self._data.shape), list(data.shape)))
            if data.dtype != self._data.dtype:
                if not np.can_cast(data.dtype, self._data.dtype, "same_kind"):
                    raise RuntimeError("result type %s can't be cast to the desired output "
                                       "type %s" % (data.dtype, self._data.dtype))
                result = _cast(result, self._data.dtype)
            entry = (result._ctx.seq, old)
            self._versions = [entry] if self._versions is None else self._versions + [entry]
            if packed:
                np.copyto(self._data, result._data)
            else:
                self._data = result._data
            self._ctx, self._out_index = result._ctx, result._out_index
            self.requires_grad = True
            return self
        if not isinstance(self._data, np.ndarray):   # a NumPy scalar from a 0-d op
            self._data = np.array(self._data)
        ufunc(self._data, other._data if isinstance(other, Tensor) else other,
              out=self._data)
        return self

    def __iadd__(self, other):
        return self._inplace(other, Add, np.add)

    def __isub__(self, other):
        return self._inplace(other, Sub, np.subtract)

    def __imul__(self, other):
        return self._inplace(other, Mul, np.multiply)

    def __itruediv__(self, other):
        return self._inplace(other, Div, np.true_divide)

    def add_(self, other, alpha=1):
        return self._inplace(other if alpha == 1 else other * alpha, Add, np.add)

    def sub_(self, other, alpha=1):
        return self._inplace(other if alpha == 1 else other * alpha, Sub, np.subtract)

    def mul_(self, other):
        return self._inplace(other, Mul, np.multiply)

    def div_(self, other):
        return self._inplace(other, Div, np.true_divide)

    # ----------------------------------------------------------- comparisons
    def _compare(self, other, op):
        """Elementwise comparison (NumPy broadcasting): a bool Tensor outside the graph."""
        if isinstance(other, Tensor):
            other = other._data
        elif not isinstance(other, _COMPARABLE):
            return NotImplemented
        return Tensor._wrap(np.asarray(op(self._data, other)))

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    def _checked_compare(self, other, op, name):
        result = self._compare(other, op)
        if result is NotImplemented:
            raise TypeError("%s: cannot compare a Tensor with %s" % (name, type(other).__name__))
        return result

    def eq(self, other):
        return self._checked_compare(other, np.equal, "eq")

    def ne(self, other):
        return self._checked_compare(other, np.not_equal, "ne")

    def lt(self, other):
        return self._checked_compare(other, np.less, "lt")

    def le(self, other):
        return self._checked_compare(other, np.less_equal, "le")

    def gt(self, other):
        return self._checked_compare(other, np.greater, "gt")

    def ge(self, other):
        return self._checked_compare(other, np.greater_equal, "ge")

    def _logical(self, other, op):
        other = other._data if isinstance(other, Tensor) else other
        if self._data.dtype.kind == "f" or np.asarray(other).dtype.kind == "f":
            raise TypeError("bitwise/logical operators need bool or integer tensors, got %s"
                            % self._data.dtype)
        return Tensor._wrap(np.asarray(op(self._data, other)))

    def __and__(self, other):
        return self._logical(other, np.bitwise_and)

    __rand__ = __and__

    def __or__(self, other):
        return self._logical(other, np.bitwise_or)

    __ror__ = __or__

    def __xor__(self, other):
        return self._logical(other, np.bitwise_xor)

    __rxor__ = __xor__

    def __invert__(self):
        if self._data.dtype.kind == "f":
            raise TypeError("~ needs a bool or integer tensor, got %s" % self._data.dtype)
        return Tensor._wrap(np.asarray(np.invert(self._data)))

    # ---------------------------------------------------------------- methods
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return Reshape.apply(self, tuple(shape))

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        ndim = self._data.ndim
        start, end = start_dim % ndim if ndim else 0, end_dim % ndim if ndim else 0
        shape = self._data.shape
        new_shape = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
        return Reshape.apply(self, new_shape)

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return Permute.apply(self, tuple(dims))

    def transpose(self, dim0=-2, dim1=-1):
        if self._data.ndim < 2:
            return self
        dims = list(range(self._data.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return Permute.apply(self, tuple(dims))

    def sum(self, dim=None, keepdim=False):
        return Sum.apply(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        """Mean over ``dim`` (or all); bool and integer tensors give float32."""
        return Mean.apply(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        """As ``torch.Tensor.max``: without ``dim`` a 0-d Tensor of the maximum (its
        gradient shared evenly by tied maxima); with ``dim`` a namedtuple
        ``(values, indices)`` (the first maximum of each slice, which gets the
        gradient)."""
        return extremum(self, dim, keepdim, largest=True)

    def min(self, dim=None, keepdim=False):
        """As :meth:`max`, for the minimum."""
        return extremum(self, dim, keepdim, largest=False)

    def argmax(self, dim=None, keepdim=False):
        """int64 indices of the (first) maxima along ``dim``, or into the flattened tensor."""
        return Tensor._wrap(arg_extremum(self._data, dim, keepdim, np.argmax))

    def argmin(self, dim=None, keepdim=False):
        return Tensor._wrap(arg_extremum(self._data, dim, keepdim, np.argmin))

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
        data = data._data
    array = _as_array(data, dtype)
    return Tensor(array.copy() if array is data or np.shares_memory(array, data) else array,
                  requires_grad=requires_grad)


# ---------------------------------------------------------------- the tape walk

def _input_version(node, tensor):
    """The version of ``tensor`` that ``node`` read: an in-place op made since then left
    a snapshot of the earlier value, stamped with the in-place node's number."""
    for stamp, old in tensor._versions:
        if node.seq < stamp:
            return old
    return tensor


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
                child = _input_version(node, child)
            if child._ctx is not None and id(child._ctx) not in visited:
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
            if tensor_input._versions is not None:
                tensor_input = _input_version(node, tensor_input)
            if input_grad.shape != tensor_input._data.shape:
                # compiled backward kernels trust their grad_out's shape (as torch's
                # validate_outputs, this catches a custom Function's bad gradient)
                raise RuntimeError("%s.backward returned a gradient of shape %s for an input "
                                   "of shape %s" % (node.function.__name__, input_grad.shape,
                                                    tensor_input._data.shape))
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
                               Mean, Mul, Neg, Permute, Pow, Reshape, Sqrt, Sub, Sum,
                               arg_extremum, cast as _cast, cat, extremum, stack)
