"""Disjoint per-rank shards of a dataset, reshuffled every epoch from a shared seed."""
import math

import numpy as np

from fastdl.distributed.comm import get_group


class DistributedSampler:
    """Yield this rank's indices of a dataset, as ``torch.utils.data.DistributedSampler``.

    Every rank draws the same permutation (from ``seed + epoch``), pads it by
    repeating its head so that it divides evenly (or drops the tail with
    ``drop_last``), and takes every ``num_replicas``-th index from ``rank``:
    shards are disjoint and all ranks see the same number of batches.

    Parameters
    ----------
    dataset : sized object or int
        The dataset (anything with ``len``) or its length.
    num_replicas, rank : int, optional
        Default: the process group's size and rank.
    shuffle : bool
    seed : int
        Must be the same on every rank.
    drop_last : bool
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        group = get_group()
        self.num_replicas = group.size if num_replicas is None else int(num_replicas)
        self.rank = group.rank if rank is None else int(rank)
        if self.num_replicas < 1:
            raise ValueError("DistributedSampler: num_replicas must be >= 1, got %d"
                             % self.num_replicas)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError("DistributedSampler: rank must be in [0, %d), got %d"
                             % (self.num_replicas, self.rank))
        self.dataset_length = dataset if isinstance(dataset, int) else len(dataset)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.dataset_length // self.num_replicas
        else:
            self.num_samples = math.ceil(self.dataset_length / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        """Reshuffle for ``epoch`` (call it at the start of every epoch, on every rank)."""
        self.epoch = int(epoch)

    def indices(self, epoch=None, seed=None):
        """This rank's indices for ``epoch`` (default: the one set), as an int64 array.

        ``epoch`` and ``seed`` are the DataLoader's sampler protocol; the
        sampler's own seed (the same on every rank) is used when ``seed`` is None.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        seed = self.seed if seed is None else int(seed)
        if self.shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(self.dataset_length)
        else:
            order = np.arange(self.dataset_length)
        if self.total_size > len(order):
            repeats = math.ceil(self.total_size / max(len(order), 1))
            order = np.tile(order, repeats)
        order = order[:self.total_size]
        return order[self.rank::self.num_replicas].astype(np.int64)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples
