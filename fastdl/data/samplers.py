"""Samplers: which indices an epoch visits, in what order, and how classes are rebalanced.

As ``torch.utils.data``'s, a sampler is an iterable of dataset indices with a
``len``. fastdl's samplers also have ``indices(epoch=None, seed=None)``, the
whole order as an int64 array: with a ``seed`` it is drawn from ``(seed,
epoch)``, so the DataLoader replays an epoch exactly after a resume; without
one (plain iteration) it comes from the sampler's ``generator``, or fastdl's
global generator (seeded by ``fastdl.manual_seed``).
"""
import numpy as np

from fastdl.data._common import is_integer, numpy_generator


class Sampler:
    """Base class: ``__iter__`` over dataset indices (and ``__len__``)."""

    def __init__(self, data_source=None):
        self.data_source = data_source

    def __iter__(self):
        raise NotImplementedError("Sampler subclasses define __iter__")  # abstract


class _OrderSampler(Sampler):
    """A sampler whose order is one array, ``indices(epoch, seed)``."""

    generator = None

    def _rng(self, epoch, seed):
        if self.generator is None and seed is not None:
            return np.random.default_rng([int(seed), int(epoch or 0)])
        return numpy_generator(self.generator)

    def __iter__(self):
        return iter(self.indices().tolist())


def _dataset_length(data_source, name):
    if is_integer(data_source):
        return int(data_source)
    try:
        return len(data_source)
    except TypeError:
        raise TypeError("%s: data_source must be a sized dataset or an int, got %s"
                        % (name, type(data_source).__name__)) from None


def _check_num_samples(num_samples):
    if not is_integer(num_samples) or num_samples <= 0:
        raise ValueError("num_samples should be a positive integer value, but got "
                         "num_samples=%r" % (num_samples,))
    return int(num_samples)


def _check_replacement(replacement):
    if not isinstance(replacement, bool):
        raise TypeError("replacement should be a boolean value, but got replacement=%r"
                        % (replacement,))
    return replacement


class SequentialSampler(_OrderSampler):
    """0, 1, …, n−1.

    Parameters
    ----------
    data_source : sized dataset or int (its length)
    """

    def __init__(self, data_source):
        super().__init__(data_source)
        self.n = _dataset_length(data_source, "SequentialSampler")

    def indices(self, epoch=None, seed=None):
        return np.arange(self.n)

    def __len__(self):
        return self.n


