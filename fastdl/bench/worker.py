"""One timing job in its own process:
``python -m fastdl.bench.worker SUITE INDEX LIBRARY THREADS REPEATS [smoke]``.

Prints a JSON list of per-call seconds (or ``null`` when the library is missing).
``smoke`` builds the case's tiny shapes and times a single call after one untimed
one (a check that the row runs, not a measurement). ``SUITE`` ``limits`` measures
the machine's limits and ``host`` describes the host and the BLAS each library's
process loads.
Each library runs in a separate process because torch brings its own OpenMP
runtime and thread pool, which would steal cycles from fastdl's (BENCHMARKS.md).
"""
import json
import sys
import time


WARMUP_SECONDS = 2.0
MIN_TIMED_SECONDS = 0.3
MAX_CALLS = 5000


def _set_threads(library, threads):
    if library == "torch":
        import torch
        torch.set_num_threads(threads)
    elif library == "fastdl":
        import fastdl
        fastdl.set_num_threads(threads)


def machine_limits(threads):
    """(sgemm GFLOP/s on ``threads`` BLAS threads, 3-stream memory GB/s) of this machine,
    measured with NumPy (``np.add`` runs on one thread, as BENCHMARKS.md defines it)."""
    import numpy as np
    from threadpoolctl import threadpool_limits
    a = np.ones((2048, 2048), np.float32)
    times = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(3):
            began = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - began)
    gflops = 2 * 2048 ** 3 / min(times) / 1e9
    x, y = np.ones(1 << 26, np.float32), np.ones(1 << 26, np.float32)
    z = np.empty_like(x)
    times = []
    for _ in range(3):
        began = time.perf_counter()
        np.add(x, y, out=z)
        times.append(time.perf_counter() - began)
    return gflops, 3 * 4 * x.size / min(times) / 1e9


def host_info(library, threads):
    """The CPU, its vector flags, and the BLAS and OpenMP pools that ``library``'s
    process runs with (threadpoolctl), as a dict; None when ``library`` is missing."""
    import os
    try:
        _set_threads(library, threads)
    except ImportError:
        return None
    info = {"library": library}
    if library == "fastdl":
        import fastdl
        import fastdl.nn   # noqa: F401  (the layers load the kernels and set BLAS threads)
        info["version"] = getattr(fastdl, "__version__", "")
        info["threads"] = fastdl.get_num_threads()
        model, flags = "", set()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() == "model name" and not model:
                        model = value.strip()
                    elif key.strip() == "flags" and not flags:
                        flags = set(value.split())
        except OSError:
            pass
        info["cpu"] = model or "unknown CPU"
        info["cpus"] = os.cpu_count()
        info["flags"] = [flag for flag in ("avx2", "fma", "avx512f") if flag in flags]
        info["kind"] = ("AVX-512" if "avx512f" in flags else "AVX2-only" if "avx2" in flags
                        else "no AVX2" if flags else "unknown")
        info["env"] = {name: os.environ.get(name) for name in
                       ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")}
    else:
        import torch
        info["version"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
        info["capability"] = capability() if capability else ""
    try:
        from threadpoolctl import threadpool_info
        info["pools"] = [{"prefix": pool.get("prefix"), "api": pool.get("internal_api"),
                          "version": pool.get("version"),
                          "kernel": pool.get("architecture"),
                          "threads": pool.get("num_threads")} for pool in threadpool_info()]
    except ImportError:
        info["pools"] = []
    return info


def main(argv):
    suite, index, library, threads, repeats = argv[0], int(argv[1]), argv[2], int(argv[3]), \
        int(argv[4])
    smoke = argv[5:] == ["smoke"]
    if suite == "limits":
        print(json.dumps(machine_limits(threads)))
        return 0
    if suite == "host":
        print(json.dumps(host_info(library, threads)))
        return 0
    # The same glibc malloc settings in every library's process: with glibc's
    # defaults, whether torch's 12 MB outputs are mapped afresh on every call depends
    # on the sizes the set-up code happened to free (its mmap threshold adapts), and
    # torch's layer norm step took 2.4-6.3 ms across processes instead of 1.9-2.2 ms.
    # fastdl applies them itself once its kernels load; the OpenMP wait policy stays
    # each library's own.
    from fastdl import runtime
    runtime.keep_freed_memory_for_reuse()
    from fastdl.bench.suites import SUITES
    case = SUITES[suite]()[index]
    try:
        _set_threads(library, threads)
        if library == "onnxruntime":
            if len(case) < 6:
                raise ImportError("no ONNX Runtime peer for this case")
            step = case[5](threads, smoke=smoke)
        else:
            step = (case[3] if library == "fastdl" else case[4])(smoke=smoke)
    except ImportError:
        print(json.dumps(None))
        return 0
    if smoke:
        step()
        began = time.perf_counter()
        step()
        print(json.dumps([time.perf_counter() - began]))
        return 0
    # Warm-up, never timed: JIT compilation, first-touch memory, and (for the calls of
    # tens of microseconds) the interpreter's specialised code and warm caches that a
    # serving process has (after two calls, LeNet-5's batch-1 plan timed 1.1-1.3x its
    # steady latency). Two seconds, because torch's norm steps run 1.2-1.4x slower
    # over their first half second of calls than after it (a shorter warm-up made
    # this harness's norm ratios up to 0.1 kinder to fastdl than an independent timing).
    warm_until = time.perf_counter() + WARMUP_SECONDS
    for calls in range(1, MAX_CALLS):
        step()
        if calls >= 2 and time.perf_counter() > warm_until:
            break
    # at least ``repeats`` timed calls, more for short ones (a steadier median)
    times = []
    began_all = time.perf_counter()
    deadline = began_all + 20.0
    while len(times) < MAX_CALLS:
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
        now = time.perf_counter()
        if now > deadline or (len(times) >= repeats and now - began_all > MIN_TIMED_SECONDS):
            break
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
