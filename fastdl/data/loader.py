"""DataLoader: batches of a dataset as Tensors, as ``torch.utils.data.DataLoader``.

Two fastdl additions, both for the Trainer: an epoch's order is drawn from
``(seed, epoch)`` (``set_epoch`` replays an epoch exactly after a resume), and
datasets that support batch indexing (``TensorDataset``, ``Subset`` of one)
are batched by fancy indexing rather than sample by sample.
"""
import numpy as np

from fastdl.data._common import is_integer, numpy_generator
from fastdl.data.collate import default_collate, default_convert
from fastdl.data.dataset import IterableDataset
from fastdl.data.fetch import Exhausted, Fetcher
from fastdl.data.samplers import BatchSampler, RandomSampler, SequentialSampler, epoch_order
from fastdl.data.workers import MultiProcessIterator, WorkerPool


class DataLoader:
    """Iterate batches of ``dataset``.

    Parameters
    ----------
    dataset : Dataset or IterableDataset
    batch_size : int or None
        Samples per batch; None turns batching off (each sample is converted
        alone with ``default_convert``).
    shuffle : bool, optional
        A new random order every epoch (a RandomSampler).
    sampler : iterable of indices with ``len``, optional
        The order (instead of ``shuffle``).
    batch_sampler : iterable of index lists, optional
        Whole batches (instead of ``batch_size``, ``shuffle``, ``sampler``,
        ``drop_last``).
    num_workers : int
        Worker processes fetching batches in parallel (0: in this process). Where
        they share the training threads' cores, ``OMP_WAIT_POLICY=passive`` in the
        environment keeps idle kernel threads from spinning on the cores the workers
        need (README, Threads).
    collate_fn : callable ``list of samples -> batch``, optional
        Default :func:`default_collate`.
    pin_memory : bool
        Accepted and ignored (CPU only), as ``pin_memory_device``.
    drop_last : bool
        Drop the last, short batch.
    timeout : float
        Seconds to wait for a worker's batch before raising (0: no limit).
    worker_init_fn : callable ``(worker_id) -> None``, optional
        Run in each worker after it is seeded.
    multiprocessing_context : str or context, optional
        Default: ``'fork'`` where the platform has it.
    generator : None, int or numpy.random.Generator
        Draws the loader's seed; None: fastdl's global generator.
    prefetch_factor : int, optional
        Batches in flight per worker (default 2; only with workers).
    persistent_workers : bool
        Keep the workers between epochs.
    in_order : bool
        Accepted; batches always come in sampler order.
    seed : int, optional
        Seeds the order (with the epoch) and the workers. None: a sampler's
        own ``seed`` (DistributedSampler's), else drawn once from
        ``generator``, so ``fastdl.manual_seed`` makes runs reproducible. A
        loader that neither shuffles, samples, transforms nor uses workers
        draws nothing.
    transform : callable ``(x_batch, rng) -> x_batch``, optional
        fastdl's batch augmentation of each batch's first field (float32),
        vectorised over the batch.
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False, pin_memory_device="",
                 in_order=True, seed=None, transform=None):
        _check_workers(num_workers, timeout, prefetch_factor, persistent_workers)
        self.dataset = dataset
        self._iterable = isinstance(dataset, IterableDataset)
        if batch_size is not None and (not is_integer(batch_size) or batch_size < 1):
            raise ValueError("DataLoader: batch_size must be a positive int or None, got %r"
                             % (batch_size,))
        if self._iterable and shuffle not in (None, False):
            raise ValueError("DataLoader with IterableDataset: expected unspecified shuffle "
                             "option, but got shuffle=%r" % (shuffle,))
        if self._iterable and (sampler is not None or batch_sampler is not None):
            raise ValueError("DataLoader with IterableDataset: expected unspecified sampler "
                             "and batch_sampler options")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None
                                          or drop_last):
            raise ValueError("DataLoader: batch_sampler option is mutually exclusive with "
                             "batch_size, shuffle, sampler, and drop_last")
        if batch_size is None and batch_sampler is None and drop_last:
            raise ValueError("DataLoader: batch_size=None option disables auto-batching and "
                             "is mutually exclusive with drop_last")
        if sampler is None and not self._iterable:
            sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        if batch_sampler is not None:
            batch_size, drop_last = None, False
        elif batch_size is not None and not self._iterable:
            batch_sampler = BatchSampler(sampler, batch_size, bool(drop_last))
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.batch_size, self.drop_last = batch_size, bool(drop_last)
        self._auto_collation = batch_sampler is not None or (self._iterable
                                                             and batch_size is not None)
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self.num_workers, self.timeout = int(num_workers), float(timeout)
        self.prefetch_factor = 2 if prefetch_factor is None and num_workers else prefetch_factor
        self.persistent_workers = bool(persistent_workers)
        self.worker_init_fn, self.multiprocessing_context = worker_init_fn, multiprocessing_context
        self.pin_memory, self.pin_memory_device = bool(pin_memory), pin_memory_device
        self.in_order, self.generator, self.transform = in_order, generator, transform
        self.seed = self._choose_seed(seed)
        self.epoch = 0
        self._pool = None

    def _choose_seed(self, seed):
        if seed is None:
            seed = getattr(self.sampler, "seed", None)
        if seed is None:
            random = (self.transform is not None or self.num_workers > 0
                      or not (self._iterable or isinstance(self.sampler, SequentialSampler)))
            seed = int(numpy_generator(self.generator).integers(2 ** 62)) if random else 0
        return int(seed)

    def set_epoch(self, epoch):
        """The epoch the next pass draws its order from."""
        self.epoch = int(epoch)

    def __len__(self):
        if self._iterable:
            n = len(self.dataset)   # TypeError for a stream without a length, as torch's
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return len(self.sampler)

    def _fetcher(self):
        return Fetcher(self.dataset, self._auto_collation, self.collate_fn, self.batch_size,
                       self.drop_last, self.transform, self.seed, self._iterable)

    def _tasks(self, epoch):
        """The epoch's index batches (single indices without auto-collation)."""
        if self.batch_sampler is None:
            return epoch_order(self.sampler, epoch, self.seed)
        batches = getattr(self.batch_sampler, "batches", None)
        if callable(batches):
            return batches(epoch, self.seed)
        return list(self.batch_sampler)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        tasks = None if self._iterable else self._tasks(epoch)
        if self.num_workers == 0:
            return self._single_process(epoch, tasks)
        pool = self._pool
        if pool is None or pool.closed:
            base_seed = int(np.random.default_rng([self.seed, epoch, 2]).integers(2 ** 62))
            pool = WorkerPool(self._fetcher(), self.num_workers, base_seed,
                              self.worker_init_fn, self.multiprocessing_context)
            if self.persistent_workers:
                self._pool = pool
        return MultiProcessIterator(self, epoch, pool, tasks)

    def _single_process(self, epoch, tasks):
        fetcher = self._fetcher()
        if tasks is not None:
            for number, indices in enumerate(tasks):
                yield fetcher.map_batch(number, indices, epoch)
            return
        stream = iter(self.dataset)
        for number in range(2 ** 62):
            batch = fetcher.next_batch(stream, number, epoch)
            if isinstance(batch, Exhausted):
                return
            yield batch

    def _release_pool(self, pool, error=False):
        """A pass is over: keep persistent workers (unless it failed), else stop them."""
        if pool is self._pool and not error:
            return
        if pool is self._pool:
            self._pool = None
        pool.shutdown(grace=0.0 if error else 1.0)

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            try:
                pool.shutdown()
            except Exception:   # at interpreter exit the pool may be half torn down
                pass


def _check_workers(num_workers, timeout, prefetch_factor, persistent_workers):
    if not is_integer(num_workers) or num_workers < 0:
        raise ValueError("DataLoader: num_workers option should be non-negative; use "
                         "num_workers=0 to disable multiprocessing (got %r)" % (num_workers,))
    if timeout < 0:
        raise ValueError("DataLoader: timeout option should be non-negative")
    if num_workers == 0 and prefetch_factor is not None:
        raise ValueError("DataLoader: prefetch_factor option could only be specified in "
                         "multiprocessing; let num_workers > 0 to enable multiprocessing, "
                         "otherwise set prefetch_factor to None")
    if prefetch_factor is not None and (not is_integer(prefetch_factor) or prefetch_factor < 1):
        raise ValueError("DataLoader: prefetch_factor should be a positive int, got %r"
                         % (prefetch_factor,))
    if persistent_workers and num_workers == 0:
        raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
