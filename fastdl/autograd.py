"""A small define-by-run autograd: ``Tensor`` and ``Function`` (the tape walk is
:mod:`fastdl.tensor_tape`, the optimizer's flat buffers :mod:`fastdl.tensor_buffers`).

An op is a :class:`Function` subclass with static ``forward(ctx, *arrays)`` and
``backward(ctx, grad_output)`` that work on ndarrays (calling kernels).
``Function.apply`` unwraps Tensors, runs ``forward``, and — only when some
input requires a gradient and recording is on — links the output to ``ctx``.
``Tensor.backward`` orders the recorded nodes once (iterative DFS, so deep
graphs do not hit Python's recursion limit), calls each node's ``backward``
exactly once with the summed gradient of its outputs, accumulates into the
leaves' ``.grad``, and frees the tape.

This module holds the Tensor's core (its array, gradient and backward). Its
methods come in families, each in its own module beside the ops it calls,
and each adds its methods to Tensor with :func:`tensor_method` when imported
(this module imports them all last): ``tensor_ops`` (arithmetic operators,
matmul), ``tensor_compare`` (comparisons, logical operators),
``tensor_convert`` (dtype, device, copies), ``tensor_shape`` (views,
indexing, joining and splitting), ``tensor_reduce`` (reductions, sorting),
``tensor_math`` (elementwise functions, activations) and ``tensor_inplace``
(in-place updates).

The per-op Python cost is kept small on purpose (slots, no dict per node, one
thread-local flag read), because small networks at batch 1 are dominated by it.
"""
import itertools
import numbers

import numpy as np

from fastdl.devices import CPU, check_cpu
from fastdl.dtypes import get_default_dtype, resolve_dtype
from fastdl.grad_mode import (enable_grad, grad_mode as _grad_mode, inference_mode,
                              is_grad_enabled, no_grad, set_grad_enabled)

__all__ = ["Tensor", "Function", "Context", "tensor", "no_grad", "enable_grad",
           "is_grad_enabled", "set_grad_enabled", "inference_mode", "cat", "stack",
           "tensor_method"]


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

    #: True when every array ``backward`` returns is new: allocated by that call and held
    #: by nothing else (not saved, cached or returned twice, no view of an array that is).
    #: The backward then hands such an array to the input as its gradient (a leaf's
    #: ``.grad`` takes it over, a later gradient of the same tensor is added into it in
    #: place) instead of copying it. Leave it False for a backward that may pass on its
    #: ``grad_output`` or a view of it.
    new_grads = False

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
                result = tuple(Tensor._wrap(o) for o in output)
            else:
                result = Tensor._wrap(output)
        else:
            ctx.inputs = args
            ctx.function = cls
            # creation order: which version of an in-place-modified input
            ctx.seq = next(_sequence)
            if isinstance(output, tuple):
                ctx.num_outputs = len(output)
                result = tuple(Tensor._wrap(o, ctx, i) for i, o in enumerate(output))
            else:
                ctx.num_outputs = 1
                result = Tensor._wrap(output, ctx, 0)
        if _tracer is not None:
            _tracer(cls, args, kwargs, result)
        return result


#: None, or ``tracer(function, args, kwargs, result)``, told of every op ``Function.apply``
#: runs (``fastdl.deploy.trace`` sets it while it traces a forward; one global read an op
#: otherwise).
_tracer = None


# Numbers recorded nodes in creation order (see tensor_inplace and tensor_tape.input_version).
_sequence = itertools.count()


def _as_array(data, dtype=None):
    """ndarrays keep float32/float64; Python floats become the default dtype (float32)
    and float16 arrays float32."""
    if dtype is not None:
        return np.asarray(data, dtype=resolve_dtype(dtype))
    array = np.asarray(data)
    if array.dtype.kind == "f" and array.dtype != np.float32:
        if not isinstance(data, (np.ndarray, np.generic)):
            array = array.astype(get_default_dtype())
        elif array.dtype != np.float64:
            array = array.astype(np.float32)
    return array


