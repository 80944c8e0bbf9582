"""The process group: MPI through mpi4py, or a single process without it.

A process started by an MPI launcher with more than one rank joins the MPI
group on the first collective, sampler or rank query even without
:func:`init`, so a script that forgets it never trains each rank alone; if
mpi4py is missing there, that first use raises instead.

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

#: Environment variables that MPI launchers set, each giving the world size.
#: Open MPI (mpirun/mpiexec, also under PRRTE), MPICH and Intel MPI (Hydra's PMI),
#: MVAPICH2, and Slurm's srun with PMI-2.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
#: Variables that only say "started by an MPI launcher": PMIx (srun --mpi=pmix) gives
#: the rank alone, Hydra's MPI_LOCALNRANKS counts this node's ranks only.
_RANK_ONLY_VARIABLES = ("PMIX_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK",
                        "MPI_LOCALNRANKS")
_MPI_ENV_MARKERS = _SIZE_VARIABLES + _RANK_ONLY_VARIABLES

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


def launcher_world_size():
    """``(size, variable)`` from the launcher's environment.

    ``size`` is None when no launcher variable is set, and 0 when a launcher
    is present but says only the rank (the size is then MPI's to tell).
    """
    for variable in _SIZE_VARIABLES:
        value = os.environ.get(variable, "")
        if value.strip().isdigit():
            return int(value), variable
    for variable in _RANK_ONLY_VARIABLES:
        if variable in os.environ:
            return 0, variable
    return None, None


def _implicit_group():
    """The group a collective uses when :func:`init` was not called.

    No launcher, or a launcher with one rank: a single-process group (nothing
    is cached, so a later ``init()`` still decides). A launcher with several
    ranks (or an unknown number): join MPI now, as ``init()`` would, because
    the ranks would otherwise each train alone without a word.
    """
    size, variable = launcher_world_size()
    if size is None or size == 1:
        return _SingleProcessGroup()
    try:
        import mpi4py  # noqa: F401  (only the check; init imports MPI itself)
    except ImportError as error:
        ranks = "%d ranks" % size if size else "several ranks"
        raise ImportError(
            "fastdl.distributed: this process was started by an MPI launcher with %s "
            "(%s=%s) but mpi4py is not installed, so the ranks cannot exchange gradients "
            "and each would train alone: pip install \"fastdl[mpi]\", or run without "
            "mpiexec" % (ranks, variable, os.environ[variable])) from error
    return init("mpi")


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
    DistributedError
        If the launcher started more ranks than MPI sees (mpi4py built against
        another MPI than the launcher's: every rank would be a world of one).
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
    group = _MPIGroup(MPI.COMM_WORLD, MPI)
    launched_size, variable = launcher_world_size()
    if launched_size and launched_size > 1 and group.size != launched_size:
        raise DistributedError(
            "fastdl.distributed: the launcher started %d ranks (%s) but MPI sees %d: mpi4py "
            "is built against a different MPI than the mpiexec that started this job (use "
            "the mpiexec of the MPI that mpi4py links, mpi4py.get_config())"
            % (launched_size, variable, group.size))
    _group = group
    if _group.size > 1:
        _install_abort_on_exception(_group)
    return _group


def get_group():
    """The current group.

    Without a prior :func:`init`: the MPI group when an MPI launcher started
    several ranks (joined now), else a single-process group.

    Raises
    ------
    ImportError
        If an MPI launcher started several ranks but mpi4py is not installed.
    """
    return _group if _group is not None else _implicit_group()


def get_rank():
    """Rank of this process (0 without MPI)."""
    return get_group().rank


def get_world_size():
    """Number of processes in the group (1 without MPI)."""
    return get_group().size


def is_main_process():
    """True on rank 0: the process that prints, checkpoints and writes history."""
    return get_group().rank == 0
