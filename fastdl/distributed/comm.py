"""The process group: MPI through mpi4py, or a single process without it.

Collectives are issued non-blocking and waited on with a deadline, so that a
rank which died (or hangs) makes the others fail with a clear error instead of
blocking forever inside ``MPI_Allreduce``. An uncaught exception on any rank
aborts the whole job (as ``python -m mpi4py`` does), for the same reason.
"""
import os
import sys
import time

import numpy as np

#: Seconds a collective may wait for the other ranks before the job is aborted.
DEFAULT_TIMEOUT = float(os.environ.get("FASTDL_DIST_TIMEOUT", "300"))

_MPI_ENV_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")

_group = None


class DistributedError(RuntimeError):
    """A collective failed: a rank died, timed out or the communicator broke."""


class _SingleProcessGroup:
    """World of size 1: every collective is the identity."""

    rank = 0
    size = 1
    backend = "none"

    def allreduce_(self, array, op="sum", timeout=None):
        return array

    def broadcast_(self, array, root=0, timeout=None):
        return array

    def allreduce_scalars(self, values, op="sum", timeout=None):
        return np.asarray(values, dtype=np.float64)

    def barrier(self, timeout=None):
        pass

    def abort(self, code=1):
        raise SystemExit(code)


class _MPIGroup:
    """MPI_COMM_WORLD with deadline-bounded non-blocking collectives."""

    backend = "mpi"

    def __init__(self, comm, mpi):
        self._comm = comm
        self._mpi = mpi
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._ops = {"sum": mpi.SUM, "max": mpi.MAX, "min": mpi.MIN}

    def _wait(self, request, what, timeout):
        limit = DEFAULT_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + limit
        pause = 0.0
        while not request.Test():
            if time.monotonic() > deadline:
                message = ("fastdl.distributed: %s on rank %d of %d waited more than %.0f s "
                           "for the other ranks: one of them died or hangs; aborting the job"
                           % (what, self.rank, self.size, limit))
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
                self._comm.Abort(1)
                raise DistributedError(message)
            # Spin briefly (a healthy allreduce finishes in microseconds), then back off
            # so a waiting rank does not burn a core that the others need.
            if pause:
                time.sleep(pause)
            pause = min(0.002, pause * 2 or 1e-5)

    def allreduce_(self, array, op="sum", timeout=None):
        if not array.flags.c_contiguous:
            raise ValueError("allreduce_: array must be C-contiguous")
        request = self._comm.Iallreduce(self._mpi.IN_PLACE, array, op=self._ops[op])
        self._wait(request, "allreduce", timeout)
        return array

    def broadcast_(self, array, root=0, timeout=None):
        if not array.flags.c_contiguous:
            raise ValueError("broadcast_: array must be C-contiguous")
        request = self._comm.Ibcast(array, root=root)
        self._wait(request, "broadcast", timeout)
        return array

    def allreduce_scalars(self, values, op="sum", timeout=None):
        buffer = np.array(values, dtype=np.float64).reshape(-1)
        return self.allreduce_(buffer, op=op, timeout=timeout)

    def barrier(self, timeout=None):
        request = self._comm.Ibarrier()
        self._wait(request, "barrier", timeout)

    def abort(self, code=1):
        self._comm.Abort(code)


def launched_by_mpi():
    """True when this process was started by an MPI launcher (``mpiexec``/``mpirun``)."""
    return any(marker in os.environ for marker in _MPI_ENV_MARKERS)


def _install_abort_on_exception(group):
    previous_hook = sys.excepthook

    def abort_job(exc_type, exc, tb):
        previous_hook(exc_type, exc, tb)
        sys.stderr.write("fastdl.distributed: rank %d failed; aborting all ranks\n" % group.rank)
        sys.stderr.flush()
        group.abort(1)

    sys.excepthook = abort_job


def init(backend="auto"):
    """Join the process group (idempotent) and return it.

    Parameters
    ----------
    backend : {'auto', 'mpi', 'none'}
        ``'auto'`` uses MPI when the process was started by an MPI launcher and
        a single-process group otherwise; ``'mpi'`` requires mpi4py.

    Returns
    -------
    group
        With ``.rank``, ``.size`` and the collectives ``allreduce_``,
        ``broadcast_``, ``allreduce_scalars`` and ``barrier``.

    Raises
    ------
    ImportError
        If MPI is required but mpi4py is not installed (``pip install "fastdl[mpi]"``).
    """
    global _group
    if backend not in ("auto", "mpi", "none"):
        raise ValueError("init: backend must be 'auto', 'mpi' or 'none', got %r" % (backend,))
    if _group is not None:
        return _group
    if backend == "none" or (backend == "auto" and not launched_by_mpi()):
        _group = _SingleProcessGroup()
        return _group
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError("fastdl.distributed needs mpi4py and an MPI library: "
                          "pip install \"fastdl[mpi]\"") from error
    _group = _MPIGroup(MPI.COMM_WORLD, MPI)
    if _group.size > 1:
        _install_abort_on_exception(_group)
    return _group


def get_group():
    """The current group; a single-process group when :func:`init` was not called."""
    return _group if _group is not None else _SingleProcessGroup()


def get_rank():
    """Rank of this process (0 without MPI)."""
    return get_group().rank


def get_world_size():
    """Number of processes in the group (1 without MPI)."""
    return get_group().size


def is_main_process():
    """True on rank 0: the process that prints, checkpoints and writes history."""
    return get_group().rank == 0
