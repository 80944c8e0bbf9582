"""Worker processes for the DataLoader: batches made in parallel, delivered in order.

Each worker is a process (forked where the platform can, so the dataset is not
pickled) with a task queue in and a one-way pipe of pickled batches out. The
loader's process keeps ``prefetch_factor`` tasks in flight per worker, deals
them round-robin, and puts the answers back in task order. Nothing can hang:

* tasks go through a queue whose feeder thread does the writing, so the
  loader's process never blocks sending a large index batch to a worker that
  is itself blocked sending a batch back;

* a worker's error comes back with its traceback text and is raised again in
  the loader's process (as torch's: ``Caught ValueError in DataLoader worker
  process 0. Original Traceback ...``);
* a worker that dies is noticed through its process sentinel within a second;
* ``timeout`` bounds the wait for each batch;
* dropping the iterator (``break``, an error, garbage collection) stops the
  workers: a stop message, then terminate for any still alive after a grace
  period; a worker whose parent died exits on its own.

Worker ``i`` seeds fastdl's generator, Python's ``random`` and NumPy's legacy
global generator from ``base_seed + i`` (NumPy's from ``(base_seed, i)``),
and runs kernels on one thread, as torch's workers do.
"""
import itertools
import multiprocessing
import os
import pickle
import queue
import random
import signal
import sys
import time
import traceback
from collections import deque
from multiprocessing import connection

import numpy as np

from fastdl.data.fetch import Exhausted
from fastdl.random import manual_seed
from fastdl.runtime import set_num_threads

_WATCH_SECONDS = 1.0     # how often a waiting side checks that the other is alive
_SHUTDOWN_SECONDS = 1.0  # grace period for workers to exit before terminate()


class WorkerInfo:
    """What a worker knows about itself: ``id``, ``num_workers``, ``seed``, ``dataset``."""

    def __init__(self, id, num_workers, seed, dataset):  # noqa: A002 -- torch's name
        self.id, self.num_workers, self.seed, self.dataset = id, num_workers, seed, dataset

    def __repr__(self):
        return "WorkerInfo(id=%d, num_workers=%d, seed=%d, dataset=%s)" % (
            self.id, self.num_workers, self.seed, type(self.dataset).__name__)


_worker_info = None


def get_worker_info():
    """This worker's :class:`WorkerInfo` inside a DataLoader worker, else None.

    An IterableDataset's ``__iter__`` uses it to give each worker its own shard.
    """
    return _worker_info


class _KeyErrorMessage(str):
    """KeyError shows ``repr`` of its message; this keeps the traceback readable."""

    def __repr__(self):
        return str(self)


class ExceptionWrapper:
    """An exception caught in a worker: its type and traceback text, to raise again."""

    def __init__(self, where):
        exc_type, error, trace = sys.exc_info()
        self.type_name = exc_type.__name__
        self.where = where
        self.text = "".join(traceback.format_exception(exc_type, error, trace))
        try:
            pickle.loads(pickle.dumps(exc_type))
            self.exc_type = exc_type
        except Exception:   # a class defined in a function cannot cross processes
            self.exc_type = RuntimeError

    def reraise(self):
        """Raise the exception again, with the worker's traceback in its message."""
        message = "Caught %s %s.\nOriginal %s" % (self.type_name, self.where, self.text)
        if issubclass(self.exc_type, KeyError):
            message = _KeyErrorMessage(message)
        try:
            error = self.exc_type(message)
        except Exception:   # an exception type that needs other arguments
            error = RuntimeError(message)
        raise error


def _seed_worker(base_seed, worker_id):
    seed = base_seed + worker_id
    random.seed(seed)
    manual_seed(seed)
    np.random.seed(np.random.SeedSequence([base_seed, worker_id]).generate_state(4))
    return seed


