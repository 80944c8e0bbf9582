"""Tensor shape methods, all differentiable: reshapes and views, permutations,
broadcasting (``expand``, ``repeat``), indexing (``t[i]``, ``gather``,
``index_select``) and joining or splitting (``cat``, ``stack``, ``split``,
``chunk``, ``unbind``).

``view`` is ``reshape``: NumPy copies where a view is impossible instead of
raising as torch does. Indexing follows NumPy's rules, which are torch's for
integers, slices, ``None``, ``...``, bool masks and integer index tensors;
basic indexing returns a view (writing into it under ``no_grad`` writes the
base tensor, as in torch). Bad sizes raise RuntimeError and bad dimensions
IndexError, as in torch.
"""
import math
from collections import namedtuple

import numpy as np

from fastdl.autograd import Function, Tensor, normalize_dim, tensor_method, unbroadcast

__all__ = ["cat", "stack", "normalize_index", "is_basic_index", "gather_index", "TakeAlongDim",
           "ReturnTypes"]


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.input_shape = a.shape
        return np.reshape(a, shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.input_shape), None


class Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return np.transpose(a, dims)

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, np.argsort(ctx.dims)), None


class Expand(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.input_shape = a.shape
        return np.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.input_shape), None


class Repeat(Function):
    @staticmethod
    def forward(ctx, a, repeats):
        padded = (1,) * (len(repeats) - a.ndim) + a.shape
        ctx.padded, ctx.input_shape, ctx.repeats = padded, a.shape, repeats
        return np.tile(a.reshape(padded), repeats)

    @staticmethod
    def backward(ctx, grad):
        # (r0 * s0, r1 * s1, ...) -> (r0, s0, r1, s1, ...), summed over the r axes
        split_shape = [n for pair in zip(ctx.repeats, ctx.padded) for n in pair]
        summed = grad.reshape(split_shape).sum(axis=tuple(range(0, len(split_shape), 2)))
        return summed.reshape(ctx.input_shape), None


class Flip(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return np.flip(a, dims)

    @staticmethod
    def backward(ctx, grad):
        return np.flip(grad, ctx.dims), None


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.index = index
        ctx.input_shape = a.shape
        ctx.dtype = a.dtype
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        full = np.zeros(ctx.input_shape, dtype=ctx.dtype)
        if is_basic_index(ctx.index):
            full[ctx.index] = grad
        else:
            np.add.at(full, ctx.index, grad)  # repeated integer indices accumulate
        return full, None


def is_basic_index(index):
    """Whether ``index`` (a tuple) selects each entry at most once: ints, slices, None and
    ``...`` only (NumPy's basic indexing)."""
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in index)


class SetItem(Function):
    """``a`` with ``a[index] = value``; the gradient of the overwritten entries goes to
    ``value`` (summed over its broadcasting), the others to ``a``."""

    @staticmethod
    def forward(ctx, a, value, index):
        ctx.index, ctx.value_shape = index, np.shape(value)
        out = np.array(a, copy=True)
        out[index] = value
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_a = grad_value = None
        if ctx.needs_input_grad[0]:
            grad_a = np.array(grad, copy=True)
            grad_a[ctx.index] = 0
        if ctx.needs_input_grad[1]:
            grad_value = unbroadcast(np.asarray(grad[ctx.index]), ctx.value_shape)
        return grad_a, grad_value, None


