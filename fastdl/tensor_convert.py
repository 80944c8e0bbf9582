"""Tensor methods that convert or copy: dtype and device moves (``to``, ``float``,
``long``, ``cpu``...), ``clone``/``detach``, NumPy and Python views of the
values, sizes, and ``new_*`` factories.

Casts to a floating dtype are differentiable; casts to bool or integer dtypes
leave the graph, as in torch. ``to`` accepts only the CPU (see
:mod:`fastdl.devices`).
"""
import numpy as np

from fastdl import tensor_ops  # by module: any import order
from fastdl.autograd import (Function, GradDtypeError, Tensor, _as_array, normalize_dim,
                             tensor_method)
from fastdl.devices import check_cpu, parse_to_arguments
from fastdl.dtypes import resolve_dtype


class Clone(Function):
    """A copy of the values that passes gradients straight through."""

    @staticmethod
    def forward(ctx, a):
        return np.array(a, copy=True)

    @staticmethod
    def backward(ctx, grad):
        return grad


def data_of(value):
    """The ndarray behind a Tensor or array-like (None stays None): what layers and
    functional wrappers check before any kernel runs."""
    if value is None:
        return None
    return value.array if isinstance(value, Tensor) else np.asarray(value)


# ----------------------------------------------------------------- dtype casts
@tensor_method
def to(self, *args, **kwargs):
    """This tensor as another dtype (device: the CPU only), as ``torch.Tensor.to``.

    ``to(dtype)``, ``to(device, dtype=None)``, ``to(other_tensor)``, with
    ``non_blocking`` (ignored) and ``copy``. Returns self when nothing changes
    and ``copy`` is False.

    Raises
    ------
    RuntimeError
        For a device other than the CPU ("cuda", "mps", ...).
    TypeError
        For arguments that fit none of those forms.
    """
    dtype, copy, _ = parse_to_arguments("to", args, kwargs)
    result = self if dtype is None else tensor_ops.cast(self, dtype)
    if copy and result is self:
        result = Clone.apply(self)
    return result


@tensor_method
def cpu(self, memory_format=None):
    """Self: tensors always live on the CPU."""
    return self


@tensor_method
def cuda(self, device=None, non_blocking=False):
    """Raises RuntimeError: fastdl has no CUDA devices."""
    check_cpu("cuda" if device is None else device, "cuda")
    return self


@tensor_method(name="float")
def to_float32(self):
    """As float32 (differentiable)."""
    return tensor_ops.cast(self, np.float32)


@tensor_method(name="double")
def to_float64(self):
    """As float64 (differentiable)."""
    return tensor_ops.cast(self, np.float64)


@tensor_method(name="half")
def to_float16(self):
    """As float16 (fastdl's kernels compute in float32/float64 only)."""
    return tensor_ops.cast(self, np.float16)


@tensor_method(name="long")
def to_int64(self):
    """As int64 (outside the graph, as every non-floating cast)."""
    return tensor_ops.cast(self, np.int64)


@tensor_method(name="int")
def to_int32(self):
    """As int32."""
    return tensor_ops.cast(self, np.int32)


@tensor_method(name="short")
def to_int16(self):
    return tensor_ops.cast(self, np.int16)


@tensor_method(name="byte")
def to_uint8(self):
    return tensor_ops.cast(self, np.uint8)


@tensor_method(name="bool")
def to_bool(self):
    return tensor_ops.cast(self, np.bool_)


@tensor_method
def astype(self, dtype):
    return tensor_ops.cast(self, resolve_dtype(dtype, "astype"))


@tensor_method
def type_as(self, other):
    """This tensor with ``other``'s dtype."""
    return tensor_ops.cast(self, other.dtype)


@tensor_method
def is_floating_point(self):
    return self._data.dtype.kind == "f"


# -------------------------------------------------------------- copies, views
@tensor_method
def clone(self, memory_format=None):
    """A copy of the values, differentiable (gradients flow back to self)."""
    return Clone.apply(self)