class RandomSampler(_OrderSampler):
    """A random order of the dataset: a fresh permutation (or draw) every epoch.

    Parameters
    ----------
    data_source : sized dataset or int (its length)
    replacement : bool
        Draw with replacement.
    num_samples : int, optional
        Indices per epoch (default ``len(data_source)``); more than that
        without replacement chains several permutations, as torch's.
    generator : None, int or numpy.random.Generator
        Overrides the DataLoader's seed when given.
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        super().__init__(data_source)
        self.n = _dataset_length(data_source, "RandomSampler")
        self.replacement = _check_replacement(replacement)
        self._num_samples = None if num_samples is None else _check_num_samples(num_samples)
        self.generator = generator

    @property
    def num_samples(self):
        return self.n if self._num_samples is None else self._num_samples

    def indices(self, epoch=None, seed=None):
        rng = self._rng(epoch, seed)
        count = self.num_samples
        if self.replacement:
            return rng.integers(0, self.n, size=count) if self.n else np.arange(0)
        if self.n == 0:
            return np.arange(0)
        parts = [rng.permutation(self.n) for _ in range(count // self.n)]
        if count % self.n:
            parts.append(rng.permutation(self.n)[:count % self.n])
        return np.concatenate(parts)

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a random order, a fresh one every epoch.

    Parameters
    ----------
    indices : sequence of int
    generator : None, int or numpy.random.Generator
    """

    def __init__(self, indices, generator=None):
        super().__init__()
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.generator = generator

    def __iter__(self):
        order = numpy_generator(self.generator).permutation(len(self.indices))
        return iter(self.indices[order].tolist())

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(_OrderSampler):
    """``num_samples`` indices drawn with probability proportional to ``weights``.

    Parameters
    ----------
    weights : array (N,) of finite non-negative numbers, not all zero
    num_samples : int
    replacement : bool
        Without replacement an index is drawn at most once per epoch.
    generator : None, int or numpy.random.Generator

    Raises
    ------
    ValueError
        Bad weights, or more samples than non-zero weights without replacement.
    """

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        super().__init__()
        num_samples = _check_num_samples(num_samples)
        replacement = _check_replacement(replacement)
        weights = np.asarray(getattr(weights, "data", weights), dtype=np.float64)
        if weights.ndim != 1:
            raise ValueError("WeightedRandomSampler: weights should be a 1d sequence but given "
                             "weights have shape %s" % (weights.shape,))
        if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError("WeightedRandomSampler: weights must be a 1-D array of finite "
                             "non-negative numbers with a positive sum")
        if not replacement and num_samples > np.count_nonzero(weights):
            raise ValueError("WeightedRandomSampler: cannot draw %d samples without "
                             "replacement from %d non-zero weights"
                             % (num_samples, np.count_nonzero(weights)))
        self.weights = weights
        self.probabilities = weights / weights.sum()
        self.num_samples, self.replacement = num_samples, replacement
        self.generator = generator

    def indices(self, epoch=None, seed=None):
        rng = self._rng(epoch, seed)
        return rng.choice(len(self.probabilities), self.num_samples, self.replacement,
                          self.probabilities)

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Group a sampler's indices into lists of ``batch_size``.

    Parameters
    ----------
    sampler : iterable of indices
    batch_size : int > 0
    drop_last : bool
        Drop the last, short batch.
    """

    def __init__(self, sampler, batch_size, drop_last):
        super().__init__()
        if not is_integer(batch_size) or batch_size <= 0:
            raise ValueError("batch_size should be a positive integer value, but got "
                             "batch_size=%r" % (batch_size,))
        if not isinstance(drop_last, bool):
            raise ValueError("drop_last should be a boolean value, but got drop_last=%r"
                             % (drop_last,))
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), drop_last

    def batches(self, epoch=None, seed=None):
        """The epoch's batches: int64 arrays, or lists for a sampler of other keys."""
        order = epoch_order(self.sampler, epoch, seed)
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        return [order[start:start + self.batch_size]
                for start in range(0, stop, self.batch_size)]

    def __iter__(self):
        for batch in self.batches():
            yield batch.tolist() if isinstance(batch, np.ndarray) else list(batch)

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def epoch_order(sampler, epoch=None, seed=None):
    """A sampler's order for an epoch: ``sampler.indices(epoch, seed)`` when it has one.

    Returns
    -------
    int64 ndarray, or a list for a sampler yielding something else than ints
    """
    indices = getattr(sampler, "indices", None)
    if callable(indices):
        return np.asarray(indices(epoch, seed), dtype=np.int64)
    order = list(sampler)
    if all(is_integer(i) for i in order):
        return np.asarray(order, dtype=np.int64)
    return order


class ClassBalancedSampler(_OrderSampler):
    """Every class seen equally often per epoch, by over- or under-sampling.

    ``mode='oversample'`` draws each class up to the largest class's count
    (with replacement); ``'undersample'`` draws each down to the smallest.
    """

    def __init__(self, labels, mode="oversample"):
        super().__init__()
        if mode not in ("oversample", "undersample"):
            raise ValueError("ClassBalancedSampler: mode must be 'oversample' or "
                             "'undersample', got %r" % (mode,))
        labels = np.asarray(getattr(labels, "data", labels))
        self.groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        counts = [len(g) for g in self.groups]
        self.per_class = max(counts) if mode == "oversample" else min(counts)
        self.mode = mode

    def indices(self, epoch=None, seed=None):
        rng = self._rng(epoch, seed)
        replace = self.mode == "oversample"
        chosen = [group if len(group) == self.per_class else
                  rng.choice(group, self.per_class, replace=replace and len(group) <
                             self.per_class)
                  for group in self.groups]
        return rng.permutation(np.concatenate(chosen))

    def __len__(self):
        return self.per_class * len(self.groups)


def class_weights(labels, num_classes=None):
    """Inverse-frequency class weights ``n / (k * count_c)`` (scikit-learn's 'balanced').

    Classes absent from ``labels`` get weight 0.

    Returns
    -------
    ndarray (num_classes,), float64
    """
    labels = np.asarray(getattr(labels, "data", labels))
    if labels.size == 0:
        raise ValueError("class_weights: labels is empty")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = np.count_nonzero(counts)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, labels.size / (present * counts), 0.0)
    return weights
