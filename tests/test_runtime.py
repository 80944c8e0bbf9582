"""Thread control, the Numba cache location, and concurrent callers."""
import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastdl
from fastdl import runtime
from fastdl.kernels import conv
from fastdl.kernels.optim import sum_of_squares


def test_set_num_threads_round_trip_and_validation():
    before = fastdl.get_num_threads()
    try:
        fastdl.set_num_threads(1)
        assert fastdl.get_num_threads() == 1
        import numba
        assert numba.get_num_threads() == 1
        from threadpoolctl import threadpool_info
        assert all(info["num_threads"] == 1 for info in threadpool_info()
                   if info["user_api"] == "blas")
    finally:
        fastdl.set_num_threads(before)
    with pytest.raises(ValueError, match=">= 1"):
        fastdl.set_num_threads(0)
    with pytest.raises(TypeError, match="int"):
        fastdl.set_num_threads(1.5)


def test_default_threads_respect_affinity_and_quota():
    assert 1 <= runtime.available_cpus() <= (os.cpu_count() or 1)
    assert fastdl.get_num_threads() <= runtime.available_cpus()


def test_cgroup_quota_is_read(tmp_path, monkeypatch):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path == "/sys/fs/cgroup/cpu.max":
            return real_open(cpu_max, *args, **kwargs)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", fake_open)
    assert runtime._cgroup_cpu_limit() == 2     # 1.5 CPUs rounds up
    cpu_max.write_text("max 100000\n")
    assert runtime._cgroup_cpu_limit() is None


