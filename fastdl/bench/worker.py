"""One timing job in its own process: ``python -m fastdl.bench.worker SUITE INDEX LIBRARY``.

Prints a JSON list of per-call seconds (or ``null`` when the library is missing).
Each library runs in a separate process because torch brings its own OpenMP
runtime and thread pool, which would steal cycles from fastdl's (BENCHMARKS.md).
"""
import json
import sys
import time


WARMUP_SECONDS = 0.3
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


def main(argv):
    suite, index, library, threads, repeats = argv[0], int(argv[1]), argv[2], int(argv[3]), \
        int(argv[4])
    if suite == "limits":
        print(json.dumps(machine_limits(threads)))
        return 0
    from fastdl.bench.suites import SUITES
    case = SUITES[suite]()[index]
    try:
        _set_threads(library, threads)
        if library == "onnxruntime":
            if len(case) < 6:
                raise ImportError("no ONNX Runtime peer for this case")
            step = case[5](threads)
        else:
            step = (case[3] if library == "fastdl" else case[4])()
    except ImportError:
        print(json.dumps(None))
        return 0
    # Warm-up, never timed: JIT compilation, first-touch memory, and (for the calls of
    # tens of microseconds) the interpreter's specialised code and warm caches that a
    # serving process has (after two calls, LeNet-5's batch-1 plan timed 1.1-1.3x its
    # steady latency).
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