class TakeAlongDim(Function):
    """``a``'s values at ``index`` along ``dim`` (``index`` has ``a``'s ndim and, along
    ``dim``, distinct positions per slice); the gradient goes back to those positions."""

    @staticmethod
    def forward(ctx, a, index, dim, keepdim):
        ctx.shape, ctx.dtype, ctx.index, ctx.dim, ctx.keepdim = a.shape, a.dtype, index, dim, \
            keepdim
        values = np.take_along_axis(a, index, axis=dim)
        return values if keepdim else np.squeeze(values, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        full = np.zeros(ctx.shape, dtype=ctx.dtype)
        values = grad if ctx.keepdim else np.expand_dims(grad, ctx.dim)
        np.put_along_axis(full, ctx.index, values, axis=ctx.dim)
        return full, None, None, None


class Concatenate(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        ctx.sizes = [a.shape[dim] for a in arrays]
        return np.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        splits = np.cumsum(ctx.sizes)[:-1]
        return (None,) + tuple(np.split(grad, splits, axis=ctx.dim))


# What sort/topk return, as torch.return_types.*
ReturnTypes = {name: namedtuple(name, ["values", "indices"])
               for name in ("max", "min", "sort", "topk", "kthvalue", "mode")}


# ------------------------------------------------------------------- helpers
def _sizes(op, sizes):
    """``(2, 3)``, ``[2, 3]`` or ``2, 3`` as a tuple of ints."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = sizes[0]
    result = []
    for size in sizes:
        if isinstance(size, Tensor) and size.numel() == 1:
            size = size.item()
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError("%s: sizes must be ints, got %r" % (op, size))
        result.append(int(size))
    return tuple(result)


def normalize_index(index):
    """``index`` with Tensors replaced by their arrays, and ending in ``...`` where that
    keeps an integer index returning a 0-d view instead of a NumPy scalar copy."""
    if isinstance(index, Tensor):
        index = index._data
    if isinstance(index, tuple):
        index = tuple(i._data if isinstance(i, Tensor) else i for i in index)
    elif isinstance(index, list):
        index = [i._data if isinstance(i, Tensor) else i for i in index]
    if isinstance(index, tuple):
        if not any(i is Ellipsis for i in index):
            return index + (Ellipsis,)
        return index
    if index is Ellipsis:
        return (index,)
    return (index, Ellipsis)


def _bad_shape(shape, size):
    return RuntimeError("shape '%s' is invalid for input of size %d" % (list(shape), size))


# ------------------------------------------------------------------- methods
@tensor_method
def reshape(self, *shape):
    """This tensor with a new shape (one entry may be -1).

    Raises
    ------
    RuntimeError
        If the sizes do not multiply to the number of elements.
    """
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if not all(type(n) is int for n in shape):
        shape = _sizes("reshape", shape)
    if shape == self._data.shape:
        return self
    try:
        return Reshape.apply(self, shape)   # NumPy checks the sizes (before anything records)
    except ValueError:
        raise _bad_shape(shape, self._data.size) from None


view = tensor_method(name="view")(reshape)


@tensor_method
def view_as(self, other):
    return self.reshape(other.shape)


@tensor_method
def reshape_as(self, other):
    return self.reshape(other.shape)


@tensor_method
def flatten(self, start_dim=0, end_dim=-1):
    """Dimensions ``start_dim`` to ``end_dim`` merged into one."""
    shape = self._data.shape
    if self._data.ndim == 0:
        return self.reshape(1)
    start = normalize_dim(start_dim, len(shape), "flatten")
    end = normalize_dim(end_dim, len(shape), "flatten")
    if start > end:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    merged = math.prod(shape[start:end + 1])
    return self.reshape(shape[:start] + (merged,) + shape[end + 1:])


@tensor_method
def unflatten(self, dim, sizes):
    """Dimension ``dim`` split into ``sizes`` (one may be -1)."""
    shape = self._data.shape
    dim = normalize_dim(dim, len(shape), "unflatten")
    sizes = _sizes("unflatten", (sizes,))
    known = math.prod(n for n in sizes if n != -1)
    if -1 in sizes:
        sizes = tuple(shape[dim] // known if n == -1 else n for n in sizes)
    if math.prod(sizes) != shape[dim]:
        raise RuntimeError("unflatten: sizes %s don't multiply up to the size of dim %d (%d)"
                           % (list(sizes), dim, shape[dim]))
    return self.reshape(shape[:dim] + sizes + shape[dim + 1:])


@tensor_method
def squeeze(self, dim=None):
    """Dimensions of size 1 removed: all, or those of ``dim`` (an int or a tuple)."""
    shape = self._data.shape
    if dim is None:
        dims = {i for i, n in enumerate(shape) if n == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        dims = {normalize_dim(d, len(shape), "squeeze") for d in dims}
        dims = {d for d in dims if d < len(shape) and shape[d] == 1}
    if not dims:
        return self
    return Reshape.apply(self, tuple(n for i, n in enumerate(shape) if i not in dims))


@tensor_method
def unsqueeze(self, dim):
    """A new dimension of size 1 at ``dim`` (in ``[-ndim - 1, ndim]``)."""
    shape = self._data.shape
    dim = normalize_dim(dim, len(shape) + 1, "unsqueeze")
    return Reshape.apply(self, shape[:dim] + (1,) + shape[dim:])


@tensor_method
def permute(self, *dims):
    """Dimensions reordered: output dimension i is input dimension ``dims[i]``."""
    dims = _sizes("permute", dims)
    ndim = self._data.ndim
    if len(dims) != ndim:
        raise RuntimeError("permute: number of dims don't match: the tensor has %d dimensions "
                           "but %d were given" % (ndim, len(dims)))
    dims = tuple(normalize_dim(d, ndim, "permute") for d in dims)
    if len(set(dims)) != ndim:
        raise RuntimeError("permute: repeated dim in %s" % (list(dims),))
    return Permute.apply(self, dims)


@tensor_method
def transpose(self, dim0=-2, dim1=-1):
    """Dimensions ``dim0`` and ``dim1`` swapped."""
    ndim = self._data.ndim
    if ndim < 2 and (dim0, dim1) == (-2, -1):
        return self
    dims = list(range(ndim))
    first, second = normalize_dim(dim0, ndim, "transpose"), normalize_dim(dim1, ndim, "transpose")
    if ndim < 2 or first == second:
        return self
    dims[first], dims[second] = dims[second], dims[first]
    return Permute.apply(self, tuple(dims))


swapaxes = tensor_method(name="swapaxes")(transpose)


@tensor_method
def t(self):
    """The transpose of a matrix (0-d and 1-D tensors are returned as they are)."""
    if self._data.ndim > 2:
        raise RuntimeError("t() expects a tensor with <= 2 dimensions, but self is %dD"
                           % self._data.ndim)
    return self.transpose(0, 1) if self._data.ndim == 2 else self


def _reversed_dims(self):
    """The dimensions reversed (a matrix transposed)."""
    if self._data.ndim < 2:
        return self
    return Permute.apply(self, tuple(reversed(range(self._data.ndim))))


Tensor.T = property(_reversed_dims)


@tensor_method
def expand(self, *sizes):
    """A broadcast view with ``sizes`` (-1 keeps a dimension; new ones go in front).

    Raises
    ------
    RuntimeError
        Expanding a dimension whose size is not 1.
    """
    sizes = _sizes("expand", sizes)
    shape = self._data.shape
    if len(sizes) < len(shape):
        raise RuntimeError("expand: the number of sizes provided (%d) must be greater or equal "
                           "to the number of dimensions in the tensor (%d)"
                           % (len(sizes), len(shape)))
    offset = len(sizes) - len(shape)
    target = []
    for i, size in enumerate(sizes):
        current = shape[i - offset] if i >= offset else None
        if size == -1:
            if current is None:
                raise RuntimeError("expand: -1 is not allowed in a leading, non-existing "
                                   "dimension %d" % i)
            size = current
        elif current is not None and current != 1 and current != size:
            raise RuntimeError("The expanded size of the tensor (%d) must match the existing "
                               "size (%d) at non-singleton dimension %d.  Target sizes: %s.  "
                               "Tensor sizes: %s" % (size, current, i, list(sizes),
                                                      list(shape)))
        target.append(size)
    if tuple(target) == shape:
        return self
    return Expand.apply(self, tuple(target))


@tensor_method
def expand_as(self, other):
    return self.expand(other.shape)


@tensor_method
def repeat(self, *repeats):
    """This tensor tiled ``repeats`` times along each dimension (new ones in front)."""
    repeats = _sizes("repeat", repeats)
    if len(repeats) < self._data.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than "
                           "number of dimensions of tensor")
    if any(r < 0 for r in repeats):
        raise RuntimeError("repeat: repeats must be non-negative, got %s" % (list(repeats),))
    return Repeat.apply(self, repeats)


@tensor_method
def flip(self, *dims):
    """The entries in reverse order along ``dims``."""
    dims = _sizes("flip", dims)
    dims = tuple(normalize_dim(d, self._data.ndim, "flip") for d in dims)
    return Flip.apply(self, dims)


@tensor_method
def __getitem__(self, index):
    return GetItem.apply(self, normalize_index(index))


@tensor_method
def narrow(self, dim, start, length):
    """Entries ``start`` to ``start + length`` along ``dim`` (a view)."""
    dim = normalize_dim(dim, self._data.ndim, "narrow")
    size = self._data.shape[dim]
    start = start + size if start < 0 else start
    if not (0 <= start and length >= 0 and start + length <= size):
        raise RuntimeError("narrow: start (%d) + length (%d) exceeds dimension size (%d)"
                           % (start, length, size))
    return self[(slice(None),) * dim + (slice(start, start + length),)]


@tensor_method
def select(self, dim, index):
    """The slice at ``index`` along ``dim``, that dimension removed."""
    dim = normalize_dim(dim, self._data.ndim, "select")
    return self[(slice(None),) * dim + (index,)]


def _index_array(op, index):
    array = np.asarray(index._data if isinstance(index, Tensor) else index)
    if array.dtype.kind not in "iu":
        raise RuntimeError("%s(): Expected dtype int64 for index, got %s" % (op, array.dtype))
    return array


@tensor_method
def index_select(self, dim, index):
    """The entries at ``index`` (a 1-D integer tensor) along ``dim``."""
    dim = normalize_dim(dim, self._data.ndim, "index_select")
    array = _index_array("index_select", index)
    if array.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    return GetItem.apply(self, (slice(None),) * dim + (array.reshape(-1), Ellipsis))


def gather_index(op, shape, dim, index):
    """The NumPy index selecting ``index``'s entries along ``dim`` (torch's gather)."""
    array = _index_array(op, index)
    if array.ndim != len(shape):
        raise RuntimeError("%s(): Index tensor must have the same number of dimensions as "
                           "input tensor" % op)
    for d, (n_index, n_input) in enumerate(zip(array.shape, shape)):
        if d != dim and n_index > n_input:
            raise RuntimeError("%s(): Size does not match at dimension %d expected index %s "
                               "to be no larger than self %s apart from dimension %d"
                               % (op, d, list(array.shape), list(shape), dim))
    if array.size and (array.min() < -shape[dim] or array.max() >= shape[dim]):
        raise RuntimeError("%s(): index out of range for dimension %d of size %d"
                           % (op, dim, shape[dim]))
    positions = list(np.indices(array.shape, sparse=True))
    positions[dim] = array
    return tuple(positions)


@tensor_method
def gather(self, dim, index):
    """``out[i][j][k] = self[index[i][j][k]][j][k]`` for dim 0 (and so on), as torch."""
    dim = normalize_dim(dim, self._data.ndim, "gather")
    return GetItem.apply(self, gather_index("gather", self._data.shape, dim, index))


# ------------------------------------------------------ joining and splitting
@tensor_method
def split(self, split_size_or_sections, dim=0):
    """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the
    given sizes, which must add up to the dimension's size."""
    dim = normalize_dim(dim, self._data.ndim, "split")
    size = self._data.shape[dim]
    if isinstance(split_size_or_sections, (list, tuple)):
        sections = _sizes("split", (split_size_or_sections,))
        if sum(sections) != size or any(n < 0 for n in sections):
            raise RuntimeError("split_with_sizes expects split_sizes to sum exactly to %d "
                               "(input tensor's size at dimension %d), but got split_sizes=%s"
                               % (size, dim, list(sections)))
    else:
        step = _sizes("split", (split_size_or_sections,))[0]
        if step <= 0 and size:
            raise RuntimeError("split expects split_size be positive, got %d" % step)
        sections = [min(step, size - start) for start in range(0, size, step)] if size else [0]
    pieces = []
    start = 0
    for length in sections:
        pieces.append(self[(slice(None),) * dim + (slice(start, start + length),)])
        start += length
    return tuple(pieces)


@tensor_method
def chunk(self, chunks, dim=0):
    """At most ``chunks`` pieces of equal size (ceil(n / chunks)) along ``dim``."""
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)):
        raise TypeError("chunk: chunks must be an int, got %s" % type(chunks).__name__)
    if chunks <= 0:
        raise RuntimeError("chunk expects `chunks` to be greater than 0, got: %d" % chunks)
    dim = normalize_dim(dim, self._data.ndim, "chunk")
    size = self._data.shape[dim]
    return self.split(max(-(-size // chunks), 1), dim)


@tensor_method
def unbind(self, dim=0):
    """The slices along ``dim``, that dimension removed."""
    dim = normalize_dim(dim, self._data.ndim, "unbind")
    return tuple(self.select(dim, i) for i in range(self._data.shape[dim]))


def _tensor_list(op, tensors):
    if isinstance(tensors, (Tensor, np.ndarray)):
        raise TypeError("%s(): argument 'tensors' must be a tuple or list of Tensors, got %s"
                        % (op, type(tensors).__name__))
    tensors = list(tensors)
    if not tensors:
        if op == "cat":
            raise ValueError("cat(): expected a non-empty list of Tensors")
        raise RuntimeError("%s expects a non-empty TensorList" % op)
    return list(tensors)


def cat(tensors, dim=0):
    """Concatenate tensors along ``dim`` (differentiable, as ``torch.cat``).

    Raises
    ------
    RuntimeError
        For an empty list, or shapes that differ outside ``dim``.
    IndexError
        For ``dim`` out of range.
    """
    tensors = _tensor_list("cat", tensors)
    shapes = [np.shape(t._data if isinstance(t, Tensor) else t) for t in tensors]
    ndim = len(shapes[0])
    axis = normalize_dim(dim, ndim, "cat")
    for number, shape in enumerate(shapes[1:], 1):
        if len(shape) != ndim:
            raise RuntimeError("Tensors must have same number of dimensions: got %d and %d"
                               % (ndim, len(shape)))
        for d in range(ndim):
            if d != axis and shape[d] != shapes[0][d]:
                raise RuntimeError("Sizes of tensors must match except in dimension %d. "
                                   "Expected size %d but got size %d for tensor number %d in "
                                   "the list." % (axis, shapes[0][d], shape[d], number))
    return Concatenate.apply(axis, *tensors)


def stack(tensors, dim=0):
    """Stack equally shaped tensors along a new dimension ``dim``."""
    tensors = _tensor_list("stack", tensors)
    shapes = [np.shape(t._data if isinstance(t, Tensor) else t) for t in tensors]
    for number, shape in enumerate(shapes[1:], 1):
        if shape != shapes[0]:
            raise RuntimeError("stack expects each tensor to be equal size, but got %s at "
                               "entry 0 and %s at entry %d" % (list(shapes[0]), list(shape),
                                                                number))
    axis = normalize_dim(dim, len(shapes[0]) + 1, "stack")
    expanded = [t.unsqueeze(axis) if isinstance(t, Tensor) else np.expand_dims(t, axis)
                for t in tensors]
    return Concatenate.apply(axis, *expanded)

