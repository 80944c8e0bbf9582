"""Data-parallel training under a real MPI launcher (mpiexec -n 2)."""
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
mpi4py = pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install fastdl[mpi])")


def _mpiexec(script, *args, timeout=300, extra_env=None):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=
               ":oversubscribe", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.update(extra_env or {})
    return subprocess.run([MPIEXEC, "-n", "2", "--oversubscribe", sys.executable,
                           os.path.join(HERE, "mpi", script), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_two_ranks_equal_one_process_with_double_batch():
    result = _mpiexec("data_parallel.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "data-parallel OK" in result.stdout


def test_two_ranks_without_init_still_train_on_the_global_batch():
    """No ``distributed.init()``: the helpers and a default Trainer join MPI on first use."""
    result = _mpiexec("no_init.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no-init OK" in result.stdout


def test_a_dying_rank_ends_the_job_and_the_checkpoint_loads(tmp_path):
    import fastdl
    from fastdl import nn, optim
    from fastdl.train import load_checkpoint
    checkpoint = str(tmp_path / "ck.safetensors")
    began = time.monotonic()
    result = _mpiexec("rank_dies.py", checkpoint, timeout=240,
                      extra_env={"FASTDL_DIST_TIMEOUT": "20"})
    assert result.returncode != 0
    assert time.monotonic() - began < 200
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    extra = load_checkpoint(checkpoint, model, optim.SGD(model.parameters(), lr=0.1))
    assert extra["epoch"] >= 1


def test_cli_checkpoint_from_two_ranks_resumes_in_one_process(tmp_path):
    """Under mpiexec the CLI is data-parallel without --distributed: rank 0 alone reports."""
    out = str(tmp_path / "run")
    env = {"FASTDL_DIST_TIMEOUT": "120"}
    result = subprocess.run(
        [MPIEXEC, "-n", "2", "--oversubscribe", "-x", "NUMBA_NUM_THREADS=1",
         sys.executable, "-m", "fastdl.cli", "demo", "--quiet",
         "--epochs", "2", "--out", out], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                 **env))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("wall time") == 1, result.stdout
    from fastdl.cli import main
    assert main(["demo", "--quiet", "--epochs", "3", "--resume", "--out", out]) == 0
    import json
    history = json.loads(open(os.path.join(out, "history.json")).read())
    assert [record["epoch"] for record in history] == [0, 1, 2]
