"""Fetching: one task (a batch's indices, or the next batch of a stream) -> the batch.

The same :class:`Fetcher` runs in the loader's process and in worker processes,
so a batch does not depend on which process made it or on the worker count.
"""
import itertools

import numpy as np

from fastdl.data._common import as_array, as_tensor, is_tensor
from fastdl.data.collate import default_collate


class Exhausted:
    """A worker's answer when its stream (an IterableDataset) has no further batch."""


class Fetcher:
    """Make batches of ``dataset``.

    Parameters
    ----------
    dataset : Dataset or IterableDataset
    auto_collation : bool
        Batch samples (False: ``batch_size=None``, each sample converted alone).
    collate_fn : callable
    batch_size : int or None
    drop_last : bool
    transform : callable ``(x_batch ndarray, rng) -> x_batch``, optional
        fastdl's batch augmentation of the first field, with a generator drawn
        from ``(seed, epoch, batch number)``.
    seed : int
    iterable : bool
        ``dataset`` is read as a stream.
    """

    def __init__(self, dataset, auto_collation, collate_fn, batch_size, drop_last, transform,
                 seed, iterable):
        self.dataset, self.auto_collation, self.collate_fn = dataset, auto_collation, collate_fn
        self.batch_size, self.drop_last = batch_size, drop_last
        self.transform, self.seed, self.iterable = transform, seed, iterable
        # Whole batches by fancy indexing: what default_collate would build, without
        # a Python call per sample.
        self.fast = (auto_collation and collate_fn is default_collate and not iterable
                     and getattr(dataset, "supports_batch_indexing", False))

    def map_batch(self, number, indices, epoch):
        """The batch of map-style samples at ``indices`` (one index without auto-collation)."""
        if not self.auto_collation:
            return self.collate_fn(self.dataset[indices])
        if self.fast:
            fields = self.dataset[np.asarray(indices, dtype=np.int64)]
            if isinstance(fields, tuple):
                batch = [as_tensor(field) for field in fields]
            else:
                batch = as_tensor(fields)
        else:
            batch = self.collate_fn([self.dataset[i] for i in indices])
        return self._augment(batch, number, epoch)

    def next_batch(self, iterator, number, epoch):
        """The next batch of a stream, or an :class:`Exhausted`."""
        if not self.auto_collation:
            sample = next(iterator, Exhausted)
            return Exhausted() if sample is Exhausted else self.collate_fn(sample)
        samples = list(itertools.islice(iterator, self.batch_size))
        if not samples or (self.drop_last and len(samples) < self.batch_size):
            return Exhausted()
        return self._augment(self.collate_fn(samples), number, epoch)

    def _augment(self, batch, number, epoch):
        if self.transform is None:
            return batch
        rng = np.random.default_rng([self.seed, epoch, 1, number])
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        x = np.ascontiguousarray(as_array(first), dtype=np.float32)
        x = np.ascontiguousarray(as_array(self.transform(x, rng)), dtype=np.float32)
        x = as_tensor(x) if is_tensor(first) else x
        if isinstance(batch, (list, tuple)):
            return type(batch)([x] + list(batch[1:]))
        return x
