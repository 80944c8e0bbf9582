"""Samplers: which indices an epoch visits, and how imbalanced classes are rebalanced."""
import numpy as np


class SequentialSampler:
    """0, 1, …, n−1."""

    def __init__(self, n):
        self.n = int(n)

    def indices(self, epoch, seed):
        return np.arange(self.n)

    def __len__(self):
        return self.n


class RandomSampler:
    """A fresh permutation every epoch, drawn from ``(seed, epoch)`` (reproducible, resumable)."""

    def __init__(self, n):
        self.n = int(n)

    def indices(self, epoch, seed):
        return np.random.default_rng([seed, epoch]).permutation(self.n)

    def __len__(self):
        return self.n


class WeightedRandomSampler:
    """``num_samples`` indices drawn with probability proportional to ``weights``.

    Parameters
    ----------
    weights : array (N,) of non-negative numbers, not all zero
    num_samples : int
    replacement : bool
    """

    def __init__(self, weights, num_samples, replacement=True):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or np.any(weights < 0) or not np.isfinite(weights).all() \
                or weights.sum() <= 0:
            raise ValueError("WeightedRandomSampler: weights must be a 1-D array of finite "
                             "non-negative numbers with a positive sum")
        if not replacement and num_samples > np.count_nonzero(weights):
            raise ValueError("WeightedRandomSampler: cannot draw %d samples without "
                             "replacement from %d non-zero weights"
                             % (num_samples, np.count_nonzero(weights)))
        self.probabilities = weights / weights.sum()
        self.num_samples, self.replacement = int(num_samples), bool(replacement)

    def indices(self, epoch, seed):
        rng = np.random.default_rng([seed, epoch])
        return rng.choice(len(self.probabilities), self.num_samples, self.replacement,
                          self.probabilities)

    def __len__(self):
        return self.num_samples


class ClassBalancedSampler:
    """Every class seen equally often per epoch, by over- or under-sampling.

    ``mode='oversample'`` draws each class up to the largest class's count
    (with replacement); ``'undersample'`` draws each down to the smallest.
    """

    def __init__(self, labels, mode="oversample"):
        if mode not in ("oversample", "undersample"):
            raise ValueError("ClassBalancedSampler: mode must be 'oversample' or "
                             "'undersample', got %r" % (mode,))
        labels = np.asarray(labels)
        self.groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        counts = [len(g) for g in self.groups]
        self.per_class = max(counts) if mode == "oversample" else min(counts)
        self.mode = mode

    def indices(self, epoch, seed):
        rng = np.random.default_rng([seed, epoch])
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
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("class_weights: labels is empty")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = np.count_nonzero(counts)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, labels.size / (present * counts), 0.0)
    return weights
