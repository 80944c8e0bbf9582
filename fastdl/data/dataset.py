"""Datasets, as ``torch.utils.data``'s: map-style and iterable, their views and splits.

A map-style dataset's ``__getitem__(i)`` returns one sample: any nesting of
tuples, lists, dicts, arrays, numbers and Tensors, which the DataLoader's
collate function stacks into batches. A dataset that can also be indexed by
an int64 index *array*, returning the whole batch at once (``TensorDataset``,
and ``Subset`` of one), sets ``supports_batch_indexing``: the DataLoader then
batches it by fancy indexing, with no per-sample Python work.
"""
import bisect
import itertools
import math
import warnings

import numpy as np

from fastdl.data._common import as_array, as_tensor, is_integer, numpy_generator


class Dataset:
    """Base of map-style datasets: ``__getitem__(index)`` returns one sample.

    Subclasses define ``__getitem__`` and, for the DataLoader's samplers,
    ``__len__``. ``a + b`` is ``ConcatDataset([a, b])``.
    """

    supports_batch_indexing = False

    def __getitem__(self, index):
        raise NotImplementedError("Dataset subclasses define __getitem__")  # abstract

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """Base of datasets read as a stream: ``__iter__`` yields samples.

    Under a DataLoader with workers each worker iterates its own copy; use
    :func:`fastdl.data.get_worker_info` in ``__iter__`` to give each a shard.
    ``a + b`` is ``ChainDataset([a, b])``.
    """

    def __iter__(self):
        raise NotImplementedError("IterableDataset subclasses define __iter__")  # abstract

    def __add__(self, other):
        return ChainDataset([self, other])


class TensorDataset(Dataset):
    """Tensors (or arrays) sharing their first dimension; sample ``i`` is their ``i``-th rows.

    Parameters
    ----------
    *tensors : Tensor or ndarray (N, ...)

    Notes
    -----
    ``ds[i]`` is a tuple of Tensors (0-d for a label); ``ds[index_array]`` (or
    a slice) is the tuple of batched Tensors, which the DataLoader uses.
    """

    supports_batch_indexing = True

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: needs at least one tensor")
        arrays = tuple(as_array(t) for t in tensors)
        if any(a.ndim == 0 for a in arrays):
            raise ValueError("TensorDataset: every tensor needs a first (sample) dimension, got "
                             "shapes %s" % [a.shape for a in arrays])
        if len({len(a) for a in arrays}) != 1:
            raise ValueError("TensorDataset: size mismatch between tensors: first dimensions %s"
                             % [len(a) for a in arrays])
        self.arrays = arrays

    @property
    def tensors(self):
        """The data as Tensors (sharing memory with ``arrays``)."""
        return tuple(as_tensor(a) for a in self.arrays)

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        if is_integer(index):
            return tuple(as_tensor(a[index, ...]) for a in self.arrays)
        return tuple(as_tensor(a[index]) for a in self.arrays)

    @property
    def targets(self):
        """The last array (the labels, by convention)."""
        return self.arrays[-1]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (in that order).

    Parameters
    ----------
    dataset : Dataset
    indices : sequence of int
    """

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)

    @property
    def supports_batch_indexing(self):
        return getattr(self.dataset, "supports_batch_indexing", False)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        if is_integer(index):
            return self.dataset[int(self.indices[index])]
        if isinstance(index, list):
            return self.dataset[[int(self.indices[i]) for i in index]]
        return self.dataset[self.indices[index]]

    @property
    def targets(self):
        """The underlying dataset's targets at ``indices``."""
        return np.asarray(self.dataset.targets)[self.indices]


class ConcatDataset(Dataset):
    """Map-style datasets one after another.

    Parameters
    ----------
    datasets : iterable of Dataset
        Not empty; no IterableDataset (chain those with ChainDataset).
    """

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        if any(isinstance(d, IterableDataset) for d in self.datasets):
            raise ValueError("ConcatDataset does not support IterableDataset (use ChainDataset)")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        if not is_integer(index):
            raise TypeError("ConcatDataset: index must be an int, got %s" % type(index).__name__)
        length = len(self)
        if not -length <= index < length:
            raise IndexError("ConcatDataset: index %d is out of range for %d samples"
                             % (index, length))
        index = int(index) % length
        part = bisect.bisect_right(self.cumulative_sizes, index)
        offset = self.cumulative_sizes[part - 1] if part else 0
        return self.datasets[part][index - offset]


class ChainDataset(IterableDataset):
    """Iterable datasets one after another (the iterable form of ConcatDataset)."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not all(isinstance(d, IterableDataset) for d in self.datasets):
            raise ValueError("ChainDataset only supports IterableDataset")

    def __iter__(self):
        for dataset in self.datasets:
            yield from dataset

    def __len__(self):
        return sum(len(d) for d in self.datasets)


def random_split(dataset, lengths, generator=None):
    """Split ``dataset`` into non-overlapping random Subsets of the given lengths.

    Parameters
    ----------
    dataset : sized Dataset
    lengths : sequence of int or of float
        Lengths summing to ``len(dataset)``, or fractions summing to 1: each
        part gets ``floor(n * fraction)`` samples and the remainder is dealt
        one by one to the parts in order (as torch's).
    generator : None, int or numpy.random.Generator
        Draws the permutation; None: fastdl's global generator.

    Returns
    -------
    list of Subset

    Raises
    ------
    ValueError
        A fraction outside [0, 1], or lengths that do not add up.
    """
    lengths = list(lengths)
    total = sum(lengths)
    n = len(dataset)
    if math.isclose(total, 1) and total <= 1:
        lengths = _lengths_from_fractions(lengths, n)
    if any(not is_integer(length) or length < 0 for length in lengths):
        raise ValueError("random_split: lengths must be non-negative ints or fractions summing "
                         "to 1, got %s" % (lengths,))
    if sum(lengths) != n:
        raise ValueError("random_split: sum of input lengths (%d) does not equal the length of "
                         "the input dataset (%d)" % (sum(lengths), n))
    order = numpy_generator(generator).permutation(n)
    ends = list(itertools.accumulate(lengths))
    return [Subset(dataset, order[end - length:end]) for end, length in zip(ends, lengths)]


def _lengths_from_fractions(fractions, n):
    lengths = []
    for position, fraction in enumerate(fractions):
        if not 0 <= fraction <= 1:
            raise ValueError("random_split: fraction at index %d is not between 0 and 1 (got %r)"
                             % (position, fraction))
        lengths.append(math.floor(n * fraction))
    for position in range(n - sum(lengths)):
        lengths[position % len(lengths)] += 1
    for position, length in enumerate(lengths):
        if length == 0:
            warnings.warn("random_split: length of split at index %d is 0; this might result "
                          "in an empty dataset" % position, stacklevel=3)
    return lengths
