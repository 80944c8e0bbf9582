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
* Default thread count: the container's CPU quota (cgroup) and the process's
  CPU affinity, not the host's core count, so a 2-CPU container on a 64-core
  host does not start 64 spinning threads.
"""
import math
import os
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
    os.environ.setdefault("NUMBA_NUM_THREADS", str(available_cpus()))


_configure_numba_environment()


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
    """Use ``n`` threads in every fastdl kernel: Numba, OpenMP (``fastdl_ext``) and BLAS.

    Parameters
    ----------
    n : int
        At least 1. Numba cannot start more threads than it launched with
        (``NUMBA_NUM_THREADS``, default: the CPUs available at import), so
        larger values are capped there.

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
    import numba
    n_numba = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n_numba)
    _blas_controller().limit(limits=n, user_api="blas")
    blas_single_threaded.forget_libraries()
    _num_threads = n_numba


def _blas_controller():
    """A fresh view of the loaded BLAS libraries (NumPy's and SciPy's may differ)."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


class _BlasSingleThreaded:
    """Context manager: BLAS runs one thread while fastdl's own parallel region runs.

    Multi-threaded OpenBLAS called from inside OpenMP workers oversubscribes the
    cores (measured 2–20× slower). Nested and concurrent uses are counted so
    that only the outermost exit restores the thread count.
    """

    def __init__(self):
        import threading
        self._lock = threading.Lock()
        self._depth = 0
        self._libraries = None
        self._saved = []

    def forget_libraries(self):
        """Rescan the loaded BLAS libraries at the next use."""
        with self._lock:
            if self._depth == 0:
                self._libraries = None

    def _blas_libraries(self):
        if self._libraries is None:
            self._libraries = _blas_controller().select(user_api="blas").lib_controllers
        return self._libraries

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                libraries = self._blas_libraries()
                self._saved = [lib.num_threads for lib in libraries]
                for lib in libraries:
                    lib.set_num_threads(1)
            self._depth += 1
        return self

    def __exit__(self, *exc_info):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, count in zip(self._blas_libraries(), self._saved):
                    lib.set_num_threads(count)
        return False


blas_single_threaded = _BlasSingleThreaded()
