"""Datasets: indexable collections of (input, target) samples."""
import numpy as np


class Dataset:
    """Base class: ``__len__`` and ``__getitem__`` taking an index *array* (a whole batch).

    Batched indexing is what keeps the loader free of per-sample Python work.
    """

    def __len__(self):
        raise NotImplementedError("Dataset subclasses define __len__")  # abstract

    def __getitem__(self, indices):
        raise NotImplementedError("Dataset subclasses define __getitem__")  # abstract


class TensorDataset(Dataset):
    """Arrays sharing their first dimension; ``ds[idx]`` returns a tuple of batches.

    Parameters
    ----------
    *arrays : ndarray (N, ...)
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset: needs at least one array")
        arrays = tuple(np.asarray(getattr(a, "data", a)) for a in arrays)
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise ValueError("TensorDataset: arrays have different lengths %s"
                             % [len(a) for a in arrays])
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, indices):
        return tuple(a[indices] for a in self.arrays)

    @property
    def targets(self):
        """The last array (the labels, by convention)."""
        return self.arrays[-1]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, indices):
        return self.dataset[self.indices[indices]]

    @property
    def targets(self):
        return self.dataset.targets[self.indices]
