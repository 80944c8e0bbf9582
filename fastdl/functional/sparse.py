"""Lookup tables and encodings: ``embedding`` and ``one_hot``, as torch's."""
import numbers

import numpy as np

from fastdl.autograd import Function, Tensor
from fastdl.functional._util import as_tensor, check_float, data_of

__all__ = ["embedding", "one_hot"]


def _indices(op, input):
    indices = data_of(input)
    if indices.dtype.kind not in "iu":
        raise TypeError("%s: Expected tensor for argument #1 'indices' to have one of the "
                        "following scalar types: Long, Int; but got %s instead"
                        % (op, indices.dtype))
    return indices


class Embedding(Function):
    @staticmethod
    def forward(ctx, weight, indices, padding_idx, scale_grad_by_freq):
        ctx.save_for_backward(indices)
        ctx.num_embeddings = weight.shape[0]
        ctx.padding_idx, ctx.scale_grad_by_freq = padding_idx, scale_grad_by_freq
        return weight[indices]

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        flat = indices.reshape(-1)
        rows = grad.reshape(flat.size, -1)
        if ctx.scale_grad_by_freq:
            counts = np.bincount(flat, minlength=ctx.num_embeddings)
            rows = rows / counts[flat][:, None]
        grad_weight = np.zeros((ctx.num_embeddings, rows.shape[1]), dtype=grad.dtype)
        np.add.at(grad_weight, flat, rows)
        if ctx.padding_idx is not None:
            grad_weight[ctx.padding_idx] = 0   # the padding row never learns
        return grad_weight, None, None, None


def _renorm_(weight, indices, max_norm, norm_type):
    """torch's ``max_norm``: rows looked up whose norm exceeds it are rescaled in place."""
    rows = np.unique(indices)
    norms = np.linalg.norm(weight[rows].astype(np.float64), ord=norm_type, axis=1)
    over = norms > max_norm
    scale = max_norm / (norms[over] + 1e-7)
    weight[rows[over]] = (weight[rows[over]] * scale[:, None]).astype(weight.dtype)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """Rows of ``weight`` at the integer ``input``: ``weight[input]``.

    Parameters
    ----------
    input : integer Tensor (any shape)
    weight : Tensor (num_embeddings, embedding_dim)
    padding_idx : int, optional
        That row gets no gradient (negative counts from the end).
    max_norm : float, optional
        Rows looked up are first rescaled in place to norm at most ``max_norm``.
    scale_grad_by_freq : bool
        Divide each row's gradient by its count in ``input``.

    Returns
    -------
    Tensor (*input.shape, embedding_dim)

    Raises
    ------
    IndexError
        An index outside ``[0, num_embeddings)``.
    """
    indices = _indices("embedding", input)
    table = check_float("embedding", "weight", weight)
    if table.ndim != 2:
        raise ValueError("embedding: weight must be 2-D, got shape %s" % (table.shape,))
    if sparse:
        raise NotImplementedError("embedding: sparse gradients are not supported")
    size = table.shape[0]
    if padding_idx is not None:
        if not -size <= padding_idx < size:
            raise ValueError("embedding: Padding_idx must be within num_embeddings")
        padding_idx = int(padding_idx) % size
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        raise IndexError("embedding: index out of range in self (indices must be in [0, %d), "
                         "got %d..%d)" % (size, indices.min(), indices.max()))
    indices = indices.astype(np.int64, copy=False)
    if max_norm is not None:
        _renorm_(table, indices, float(max_norm), norm_type)
    return Embedding.apply(as_tensor(weight), indices, padding_idx, bool(scale_grad_by_freq))


def one_hot(tensor, num_classes=-1):
    """``(*) -> (*, num_classes)`` int64 one-hot encoding; -1: ``max + 1`` classes.

    Raises
    ------
    RuntimeError
        A negative class, a class ``>= num_classes``, or a non-integer input.
    """
    labels = data_of(tensor)
    if labels.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensor, got %s" % labels.dtype)
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool):
        raise TypeError("one_hot: num_classes must be an int, got %r" % (num_classes,))
    if labels.size and labels.min() < 0:
        raise RuntimeError("Class values must be non-negative.")
    if num_classes == -1:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    elif labels.size and labels.max() >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    out = np.zeros(labels.shape + (int(num_classes),), dtype=np.int64)
    np.put_along_axis(out, labels[..., None].astype(np.int64), 1, axis=-1)
    return Tensor(out)
