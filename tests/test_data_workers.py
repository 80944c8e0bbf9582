"""DataLoader worker processes: order, seeds, errors, dead workers, timeouts, shutdown."""
import gc
import os
import time

import numpy as np
import pytest

import fastdl
from fastdl.data import DataLoader, Dataset, IterableDataset, TensorDataset, get_worker_info
from fastdl.random import default_generator

LIMIT = 60   # seconds: a hang fails the test instead of stalling the suite


class Draws(Dataset):
    """Each sample: its index, the worker's id and seed, and draws from the seeded generators."""

    def __len__(self):
        return 12

    def __getitem__(self, index):
        info = get_worker_info()
        return (index, info.id, info.seed, float(default_generator().random()),
                float(np.random.rand()))


class Broken(Dataset):
    def __init__(self, error):
        self.error = error

    def __len__(self):
        return 8

    def __getitem__(self, index):
        if index == 5:
            raise self.error
        return index


class Sleepy(Dataset):
    def __init__(self, seconds):
        self.seconds = seconds

    def __len__(self):
        return 6

    def __getitem__(self, index):
        time.sleep(self.seconds)
        return os.getpid()


class Dies(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, index):
        if index == 3:
            os._exit(7)
        return index


class Stream(IterableDataset):
    """0..n-1, each worker taking every num_workers-th item."""

    def __init__(self, n, worker_info):
        self.n, self.worker_info = n, worker_info

    def __iter__(self):
        info = self.worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))

    def __len__(self):
        return self.n


def _values(loader):
    return [[field.tolist() for field in batch] for batch in loader]


def test_workers_deliver_the_single_process_batches_in_order():
    data = TensorDataset(np.arange(50, dtype=np.float32).reshape(50, 1), np.arange(50))
    single = _values(DataLoader(data, 4, shuffle=True, seed=3))
    parallel = _values(DataLoader(data, 4, shuffle=True, seed=3, num_workers=3, timeout=LIMIT))
    assert parallel == single
    with pytest.raises(AttributeError):
        get_worker_info().id   # None outside a worker


def test_large_batches_do_not_deadlock_the_pipes():
    data = TensorDataset(np.arange(120000))   # tasks and batches beyond a pipe's buffer
    batches = list(DataLoader(data, 30000, num_workers=2, timeout=LIMIT))
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]),
                                  np.arange(120000))


def test_each_worker_is_seeded_from_the_base_seed_and_manual_seed():
    def run():
        return [[field.tolist() for field in batch]
                for batch in DataLoader(Draws(), 2, num_workers=3, timeout=LIMIT)]
    fastdl.manual_seed(0)
    first = run()
    indices, workers, seeds, draws, numpy_draws = (np.concatenate(f) for f in zip(*first))
    assert indices.tolist() == list(range(12))
    assert workers.tolist() == [0, 0, 1, 1, 2, 2] * 2         # batch k from worker k % 3
    assert (seeds - workers).tolist() == [seeds[0]] * 12       # base_seed + worker id
    assert len(set(draws[::2][:3])) == 3 and len(set(numpy_draws[::2][:3])) == 3
    fastdl.manual_seed(0)
    assert run() == first
    fastdl.manual_seed(1)
    assert run() != first


def test_a_worker_error_is_raised_with_the_workers_traceback():
    loader = DataLoader(Broken(ValueError("sample 5 is broken")), 2, num_workers=2,
                        timeout=LIMIT)
    with pytest.raises(ValueError, match="sample 5 is broken") as caught:
        list(loader)
    message = str(caught.value)
    assert "Caught ValueError in DataLoader worker process 0" in message
    assert "Traceback" in message and "__getitem__" in message
    with pytest.raises(KeyError, match="missing"):
        list(DataLoader(Broken(KeyError("missing")), 2, num_workers=1, timeout=LIMIT))

    class LocalError(Exception):
        pass
    with pytest.raises(RuntimeError, match="Caught LocalError"):
        list(DataLoader(Broken(LocalError("local")), 2, num_workers=1, timeout=LIMIT))

    def failing_init(worker_id):
        raise OSError("cannot open the shard")
    with pytest.raises(OSError, match="cannot open the shard"):
        list(DataLoader(Broken(None), 2, num_workers=2, worker_init_fn=failing_init,
                        timeout=LIMIT))


