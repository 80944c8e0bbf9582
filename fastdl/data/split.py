"""Splits: stratified train/validation/test and k-fold cross-validation indices."""
import numpy as np

from fastdl._checks import is_int


def _check_k(k, n):
    if not is_int(k) or not 2 <= k <= n:
        raise ValueError("kfold_split: k must be an int in [2, n=%d], got %r" % (n, k))


def kfold_split(n, k, seed=0, stratify=None):
    """``k`` (train_indices, val_indices) pairs; every index is validated exactly once.

    Parameters
    ----------
    n : int
    k : int in [2, n]
    seed : int
    stratify : array (n,) of labels, optional
        Deal each class's shuffled indices round-robin to the folds, so every
        fold keeps the class proportions.

    Returns
    -------
    list of (ndarray, ndarray), int64
    """
    _check_k(k, n)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(n, dtype=np.int64)
    if stratify is None:
        order = rng.permutation(n)
        fold_of[order] = np.arange(n) % k
    else:
        labels = np.asarray(stratify)
        if labels.shape != (n,):
            raise ValueError("kfold_split: stratify must have shape (%d,), got %s"
                             % (n, labels.shape))
        offset = 0
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            fold_of[members] = (np.arange(len(members)) + offset) % k
            offset += len(members)
    everything = np.arange(n)
    return [(everything[fold_of != fold], everything[fold_of == fold]) for fold in range(k)]


def stratified_split(labels, fractions, seed=0):
    """Split indices into parts with the given ``fractions`` (summing to 1), per class.

    Returns
    -------
    list of int64 index arrays, one per fraction.
    """
    labels = np.asarray(labels)
    fractions = np.asarray(fractions, dtype=np.float64)
    if np.any(fractions <= 0) or abs(fractions.sum() - 1) > 1e-9:
        raise ValueError("stratified_split: fractions must be positive and sum to 1, got %s"
                         % (fractions,))
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts)):
            part.append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
