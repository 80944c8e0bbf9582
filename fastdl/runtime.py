"""Threads and the Numba cache: one policy for Numba, OpenMP (``fastdl_ext``) and BLAS.

This module is imported before Numba is, so that the environment it sets up
(cache directory, threading layer, default thread count) is in place when
Numba reads its configuration.

Why each setting:

* ``NUMBA_CACHE_DIR``: Numba caches next to the source by default. In a
  read-only site-packages that either recompiles every kernel at each start or,
  with nothing writable at all, raises at import (numba#4908). We point it at a
  writable user cache directory, and turn caching off when none exists.
* Threading layer ``threadsafe`` (TBB or OpenMP): Numba's default ``workqueue``
  layer aborts the process when two Python threads enter parallel code at once
  (numba#8563) — exactly what a threaded server does.
* One pool of workers: OpenMP (passive waiting); BLAS pinned to one thread.
* Default thread count: the container's CPU quota (cgroup) and the process's
  CPU affinity, not the host's core count, so a 2-CPU container on a 64-core
  host does not start 64 spinning threads.
"""
import math
import os
import sys
import tempfile

_CACHE_ENABLED = True
_num_threads = None


def _cgroup_cpu_limit():
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 CFS), or None."""
    candidates = [("/sys/fs/cgroup/cpu.max", None),
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
                  ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
                   "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us")]
    for quota_path, period_path in candidates:
        try:
            with open(quota_path) as f:
                fields = f.read().split()
            if period_path is None:
                quota, period = fields[0], fields[1]
            else:
                quota = fields[0]
                with open(period_path) as f:
                    period = f.read().split()[0]
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            quota_us, period_us = int(quota), int(period)
        except ValueError:
            return None
        if quota_us > 0 and period_us > 0:
            return max(1, math.ceil(quota_us / period_us))
    return None


def available_cpus():
    """Number of CPUs this process may use: affinity mask and cgroup quota together.

    Returns
    -------
    int
        At least 1.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def _writable_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".fastdl-probe-", delete=True)
        probe.close()
        return True
    except OSError:
        return False


def _choose_numba_cache_dir():
    """A writable directory for Numba's cache, or None when nothing is writable."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (os.path.join(base, "fastdl", "numba"),
                      os.path.join(tempfile.gettempdir(), "fastdl-%d" % os.getuid(), "numba")):
        if _writable_dir(candidate):
            return candidate
    return None


def _configure_numba_environment():
    """Set Numba's environment before it is imported (idempotent)."""
    global _CACHE_ENABLED
    cache_dir = _choose_numba_cache_dir()
    if cache_dir is None:
        _CACHE_ENABLED = False
    else:
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
    os.environ.setdefault("NUMBA_THREADING_LAYER", "threadsafe")
    # Idle OpenMP workers sleep instead of spinning: spinning workers steal the cores
    # that the Python thread and any other process need between parallel regions
    # (a LeNet-5 step: 1.8 ms passive, 17 ms with a 20k spin count, on 2 busy cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ.setdefault("NUMBA_NUM_THREADS", str(available_cpus()))


_configure_numba_environment()


def _keep_freed_memory_for_reuse():
    """Ask glibc to keep large freed blocks instead of returning them to the OS.

    By default glibc serves blocks over 128 KiB with mmap and unmaps them on
    free, so every training step page-faults its activations afresh; that was
    measured to cost more than the kernels (batch norm 4 ms -> 1 ms). Raising the
    mmap and trim thresholds keeps them in the heap (peak RSS is unchanged).
    Set FASTDL_MALLOPT=0 to leave glibc's defaults.
    """
    if os.environ.get("FASTDL_MALLOPT", "1") == "0":
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 256 * 1024 * 1024)
                and mallopt(m_trim_threshold, 1024 * 1024 * 1024))


_keep_freed_memory_for_reuse()


def cache_enabled():
    """Whether compiled Numba kernels are cached on disk (False when nothing is writable)."""
    return _CACHE_ENABLED


def get_num_threads():
    """Number of threads fastdl's kernels use (Numba, OpenMP and BLAS alike).

    Returns
    -------
    int
    """
    global _num_threads
    if _num_threads is None:
        _num_threads = int(os.environ.get("NUMBA_NUM_THREADS", available_cpus()))
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads in every fastdl kernel: Numba and OpenMP (``fastdl_ext``).

    BLAS stays on one thread: fastdl calls it from inside its own parallel
    regions, one GEMM per thread.

    Parameters
    ----------
    n : int
        At least 1. Numba cannot start more threads than it launched with
        (``NUMBA_NUM_THREADS``, default: the CPUs available at import), so
        larger values are capped there. Numba is not imported for this: a
        count set before it loads is applied when it does.

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If ``n < 1``.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError("set_num_threads: n must be an int, got %s" % type(n).__name__)
    n = int(n)
    if n < 1:
        raise ValueError("set_num_threads: n must be >= 1, got %d" % n)
    numba = sys.modules.get("numba")
    launched = (numba.config.NUMBA_NUM_THREADS if numba is not None
                else int(os.environ.get("NUMBA_NUM_THREADS", available_cpus())))
    _num_threads = min(n, launched)
    if numba is not None:
        numba.set_num_threads(_num_threads)
    pin_blas_to_one_thread()


def numba_loaded(numba):
    """Apply a thread count set before Numba was imported (called right after)."""
    if _num_threads is not None:
        numba.set_num_threads(min(_num_threads, numba.config.NUMBA_NUM_THREADS))


def pin_blas_to_one_thread():
    """Run every loaded BLAS (NumPy's and SciPy's OpenBLAS) on one thread.

    fastdl parallelises with one OpenMP pool (Numba's ``omp`` layer and
    ``fastdl_ext`` share libgomp) and calls single-threaded GEMMs from inside
    it. A second, OpenBLAS pthread pool spinning beside it was measured to
    turn a 1.8 ms LeNet-5 step into 80–190 ms on 2 cores.
    """
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")

