"""Threads and the Numba cache: one policy for Numba, OpenMP (``fastdl_ext``) and BLAS.

This module is imported before Numba is, so that the environment it sets up
(cache directory, threading layer, default thread count) is in place when
Numba reads its configuration.

Why each setting:

* ``NUMBA_CACHE_DIR``: Numba caches next to the source by default. In a
  read-only site-packages that either recompiles every kernel at each start or,
  with nothing writable at all, raises at import (numba#4908). We point it at a
  writable user cache directory, and turn caching off when none exists. Numba's
  cache index is a pickle, so that directory must be this user's alone: owned by
  the user and writable by no one else, or nothing is cached (``_private_dir``).
* Threading layer ``threadsafe`` (TBB or OpenMP): Numba's default ``workqueue``
  layer aborts the process when two Python threads enter parallel code at once
  (numba#8563) — exactly what a threaded server does.
* One pool of workers: OpenMP; BLAS pinned to one thread.
* Default thread count: the container's CPU quota (cgroup) and the process's
  CPU affinity, not the host's core count, so a 2-CPU container on a 64-core
  host does not start 64 spinning threads.
* Fork: the forking thread's OpenMP workers are shut down before ``os.fork()``,
  so a forked child (a data loader worker, a process pool, a pre-fork server)
  trains and infers on all its threads instead of hanging or being killed.
"""
import functools
import math
import os
import stat
import sys
import tempfile
import warnings

_CACHE_ENABLED = True
_CACHE_DIR = None
_CACHE_REASON = None
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


def _is_private_dir(st, uid):
    """A real directory (``st`` from lstat: not a symlink) owned by ``uid`` that no other
    user can write."""
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022


def _check_anchor(path, uid):
    """Why ``path`` cannot hold a private directory, or None: it must be a directory
    owned by this user or root, and a directory others can write must be sticky
    (``/tmp``), or they could rename our directory away and put theirs in its place."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return "%s is not a directory" % path
    if st.st_uid not in (uid, 0):
        return "%s belongs to uid %d" % (path, st.st_uid)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return "%s can be written by other users" % path
    return None


def _private_dir(anchor, parts):
    """``anchor/parts...`` as a directory only this user can write, or the reason why not.

    Each of ``parts`` is created mode 0700 where missing, or reused; either way it must
    then be a real directory (``lstat``: no symlink followed) owned by this user that
    nobody else can write. The last one must take a file.

    Returns
    -------
    (str or None, str or None)
        The directory, or None and the reason.
    """
    uid = os.geteuid()
    try:
        anchor = os.path.realpath(anchor)
        if not os.path.isdir(anchor):
            if os.path.lexists(anchor):
                return None, "%s is not a directory" % anchor
            os.makedirs(anchor, mode=0o700)
        reason = _check_anchor(anchor, uid)
        if reason:
            return None, reason
        path = anchor
        for part in parts:
            path = os.path.join(path, part)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            st = os.lstat(path)
            if not _is_private_dir(st, uid):
                return None, ("%s is not a private directory of uid %d (owner %d, mode %s%s)"
                              % (path, uid, st.st_uid, oct(stat.S_IMODE(st.st_mode)),
                                 ", a symlink" if stat.S_ISLNK(st.st_mode) else ""))
        # writable in fact (a read-only file system passes the mode checks)
        tempfile.TemporaryFile(dir=path, prefix=".fastdl-probe-").close()
        return path, None
    except OSError as error:
        return None, "%s: %s" % (getattr(error, "filename", None) or anchor,
                                 error.strerror or error)


def _choose_numba_cache_dir():
    """Where Numba may cache fastdl's kernels: ``(directory, None)``, or ``(None, reasons)``.

    Numba's cache index is a pickle: whoever can write the directory runs code in
    every process that loads from it. So a directory is used only if this user owns
    it and nobody else can write it (``_private_dir``): the user's ``NUMBA_CACHE_DIR``,
    else ``$XDG_CACHE_HOME`` or ``~/.cache`` + ``fastdl/numba``, else
    ``<tempdir>/fastdl-<uid>/numba``. A ``NUMBA_CACHE_DIR`` that fails is not replaced
    by another directory: the user chose it.
    """
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        real = os.path.realpath(os.path.expanduser(chosen))
        path, reason = _private_dir(os.path.dirname(real), [os.path.basename(real)])
        return path, None if path else ["NUMBA_CACHE_DIR=%s: %s" % (chosen, reason)]
    reasons = []
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative (which the XDG spec says to ignore)
        base = os.path.join(os.path.expanduser("~"), ".cache")
    if os.path.isabs(base):  # not when no home directory is known ("~" stays as is)
        path, reason = _private_dir(base, ["fastdl", "numba"])
        if path:
            return path, None
        reasons.append(reason)
    try:
        temp = tempfile.gettempdir()
    except OSError as error:  # FileNotFoundError: no usable temporary directory
        reasons.append("no temporary directory: %s" % (error.strerror or error))
        return None, reasons
    path, reason = _private_dir(temp, ["fastdl-%d" % os.getuid(), "numba"])
    if path:
        return path, None
    reasons.append(reason)
    return None, reasons


def _configure_numba_environment():
    """Set Numba's environment before it is imported (idempotent)."""
    global _CACHE_ENABLED, _CACHE_DIR, _CACHE_REASON
    _CACHE_DIR, reasons = _choose_numba_cache_dir()
    if _CACHE_DIR is None:
        _CACHE_ENABLED = False
        _CACHE_REASON = "; ".join(reasons)
        warnings.warn("fastdl: Numba kernels are compiled without an on-disk cache (again in "
                      "each process): %s. A cache directory must be writable, owned by this "
                      "user and writable by no one else (e.g. NUMBA_CACHE_DIR, mode 0700)."
                      % _CACHE_REASON, RuntimeWarning, stacklevel=2)
    else:
        os.environ["NUMBA_CACHE_DIR"] = _CACHE_DIR
        numba = sys.modules.get("numba")
        if numba is not None:  # imported before fastdl: it has read its configuration
            numba.config.CACHE_DIR = _CACHE_DIR
    os.environ.setdefault("NUMBA_THREADING_LAYER", "threadsafe")
    os.environ.setdefault("NUMBA_NUM_THREADS", str(available_cpus()))


