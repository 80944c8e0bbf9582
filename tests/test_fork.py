"""A forked child trains and infers after its parent has run parallel kernels.

GNU OpenMP keeps its worker pool across fork() without the workers: a child's
first parallel region waits for them forever, and Numba's OpenMP layer kills
such a child on purpose ("fork() called from a process already using GNU
OpenMP"). Data loaders, pre-fork servers and process pools all fork. Each case
runs in its own process group under a timeout, so a hang fails the test.
"""
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/task"),
                                reason="fork and /proc are POSIX/Linux")

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 120


def _run(case, warm_up=False):
    env = dict(os.environ, NUMBA_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([HERE] + [p for p in [os.environ.get("PYTHONPATH")]
                                                    if p]))
    env.pop("FORK_WORKLOAD_WARM_UP", None)
    if warm_up:
        env["FORK_WORKLOAD_WARM_UP"] = "1"
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), case], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung children too
        output, _ = proc.communicate()
        pytest.fail("%s: hung for %d s\n%s" % (case, TIMEOUT_S, output))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # no worker outlives the test
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, "%s: exit %s\n%s" % (case, proc.returncode, output)
    assert "ok" in output, output


def test_a_forked_child_trains_and_runs_a_plan_like_its_parent():
    _run("fork")


def test_a_fork_pool_trains_and_infers():
    _run("pool")


def test_a_forkserver_that_warmed_up_forks_children_that_train():
    _run("forkserver", warm_up=True)


# -- the processes themselves ---------------------------------------------------------

def _check_equal(got, want):
    import numpy as np
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)


def _child_results(_):
    import fork_workload
    out = fork_workload.results()
    out["threads"] = fork_workload.threads_alive()
    return out


def _main(case):
    import multiprocessing

    import fastdl
    import fork_workload
    assert fastdl.get_num_threads() == 2
    want = fork_workload.results()  # Numba's and the extension's OpenMP, 2 threads
    assert fork_workload.threads_alive() >= 2, "the parent ran no parallel region"
    if case == "fork":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                got = _child_results(None)
                assert got.pop("threads") >= 2, "the child ran single-threaded"
                _check_equal(got, want)
                pid2 = os.fork()  # and a child of the child
                if pid2 == 0:
                    code2 = 1
                    try:
                        _check_equal(fork_workload.results(), want)
                        code2 = 0
                    finally:
                        os._exit(code2)
                code = os.waitstatus_to_exitcode(os.waitpid(pid2, 0)[1])
            finally:
                os._exit(code)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        assert code == 0, "child exit %d" % code
        _check_equal(fork_workload.results(), want)  # the parent goes on after the fork
    else:
        context = multiprocessing.get_context("fork" if case == "pool" else case)
        if case == "forkserver":
            context.set_forkserver_preload(["fork_workload"])
        with context.Pool(2) as pool:
            for got in pool.map(_child_results, range(2)):
                assert got.pop("threads") >= 2, "a worker ran single-threaded"
                _check_equal(got, want)
    print("ok")


if __name__ == "__main__":
    _main(sys.argv[1])
