"""Collation: a list of samples -> one batch, as ``torch.utils.data.default_collate``.

Types map as in torch: Tensors and NumPy arrays are stacked into a Tensor with
a new first axis (dtype kept); Python ints become an int64 Tensor, floats a
float64 Tensor, bools a bool Tensor, NumPy scalars a Tensor of their dtype;
strings and bytes stay as they come (a list, or a tuple inside a tuple); dicts, namedtuples and lists are collated per
key or position (a tuple sample gives a list, as torch's).
"""
import collections.abc

import numpy as np

from fastdl.data._common import as_tensor, is_tensor

_ERROR = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or "
          "lists; found %s")


def _stack(arrays):
    first = arrays[0]
    for position, array in enumerate(arrays):
        if array.shape != first.shape:
            raise RuntimeError("stack expects each tensor to be equal size, but got %s at "
                               "entry 0 and %s at entry %d"
                               % (list(first.shape), list(array.shape), position))
    return as_tensor(np.stack(arrays))


def _is_text_or_object(dtype):
    return dtype.kind in "SaUO"


def default_collate(batch):
    """Merge a list of samples into a batch (see the module docstring for the types).

    Parameters
    ----------
    batch : list or tuple
        Samples of the same structure.

    Returns
    -------
    The batch: a Tensor, or the samples' structure with Tensors in it.

    Raises
    ------
    TypeError
        For elements of another type (or object/string arrays).
    RuntimeError
        For arrays or sequences of different sizes.
    """
    elem = batch[0]
    if is_tensor(elem):
        return _stack([sample.array for sample in batch])
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, np.ndarray):
        if _is_text_or_object(elem.dtype):
            raise TypeError(_ERROR % elem.dtype)
        return _stack([np.asarray(sample) for sample in batch])
    if isinstance(elem, np.generic):
        if _is_text_or_object(elem.dtype):
            raise TypeError(_ERROR % elem.dtype)
        return as_tensor(np.array(batch))
    if isinstance(elem, bool):
        return as_tensor(np.array(batch, dtype=np.bool_))
    if isinstance(elem, float):
        return as_tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, int):
        return as_tensor(np.array(batch, dtype=np.int64))
    if isinstance(elem, collections.abc.Mapping):
        collated = {key: default_collate([sample[key] for sample in batch]) for key in elem}
        try:
            return type(elem)(collated)
        except TypeError:   # a mapping type that cannot be built from a dict
            return collated
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):   # namedtuple
        return type(elem)(*(default_collate(field) for field in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        collated = [default_collate(field) for field in zip(*batch)]
        if isinstance(elem, tuple):
            return collated
        try:
            return type(elem)(collated)
        except TypeError:
            return collated
    raise TypeError(_ERROR % type(elem))


def default_convert(data):
    """Arrays and NumPy scalars -> Tensors, inside any nesting; the rest unchanged.

    The collate function of a DataLoader with ``batch_size=None`` (samples
    come out one by one, not batched).
    """
    if isinstance(data, np.ndarray):
        return data if _is_text_or_object(data.dtype) else as_tensor(data)
    if isinstance(data, np.generic):
        return data if _is_text_or_object(data.dtype) else as_tensor(np.asarray(data))
    if is_tensor(data) or isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        converted = {key: default_convert(value) for key, value in data.items()}
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(value) for value in data))
    if isinstance(data, tuple):
        return [default_convert(value) for value in data]
    if isinstance(data, collections.abc.Sequence):
        converted = [default_convert(value) for value in data]
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    return data