_configure_numba_environment()


def keep_freed_memory_for_reuse():
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


_COMPUTE_CONFIGURED = False


def _ranks_on_this_host():
    """MPI ranks the launcher started on this host (Open MPI, MPICH's Hydra); 1 without."""
    for variable in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def configure_compute_process():
    """Settings of the process that only fastdl's kernels need, applied when they first
    load (``fastdl.kernels``), not at ``import fastdl`` (idempotent).

    They change how other libraries in the process run, so a program that imports
    fastdl without computing with it (a torch program, a peer process of the
    benchmark) is left as it was.

    * OpenMP's wait policy is GNU OpenMP's default, as in torch: an idle worker spins
      briefly (``GOMP_SPINCOUNT``, 300k) before it sleeps, so the next parallel region
      of a step finds it awake. Sleeping at once (``OMP_WAIT_POLICY=passive``) cost
      each region a wake-up: ShuffleNetV2 0.5x at batch 1 took 7.6 instead of 3.5 ms,
      a LeNet-5 step 2.7 instead of 2.1 ms. Where several MPI ranks share this host,
      whose cores they fill, the policy is passive: a spinning worker would take the
      core another rank waits for (a LeNet-5 step beside one busy process: 3.4 ms
      passive, 7.0 ms spinning). A policy or spin count the user set is kept.
    * glibc keeps freed large blocks for reuse (``keep_freed_memory_for_reuse``).
    """
    global _COMPUTE_CONFIGURED
    if _COMPUTE_CONFIGURED:
        return
    _COMPUTE_CONFIGURED = True
    user_set = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    if not user_set and _ranks_on_this_host() > 1:
        os.environ["OMP_WAIT_POLICY"] = "passive"   # read when GNU OpenMP loads, next
    keep_freed_memory_for_reuse()


def cache_enabled():
    """Whether compiled Numba kernels are cached on disk.

    False when no directory that only this user can write is available (decided
    once, at import, with a RuntimeWarning saying why; ``cache_dir`` and
    ``cache_disabled_reason`` tell which).
    """
    return _CACHE_ENABLED


def cache_dir():
    """The directory Numba caches fastdl's kernels in, or None when caching is off."""
    return _CACHE_DIR


def cache_disabled_reason():
    """Why caching is off (every directory tried and what was wrong), or None."""
    return _CACHE_REASON


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


# OpenBLAS kernels that run AVX-512 (its ``architecture`` names)
_AVX512_BLAS_KERNELS = ("SkylakeX", "Cooperlake", "SapphireRapids")