@tensor_method
def detach(self):
    """A new leaf sharing this tensor's data, outside the graph."""
    return Tensor._wrap(self._data)


@tensor_method
def detach_(self):
    """Detach self from the graph in place (it becomes a leaf); returns self."""
    self._ctx = None
    self._versions = None
    self.requires_grad = False
    return self


@tensor_method
def requires_grad_(self, requires_grad=True):
    """Set ``requires_grad`` in place and return self.

    Raises
    ------
    GradDtypeError (a RuntimeError and a TypeError)
        Asking a bool or integer tensor to require a gradient.
    RuntimeError
        Turning it off on a tensor that is not a leaf.
    """
    if requires_grad and self._data.dtype.kind != "f":
        raise GradDtypeError("requires_grad_: only floating-point tensors can require "
                             "gradients, got dtype %s" % self._data.dtype)
    if not requires_grad and self._ctx is not None:
        raise RuntimeError("you can only change requires_grad flags of leaf variables. If "
                           "you want to use a computed variable in a subgraph that doesn't "
                           "require differentiation use var_no_grad = var.detach().")
    self.requires_grad = bool(requires_grad)
    return self


@tensor_method
def contiguous(self, memory_format=None):
    """Self when its array is C-contiguous, else a contiguous copy (differentiable)."""
    data = self._data
    if not isinstance(data, np.ndarray) or data.flags.c_contiguous:
        return self
    return Clone.apply(self)


@tensor_method
def is_contiguous(self, memory_format=None):
    return not isinstance(self._data, np.ndarray) or self._data.flags.c_contiguous


@tensor_method
def pin_memory(self):
    """Self (there is no device to pin memory for)."""
    return self


@tensor_method
def share_memory_(self):
    return self


@tensor_method
def numpy(self, force=False):
    """The underlying ndarray (shared, not copied)."""
    return self._data


@tensor_method
def tolist(self):
    """The values as (nested) Python lists of numbers."""
    return self._data.tolist()


# ---------------------------------------------------------------------- sizes
@tensor_method
def size(self, dim=None):
    """The shape (a tuple), or its entry ``dim`` (as ``torch.Tensor.size``)."""
    if dim is None:
        return self._data.shape
    if self._data.ndim == 0:
        raise IndexError("size: dimension specified as %d but tensor has no dimensions" % dim)
    return self._data.shape[normalize_dim(dim, self._data.ndim, "size")]


@tensor_method
def dim(self):
    """The number of dimensions."""
    return self._data.ndim


@tensor_method
def ndimension(self):
    return self._data.ndim


@tensor_method
def numel(self):
    """The number of elements."""
    return int(self._data.size)


@tensor_method
def nelement(self):
    return int(self._data.size)


@tensor_method
def element_size(self):
    """Bytes per element."""
    return self._data.dtype.itemsize


# ---------------------------------------------------------------- new tensors
def _new(self, values, dtype, device, requires_grad):
    check_cpu(device, "new_tensor")
    array = np.asarray(values, dtype=self._data.dtype if dtype is None
                       else resolve_dtype(dtype, "new_tensor"))
    return Tensor(array, requires_grad=requires_grad)


def _size_argument(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


@tensor_method
def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    """A copy of ``data`` with this tensor's dtype (unless ``dtype`` is given)."""
    if isinstance(data, Tensor):
        data = data._data
    return _new(self, np.array(_as_array(data), copy=True), dtype, device, requires_grad)


@tensor_method
def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
    return _new(self, np.zeros(_size_argument(size)), dtype, device, requires_grad)


@tensor_method
def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
    return _new(self, np.ones(_size_argument(size)), dtype, device, requires_grad)


@tensor_method
def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
    return _new(self, np.zeros(_size_argument(size)), dtype, device, requires_grad)


@tensor_method
def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
    return _new(self, np.full(tuple(size), fill_value), dtype, device, requires_grad)
