"""DataLoader: whole batches by fancy indexing, reproducible per (seed, epoch)."""
import numpy as np

from fastdl.data.samplers import RandomSampler, SequentialSampler
from fastdl.random import default_generator


class DataLoader:
    """Iterate ``(x, y)`` batches of a dataset.

    Each epoch's order comes from ``sampler.indices(epoch, seed)``, so an epoch
    can be replayed exactly after a resume (``loader.epoch`` is checkpointed).

    Parameters
    ----------
    dataset : Dataset indexable by an index array
    batch_size : int
    shuffle : bool
        Use a RandomSampler (ignored when ``sampler`` is given).
    sampler : object with ``indices(epoch, seed)`` and ``__len__``, optional
    drop_last : bool
    seed : int, optional
        Seeds the shuffle and the transform's generator. None (default): a
        sampler's own ``seed`` when it has one (DistributedSampler's, the same
        on every rank); otherwise drawn once, at construction, from fastdl's
        global generator, so ``fastdl.manual_seed`` makes the order
        reproducible (as torch's), and each epoch still gets its own order. A
        loader that neither shuffles, samples nor transforms draws nothing.
    transform : callable ``(x_batch, rng) -> x_batch``, optional
        Applied to inputs only (augmentation), vectorised over the batch.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, drop_last=False,
                 seed=None, transform=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError("DataLoader: batch_size must be a positive int, got %r"
                             % (batch_size,))
        self.dataset, self.batch_size = dataset, int(batch_size)
        if sampler is None:
            sampler = RandomSampler(len(dataset)) if shuffle else SequentialSampler(
                len(dataset))
        self.sampler, self.drop_last = sampler, bool(drop_last)
        if seed is None:
            seed = getattr(sampler, "seed", None)
        if seed is None:
            random = transform is not None or not isinstance(sampler, SequentialSampler)
            seed = int(default_generator().integers(2 ** 63)) if random else 0
        self.seed, self.transform = int(seed), transform
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = np.asarray(self.sampler.indices(self.epoch, self.seed))
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        for start in range(0, stop, self.batch_size):
            batch = self.dataset[order[start:start + self.batch_size]]
            x = np.ascontiguousarray(batch[0], dtype=np.float32)
            if self.transform is not None:
                x = np.ascontiguousarray(self.transform(x, rng), dtype=np.float32)
            yield (x,) + tuple(batch[1:])
        self.epoch += 1