def _worker_loop(fetcher, tasks, results, worker_id, num_workers, base_seed, init_fn,
                 parent_pid):
    """A worker's life: answer tasks until told to stop or the parent is gone."""
    global _worker_info
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the loader's process handles Ctrl-C
    where = "in DataLoader worker process %d" % worker_id
    failure = None
    try:
        set_num_threads(1)
        seed = _seed_worker(base_seed, worker_id)
        _worker_info = WorkerInfo(worker_id, num_workers, seed, fetcher.dataset)
        if init_fn is not None:
            init_fn(worker_id)
    except Exception:
        failure = ExceptionWrapper(where)
    stream, stream_token = None, None
    while True:
        try:
            task = tasks.get(timeout=_WATCH_SECONDS)
        except queue.Empty:
            if os.getppid() != parent_pid:
                return
            continue
        except (EOFError, OSError):
            return
        if task is None:
            return
        token, number, indices, epoch = task
        reply = failure
        if reply is None:
            try:
                if fetcher.iterable:
                    if token != stream_token:   # a new epoch: a fresh pass over the stream
                        stream, stream_token = iter(fetcher.dataset), token
                    reply = fetcher.next_batch(stream, number, epoch)
                else:
                    reply = fetcher.map_batch(number, indices, epoch)
            except Exception:
                reply = ExceptionWrapper(where)
        try:
            payload = pickle.dumps((token, number, reply), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            payload = pickle.dumps((token, number, ExceptionWrapper(where + " (sending)")))
        try:
            results.send_bytes(payload)
        except OSError:   # the loader's process is gone
            return


def _context(multiprocessing_context):
    if multiprocessing_context is None:
        methods = multiprocessing.get_all_start_methods()
        return multiprocessing.get_context("fork" if "fork" in methods else None)
    if isinstance(multiprocessing_context, str):
        return multiprocessing.get_context(multiprocessing_context)
    return multiprocessing_context


class WorkerPool:
    """``num_workers`` processes running :func:`_worker_loop` over one fetcher."""

    def __init__(self, fetcher, num_workers, base_seed, init_fn, multiprocessing_context):
        context = _context(multiprocessing_context)
        self.processes, self.task_queues, self.result_pipes = [], [], []
        self.closed = False
        self._pending = deque()
        self._tokens = itertools.count()
        try:
            for worker_id in range(num_workers):
                tasks = context.Queue()
                result_reader, result_writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker_loop, daemon=True,
                    args=(fetcher, tasks, result_writer, worker_id, num_workers,
                          base_seed, init_fn, os.getpid()))
                self.processes.append(process)
                self.task_queues.append(tasks)
                self.result_pipes.append(result_reader)
                process.start()
                result_writer.close()   # the worker's end: a dead worker's pipe reads EOF
        except BaseException:
            self.shutdown()
            raise

    def new_token(self):
        """A number that tells one pass's tasks and answers from another's."""
        return next(self._tokens)

    def send(self, worker_id, task):
        self.task_queues[worker_id].put(task)

    def receive(self, timeout):
        """The next ``(token, number, reply)`` from any worker.

        Raises
        ------
        RuntimeError
            After ``timeout`` seconds (when positive) without one, or when a
            worker has died.
        """
        deadline = time.monotonic() + timeout if timeout > 0 else None
        while not self._pending:
            wait = _WATCH_SECONDS if deadline is None else \
                min(_WATCH_SECONDS, max(deadline - time.monotonic(), 0.0))
            ready = connection.wait(self.result_pipes, wait)
            for worker_id, pipe in enumerate(self.result_pipes):
                if pipe in ready:
                    try:
                        self._pending.append(pickle.loads(pipe.recv_bytes()))
                    except (EOFError, OSError):
                        self._raise_dead(worker_id)
            if self._pending:
                break
            for worker_id, process in enumerate(self.processes):
                if not process.is_alive():
                    self._raise_dead(worker_id)
            if deadline is not None and time.monotonic() >= deadline:
                raise RuntimeError("DataLoader timed out after %g seconds waiting for a batch"
                                   % timeout)
        return self._pending.popleft()

    def _raise_dead(self, worker_id):
        process = self.processes[worker_id]
        process.join(0.1)
        code = process.exitcode
        how = ("killed by signal %s" % signal.Signals(-code).name if code is not None and code < 0
               else "exit code %s" % code)
        raise RuntimeError("DataLoader worker %d (pid %s) exited unexpectedly (%s)"
                           % (worker_id, process.pid, how))

    def shutdown(self, grace=_SHUTDOWN_SECONDS):
        """Stop every worker: a stop message, ``grace`` seconds to exit, then terminate.

        Workers only fetch, so terminating one that is still busy (with a
        batch nobody will read) loses nothing.
        """
        if self.closed:
            return
        self.closed = True
        for tasks in self.task_queues:
            try:
                tasks.put(None)
            except (OSError, ValueError):   # already closed
                pass
        deadline = time.monotonic() + grace
        readers = list(self.result_pipes)
        while readers and any(p.is_alive() for p in self.processes if p.pid is not None) \
                and time.monotonic() < deadline:
            # Drain answers nobody will read, so a worker blocked sending one can exit.
            for pipe in connection.wait(readers, 0.05):
                try:
                    pipe.recv_bytes()
                except (EOFError, OSError):
                    readers.remove(pipe)
        for process in self.processes:
            if process.pid is None:   # never started
                continue
            process.join(0.0 if time.monotonic() >= deadline else 0.1)
            if process.is_alive():
                process.terminate()
                process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join(1.0)
        for tasks in self.task_queues:
            tasks.cancel_join_thread()   # never wait at exit to flush tasks nobody reads
            tasks.close()
        for pipe in self.result_pipes:
            pipe.close()