def test_nothing_writable_disables_the_cache_instead_of_crashing(tmp_path):
    script = textwrap.dedent("""
        import tempfile
        tempfile.tempdir = "/dev/null/unwritable"
        import numpy as np
        import fastdl
        from fastdl import runtime
        from fastdl.kernels.activation import relu_forward
        assert not runtime.cache_enabled()
        print(relu_forward(np.array([-1.0, 2.0])).tolist())
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME="/dev/null", XDG_CACHE_HOME="/dev/null/cache")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0.0, 2.0]"


def test_many_python_threads_calling_parallel_kernels_get_serial_answers(rng):
    x = rng.normal(size=(4, 8, 12, 12)).astype(np.float32)
    weights = [rng.normal(size=(8, 8, 3, 3)).astype(np.float32) for _ in range(8)]
    vectors = [rng.normal(size=200_000) for _ in range(8)]
    expected = [(conv.conv2d_forward(x, w, None, 1, 1), sum_of_squares(v))
                for w, v in zip(weights, vectors)]
    results = [None] * 8
    errors = []

    def work(i):
        try:
            for _ in range(5):
                results[i] = (conv.conv2d_forward(x, weights[i], None, 1, 1),
                              sum_of_squares(vectors[i]))
        except Exception as error:  # reported below; a crash would abort the process
            errors.append(error)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for (out, total), (expected_out, expected_total) in zip(results, expected):
        np.testing.assert_array_equal(out, expected_out)
        assert total == expected_total


def test_package_attributes_load_on_first_use():
    """``import fastdl`` defers the layers and Numba; every public name still resolves."""
    script = ("import sys, fastdl; loaded = 'numba' in sys.modules or 'fastdl.nn' in sys.modules; "
              "names = [getattr(fastdl, n) for n in fastdl.__all__]; "
              "assert 'nn' in dir(fastdl) and fastdl.nn.Conv2d and fastdl.Tensor; "
              "print(loaded, len(names))")
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.split() == ["False", str(len(fastdl.__all__))]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        fastdl.no_such_name


def test_threads_set_before_numba_loads_apply_when_it_does():
    """A service may set its thread count without importing Numba; the count holds
    once a kernel brings Numba in."""
    script = ("import sys, fastdl; fastdl.set_num_threads(1); "
              "loaded = 'numba' in sys.modules; import fastdl.kernels.activation, numba; "
              "print(loaded, fastdl.get_num_threads(), numba.get_num_threads())")
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.split() == ["False", "1", "1"]


_UNCHANGED_UNTIL_KERNELS_LOAD = """
import os, importlib.util
import fastdl, fastdl.bench.suites
from fastdl import runtime
from fastdl.bench.suites import SUITES
if os.environ.get("RUN_TORCH_ROW") and importlib.util.find_spec("torch") is not None:
    SUITES["norm"]()[1][4](smoke=True)()   # the benchmark's torch side of a row, run
before = (os.environ.get("OMP_WAIT_POLICY"), runtime._COMPUTE_CONFIGURED)
import fastdl.nn
print(before, (os.environ.get("OMP_WAIT_POLICY"), runtime._COMPUTE_CONFIGURED), flush=True)
if not os.environ.get("RUN_TORCH_ROW"):   # torch brings its own, older libgomp.so.1
    import ctypes
    ctypes.CDLL("libgomp.so.1").omp_display_env(1)   # what GNU OpenMP read (stderr)
"""


def _policies(**env):
    """(before, after) the kernels load, of a process started with ``env`` added, and
    the spin count GNU OpenMP read when the kernels loaded it."""
    env = dict({k: v for k, v in os.environ.items()
                if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MPI_LOCALNRANKS",
                             "OMPI_COMM_WORLD_LOCAL_SIZE")}, **env)
    result = subprocess.run([sys.executable, "-c", _UNCHANGED_UNTIL_KERNELS_LOAD], check=True,
                            capture_output=True, text=True, timeout=300, env=env)
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", result.stderr)
    return result.stdout.split("\n")[0], spin.group(1) if spin else None


def test_importing_fastdl_leaves_the_process_as_it_was_until_its_kernels_load():
    """``import fastdl`` (and the benchmark's peer side) leaves OpenMP's wait policy
    and glibc's malloc settings alone, so torch in the same process runs as it would
    alone (under the passive policy fastdl once set at import, torch's group norm step
    ran 1.3-1.5x slower, and ``fastdl bench`` timed torch that way). Loading the
    kernels applies fastdl's settings: GNU OpenMP's own wait policy, as torch's, but
    passive where several MPI ranks share the host; a user's choice is kept."""
    assert _policies(RUN_TORCH_ROW="1")[0] == "(None, False) (None, True)"
    # GNU OpenMP's spin counts: 300000 its default, 0 passive, 3e10 active
    assert _policies() == ("(None, False) (None, True)", "300000")
    assert _policies(MPI_LOCALNRANKS="2") == ("(None, False) ('passive', True)", "0")
    assert _policies(OMPI_COMM_WORLD_LOCAL_SIZE="1") == ("(None, False) (None, True)",
                                                         "300000")
    assert _policies(OMP_WAIT_POLICY="active") == ("('active', False) ('active', True)",
                                                   "30000000000")
    assert _policies(MPI_LOCALNRANKS="2", GOMP_SPINCOUNT="1000") == \
        ("(None, False) (None, True)", "1000")


@pytest.mark.parametrize("kernels, expected", [
    (["SkylakeX"], True), (["Haswell"], False), (["Zen"], False), ([], True),
    (["Haswell", "Cooperlake"], True)])
def test_blas_kernel_is_read_from_scipys_openblas(monkeypatch, kernels, expected):
    import threadpoolctl
    from fastdl.kernels import pointwise, winograd
    infos = [{"internal_api": "openblas", "architecture": kernel,
              "filepath": "/lib/libscipy_openblas-%d.so" % i} for i, kernel in enumerate(kernels)]
    # NumPy's own OpenBLAS is not the one fastdl_ext calls: its kernel does not count
    infos.append({"internal_api": "openblas", "architecture": "Prescott",
                  "filepath": "/lib/libopenblas64_p.so"})
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: infos)
    runtime.blas_runs_avx512.cache_clear()
    try:
        assert runtime.blas_runs_avx512() is expected
        # Winograd's GEMMs take the register tiles at every size where those are AVX-512
        # and OpenBLAS's kernel is not
        monkeypatch.setattr(pointwise, "WIDE", 3)
        assert winograd._panel_channels() == (winograd._PANEL_CHANNELS if expected
                                              else winograd.MIN_CHANNELS)
        monkeypatch.setattr(pointwise, "WIDE", 1)
        assert winograd._panel_channels() == winograd._PANEL_CHANNELS
    finally:
        runtime.blas_runs_avx512.cache_clear()