def test_a_dead_worker_or_a_slow_batch_raises_instead_of_hanging():
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="exited unexpectedly .exit code 7"):
        list(DataLoader(Dies(), 1, num_workers=2))
    with pytest.raises(RuntimeError, match="timed out after 0.3 seconds"):
        list(DataLoader(Sleepy(5.0), 1, num_workers=1, timeout=0.3))
    assert time.monotonic() - began < 4.0


def test_dropping_the_iterator_stops_the_workers():
    loader = DataLoader(Sleepy(0.05), 1, num_workers=2, timeout=LIMIT)
    iterator = iter(loader)
    next(iterator)
    processes = list(iterator._pool.processes)
    assert all(p.is_alive() for p in processes)
    del iterator
    gc.collect()
    assert not any(p.is_alive() for p in processes)
    for _ in DataLoader(Sleepy(0.05), 1, num_workers=2, timeout=LIMIT):
        break
    assert not [p for p in processes if p.is_alive()]


def test_iterable_dataset_is_sharded_like_torchs():
    torch = pytest.importorskip("torch")

    class TorchStream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(Stream(11, torch.utils.data.get_worker_info))
    ours = [b.tolist() for b in DataLoader(Stream(11, get_worker_info), 2, num_workers=2,
                                           timeout=LIMIT)]
    theirs = [b.tolist() for b in torch.utils.data.DataLoader(TorchStream(), 2, num_workers=2,
                                                              timeout=LIMIT)]
    assert ours == theirs
    assert sorted(sum(ours, [])) == list(range(11))
    single = [b.tolist() for b in DataLoader(Stream(5, get_worker_info), 2)]
    assert single == [[0, 1], [2, 3], [4]]
    assert len(DataLoader(Stream(5, get_worker_info), 2, drop_last=True)) == 2


def test_persistent_workers_serve_every_epoch():
    loader = DataLoader(Sleepy(0.0), 2, num_workers=2, persistent_workers=True, timeout=LIMIT)
    first = {pid for batch in loader for pid in batch.tolist()}
    second = {pid for batch in loader for pid in batch.tolist()}
    assert first == second and len(first) == 2
    stream = DataLoader(Stream(7, get_worker_info), 2, num_workers=2, persistent_workers=True,
                        timeout=LIMIT)
    assert [b.tolist() for b in stream] == [b.tolist() for b in stream]
    processes = list(loader._pool.processes)
    del loader
    gc.collect()
    assert not any(p.is_alive() for p in processes)


def test_worker_init_fn_runs_in_every_worker():
    def init(worker_id):
        np.random.seed(100 + worker_id)
    batches = list(DataLoader(Draws(), 6, num_workers=2, worker_init_fn=init, timeout=LIMIT))
    expected = [np.random.RandomState(100 + w).rand() for w in (0, 1)]
    assert [batch[4][0].item() for batch in batches] == expected


class Convolves(Dataset):
    """A kernel call per sample: forked workers must run them after the parent did."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        from fastdl import functional as F
        x = fastdl.Tensor(np.full((1, 2, 6, 6), index, np.float32))
        return F.conv2d(x, fastdl.Tensor(np.ones((3, 2, 3, 3), np.float32))).numpy()[0]


def test_forked_workers_run_kernels_after_the_parent_did():
    expected = np.stack([Convolves()[i] for i in range(4)])   # the parent runs kernels first
    batches = list(DataLoader(Convolves(), 2, num_workers=2, timeout=LIMIT))
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in batches]), expected)


def test_spawned_workers_and_the_trainer():
    from fastdl import nn, optim
    from fastdl.train import Trainer
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 4, 4)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    data = TensorDataset(x, y)
    spawned = _values(DataLoader(data, 16, num_workers=1, multiprocessing_context="spawn",
                                 timeout=LIMIT))
    assert spawned == _values(DataLoader(data, 16))
    fastdl.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.5), nn.CrossEntropyLoss(),
                      progress=False)
    history = trainer.fit(DataLoader(data, 16, shuffle=True, num_workers=2, timeout=LIMIT),
                          DataLoader(data, 32, num_workers=1, timeout=LIMIT), epochs=3)
    assert history.records[-1]["val_accuracy"] > 0.8