class MultiProcessIterator:
    """One pass of a DataLoader over its worker pool, batches in order.

    Parameters
    ----------
    loader : DataLoader
    epoch : int
    pool : WorkerPool
    tasks : iterable of index batches (None for a stream)
    """

    def __init__(self, loader, epoch, pool, tasks):
        self._loader, self._epoch, self._pool = loader, epoch, pool
        self._token = pool.new_token()
        self._iterable = tasks is None
        self._tasks = None if tasks is None else iter(tasks)
        workers = len(pool.processes)
        self._active = [True] * workers
        self._cycle = itertools.cycle(range(workers))
        self._owner, self._done = {}, {}
        self._sent, self._next = 0, 0
        self._finished = False
        self._timeout = loader.timeout
        for _ in range(loader.prefetch_factor * workers):
            self._dispatch()

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._loader)

    def _dispatch(self):
        if self._iterable:
            if not any(self._active):
                return
            worker = next(w for w in self._cycle if self._active[w])
            indices = None
        else:
            indices = next(self._tasks, None)
            if indices is None:
                return
            worker = next(self._cycle)
        self._pool.send(worker, (self._token, self._sent, indices, self._epoch))
        self._owner[self._sent] = worker
        self._sent += 1

    def __next__(self):
        if self._finished:
            raise StopIteration
        try:
            while True:
                if self._next in self._done:
                    reply = self._done.pop(self._next)
                    self._owner.pop(self._next)
                    self._next += 1
                    self._dispatch()
                    if isinstance(reply, Exhausted):
                        continue
                    if isinstance(reply, ExceptionWrapper):
                        self._close(error=True)
                        reply.reraise()
                    return reply
                if self._next >= self._sent:
                    self._close()
                    raise StopIteration
                token, number, reply = self._pool.receive(self._timeout)
                if token != self._token:   # a stale answer from an abandoned pass
                    continue
                if isinstance(reply, Exhausted):
                    self._active[self._owner[number]] = False
                self._done[number] = reply
        except RuntimeError:
            self._close(error=True)
            raise

    def _close(self, error=False):
        if self._finished:
            return
        self._finished = True
        self._loader._release_pool(self._pool, error)

    def __del__(self):
        try:
            self._close()
        except Exception:   # at interpreter exit the pool may be half torn down
            pass