@functools.lru_cache(maxsize=None)
def blas_runs_avx512():
    """Whether the OpenBLAS that ``fastdl_ext`` calls (SciPy's) runs an AVX-512 kernel.

    False on an AVX2-only CPU, and where ``OPENBLAS_CORETYPE`` pins it to an older
    kernel (``Haswell``: AVX2) on an AVX-512 CPU. The conv kernels then take their own
    AVX-512 register tiles for more of the products. Unknown (no such library found):
    True, the choice an unpinned OpenBLAS would make.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (loaded, so threadpoolctl lists it)
    from threadpoolctl import threadpool_info
    kernels = [info.get("architecture") or "" for info in threadpool_info()
               if info.get("internal_api") == "openblas"
               and "scipy" in os.path.basename(info.get("filepath", ""))]
    if not kernels:
        return True
    return any(kernel in _AVX512_BLAS_KERNELS for kernel in kernels)


# -- fork ------------------------------------------------------------------------------
#
# GNU OpenMP has no fork handler: a child inherits the forking thread's worker pool
# without its workers, and its first parallel region of more than one thread waits for
# them forever; Numba's OpenMP layer kills such a child on purpose instead ("fork()
# called from a process already using GNU OpenMP"). So, right before os.fork() (which
# multiprocessing, data loader workers and pre-fork servers use), the forking thread's
# pool is shut down with OpenMP 5.0's omp_pause_resource_all: its workers exit and the
# child starts with no pool, which libgomp then builds afresh, the child running on all
# its threads. The parent starts its workers again the same way at its next parallel
# region, once; nothing changes on its hot paths. Numba's guard (the pid of the process
# that started its threading layer) is then recorded afresh in the child through the
# layer's own ``launch_threads``, which, the layer being up, only repeats the settings
# it made at start. Other threads' pools are left alone: their threads do not exist
# in the child. Measured alternatives: Numba's ``tbb`` layer is fork-safe but leaves the
# extension's OpenMP hanging, and ``workqueue`` aborts with concurrent callers; a child
# limited to one thread would work (a one-thread region does not use the pool) but
# would lose the other cores.

_OMP_PAUSE_HARD = 2
_openmp_paused_for_fork = False


def _loaded_libgomps():
    """File names of every GNU OpenMP runtime mapped into this process.

    fastdl_ext's and Numba's are usually one library; a wheel may vendor its own copy.
    """
    try:
        with open("/proc/self/maps") as maps:
            lines = [line for line in maps.read().splitlines() if "libgomp" in line]
    except OSError:
        return ["libgomp.so.1"]  # no /proc: the usual soname, if it is loaded
    names = []
    for line in lines:
        fields = line.split(None, 5)
        if (len(fields) == 6 and os.path.basename(fields[5]).startswith("libgomp")
                and fields[5] not in names):
            names.append(fields[5])
    return names


def _pause_openmp_before_fork():
    """os.fork()'s ``before`` handler: shut down this thread's OpenMP worker pools."""
    global _openmp_paused_for_fork
    import ctypes
    paused = True
    for name in _loaded_libgomps():
        try:
            pause = ctypes.CDLL(name, mode=os.RTLD_NOLOAD).omp_pause_resource_all
        except (OSError, AttributeError):  # unloaded meanwhile, or a libgomp before GCC 9
            paused = False
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        paused = pause(_OMP_PAUSE_HARD) == 0 and paused
    _openmp_paused_for_fork = paused


def _rearm_numba_after_fork():
    """os.fork()'s ``after_in_child`` handler: the child may run Numba's parallel kernels.

    Only when the pools were shut down before the fork; otherwise Numba's guard stays
    and kills the child, as without fastdl.
    """
    numba = sys.modules.get("numba")
    if not _openmp_paused_for_fork or numba is None:
        return
    try:
        if numba.threading_layer() != "omp":  # tbb and workqueue handle fork themselves
            return
    except ValueError:  # no parallel kernel has run: nothing recorded
        return
    omppool = sys.modules.get("numba.np.ufunc.omppool")
    if omppool is None or getattr(omppool, "openmp_vendor", None) != "GNU":
        return
    import ctypes
    ctypes.CFUNCTYPE(None, ctypes.c_int)(omppool.launch_threads)(
        numba.config.NUMBA_NUM_THREADS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_pause_openmp_before_fork,
                        after_in_child=_rearm_numba_after_fork)