class GradDtypeError(RuntimeError, TypeError):
    """A bool or integer tensor asked to require a gradient (a RuntimeError as torch's; a
    TypeError as fastdl's was before)."""


class Tensor:
    """An ndarray with a gradient and the record of the op that made it.

    Parameters
    ----------
    data : array_like
        ndarrays keep float32/float64/integer/bool dtypes; Python floats
        become the default dtype (float32, see ``fastdl.set_default_dtype``).
    requires_grad : bool
        Only floating-point tensors can require a gradient.
    dtype : dtype, optional

    Notes
    -----
    As in torch, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` compare elementwise
    and return a bool Tensor, while hashing stays by identity (Tensors can be
    dict keys and set members; to look a Tensor up in a list, compare with
    ``is``). ``.grad`` is a Tensor (None until a backward reaches this leaf);
    NumPy functions take Tensors directly (``__array__``). ``.data`` is torch's: a
    detached Tensor over the same array; ``.array`` is the ndarray itself, read as
    cheaply as an attribute (what the layers and kernels above use).
    """

    __slots__ = ("_data", "_grad", "requires_grad", "_ctx", "_out_index", "_grad_storage",
                 "_versions", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator
    __hash__ = object.__hash__  # by identity, as torch's (defining __eq__ would unset it)

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data._data
        self._data = _as_array(data, dtype)
        if requires_grad and self._data.dtype.kind != "f":
            raise GradDtypeError("Tensor: only floating-point tensors can require gradients, "
                                 "got dtype %s" % self._data.dtype)
        self.requires_grad = bool(requires_grad)
        self._grad = None
        self._ctx = None
        self._out_index = 0
        self._grad_storage = None
        self._versions = None

    @classmethod
    def _wrap(cls, array, ctx=None, index=0):
        tensor = cls.__new__(cls)
        tensor._data = array
        tensor._grad = None
        tensor.requires_grad = ctx is not None
        tensor._ctx = ctx
        tensor._out_index = index
        tensor._grad_storage = None
        tensor._versions = None
        return tensor

    # ------------------------------------------------------------------ basics
    @property
    def data(self):
        """This tensor's values as a new, detached Tensor sharing its array (as torch's).

        The result never requires a gradient and has no history; writing into it
        (``p.data.zero_()``, ``m.weight.data.normal_()``, ``p.data.add_(...)``,
        ``p.data[0] = 1``) changes this tensor without being recorded. For a
        parameter packed by an optimizer the shared array is its view into the
        optimizer's flat buffer (see :class:`FlatBuffers`), so such writes reach
        what the optimizer steps. The ndarray itself is :attr:`array`.

        Assigning it rebinds the tensor to the new array (a Tensor's array, or
        an array_like), except for a parameter packed by an optimizer: a value of
        the same shape and dtype is copied into that storage, so the optimizer
        keeps stepping what the model uses; a value of another shape or dtype is
        rebound and the optimizer re-packs its buffers at its next step.
        """
        return Tensor._wrap(self._data)

    @data.setter
    def data(self, value):
        if isinstance(value, Tensor):
            value = value._data
        elif not isinstance(value, np.ndarray):
            value = _as_array(value)
        if self._grad_storage is not None:   # packed into flat buffers
            from fastdl import tensor_deferred   # (imports this module)
            if tensor_deferred.scope.live:   # a deferred conv may read the array written
                tensor_deferred.materialize_all()
            current = self._data
            if value.shape == current.shape and value.dtype == current.dtype:
                if value is not current:
                    np.copyto(current, value)
                return
            self._grad_storage = None        # unpacked: the owner packs anew (intact())
        self._data = value

    @property
    def grad(self):
        """The accumulated gradient, a Tensor of this tensor's shape (or None).

        For a parameter packed by an optimizer (:class:`FlatBuffers`) its array is
        a view into the optimizer's flat gradient buffer, so ``p.grad.zero_()``
        and ``p.grad.data`` reach what the optimizer steps with. Assigning an
        ndarray wraps it without copying.
        """
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is None:
            self._grad = None
            return
        if not isinstance(value, Tensor):
            value = Tensor._wrap(np.asarray(value))
        if value.shape != self._data.shape:
            raise RuntimeError("assigned grad has data of a different size: %s, expected %s"
                               % (value.shape, self._data.shape))
        self._grad = value

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
    def device(self):
        """Always ``device(type='cpu')``."""
        return CPU

    @property
    def is_cuda(self):
        return False

    @property
    def is_cpu(self):
        return True

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        """The node that made this tensor (None for a leaf)."""
        return self._ctx

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._data)

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self._data)))

    def __array__(self, dtype=None, copy=None):
        """The underlying ndarray, for NumPy functions (``np.asarray(t)``)."""
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        return np.asarray(self._data, dtype=dtype)

    def __repr__(self):
        body = np.array2string(np.asarray(self._data), separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self._data.dtype not in (np.float32, np.int64, np.bool_):
            extra = ", dtype=%s%s" % (self._data.dtype, extra)
        return "tensor(%s%s)" % (body, extra)

    def __format__(self, format_spec):
        if self._data.ndim == 0:
            return format(self._data.item(), format_spec)
        return object.__format__(self, format_spec)

    def _one_value(self, what):
        if self._data.size != 1:
            raise RuntimeError("a Tensor with %d elements cannot be converted to %s"
                               % (self._data.size, what))
        return self._data.item()

    def item(self):
        """The value of a one-element tensor as a Python number.

        Raises
        ------
        RuntimeError
            If the tensor has more or fewer than one element.
        """
        return self._one_value("Scalar")

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError("Boolean value of Tensor with %s values is ambiguous"
                               % ("no" if self._data.size == 0 else "more than one"))
        return bool(self._one_value("bool"))

    def __float__(self):
        return float(self._one_value("float"))

    def __int__(self):
        return int(self._one_value("int"))

    def __index__(self):
        if self._data.dtype.kind not in "biu":
            raise TypeError("only integer tensors of a single element can be converted "
                            "to an index")
        return self._data.__index__()

    # --------------------------------------------------------------- autograd
    def _accumulate_grad(self, grad, take=False):
        """Add ``grad`` (an ndarray) into ``.grad``: in place when it exists; into the
        segment of a flat gradient buffer when the tensor is packed (FlatBuffers).

        ``take``: ``grad`` is a new array nothing else holds (``Function.new_grads``); a
        first gradient of this tensor's dtype then becomes ``.grad`` as it is, uncopied.
        """
        if self._grad is None:
            storage = self._grad_storage
            if storage is not None and storage.shape == grad.shape:
                np.copyto(storage, grad)
                self._grad = Tensor._wrap(storage)
            elif take and grad.dtype == self._data.dtype and grad.flags.writeable:
                self._grad = Tensor._wrap(grad)
            else:
                self._grad = Tensor._wrap(np.array(grad, dtype=self._data.dtype, copy=True))
        else:
            accumulated = self._grad._data
            if isinstance(accumulated, np.ndarray) and accumulated.flags.writeable:
                accumulated += grad
            else:
                self._grad = Tensor._wrap(accumulated + grad)

    def backward(self, grad=None, retain_graph=None, create_graph=False, gradient=None):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        Parameters
        ----------
        grad : array_like or Tensor, optional
            Upstream gradient, shape of ``self``; defaults to 1 for a
            one-element tensor. ``gradient=`` is torch's name for it.
        retain_graph : bool
            Keep the tape so backward can be called again.
        create_graph : bool
            Only False: gradients are not themselves differentiable.
        """
        if gradient is not None:
            if grad is not None:
                raise TypeError("backward: give grad or gradient, not both")
            grad = gradient
        if create_graph:
            raise NotImplementedError("backward: create_graph=True (higher-order "
                                      "gradients) is not supported")
        if not self.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not "
                               "have a grad_fn")
        if grad is None:
            if self._data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar (one-element) "
                                   "outputs, got shape %s" % (self.shape,))
            grad = np.ones(self._data.shape, dtype=self._data.dtype)
        else:
            grad = np.asarray(grad._data if isinstance(grad, Tensor) else grad,
                              dtype=self._data.dtype)
            if grad.shape != self._data.shape:
                raise RuntimeError("backward: grad has shape %s, expected %s"
                                   % (grad.shape, self._data.shape))
        if self._ctx is None:
            self._accumulate_grad(grad)
            return
        tensor_tape.run_backward(self, grad, bool(retain_graph))


# ``t.array``: the ndarray behind a Tensor, read as cheaply as a plain attribute (the same
# slot as ``_data``, published for the floors above; to assign, use ``.data``).
Tensor.array = Tensor._data


# ------------------------------------------------- helpers for the method families
def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape`` (the inverse of NumPy broadcasting)."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def normalize_dim(dim, ndim, op):
    """``dim`` as an index in ``[0, ndim)`` (a 0-d tensor has one dim, 0 or -1).

    Raises
    ------
    TypeError
        If ``dim`` is not an int.
    IndexError
        If it is out of range.
    """
    if isinstance(dim, bool) or not isinstance(dim, (numbers.Integral, np.integer)):
        raise TypeError("%s: dim must be an int, got %s" % (op, type(dim).__name__))
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError("%s: dimension out of range (expected to be in range of [%d, %d], "
                         "but got %d)" % (op, -size, size - 1, dim))
    return int(dim) % size


def tensor_method(function=None, *, name=None):
    """Add ``function`` to :class:`Tensor` as a method and return it (a decorator).

    The method families (``tensor_shape``, ``tensor_reduce``, ...) define their
    methods as module functions decorated with ``@tensor_method``, or with
    ``@tensor_method(name="sum")`` where the method's name would shadow a
    builtin in the module (the function then has another name, ``tensor_sum``).
    """
    if function is None:
        return lambda decorated: tensor_method(decorated, name=name)
    setattr(Tensor, name or function.__name__, function)
    return function


def tensor(data, dtype=None, device=None, requires_grad=False, pin_memory=False):
    """Create a leaf :class:`Tensor` from ``data``, always copying it.

    Parameters
    ----------
    data : array_like or Tensor
        Python floats become the default dtype (float32), ints int64.
    dtype : dtype, optional
    device : device or str, optional
        Only the CPU.
    requires_grad : bool
    pin_memory : bool
        Accepted and ignored.

    Raises
    ------
    TypeError
        For data a tensor cannot hold (strings, objects).
    RuntimeError
        For a device other than the CPU.
    """
    check_cpu(device, "tensor")
    if isinstance(data, Tensor):
        data = data._data
    array = _as_array(data, dtype)
    if array.dtype.kind not in "biuf":
        raise TypeError("tensor: cannot make a tensor of %s data (dtype %s)"
                        % (type(data).__name__, array.dtype))
    return Tensor(array.copy() if array is data or np.shares_memory(array, data) else array,
                  requires_grad=requires_grad)


def cat(tensors, dim=0):
    """Concatenate tensors along ``dim`` (see :func:`fastdl.tensor_shape.cat`)."""
    return tensor_shape.cat(tensors, dim)


def stack(tensors, dim=0):
    """Stack equally shaped tensors along a new ``dim`` (see :func:`fastdl.tensor_shape.stack`)."""
    return tensor_shape.stack(tensors, dim)


# Tensor's method families: each module adds its methods to Tensor when imported.
from fastdl import (tensor_compare, tensor_convert, tensor_inplace, tensor_math,  # noqa: E402,F401
                    tensor_ops, tensor_reduce, tensor_shape, tensor_tape)
