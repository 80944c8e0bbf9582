"""The benchmark harness runs end to end, and both sides of each row do the same work.

Timings are never asserted. Like for like is checked, not assumed: each op row's
fastdl and torch steps give the same output and gradients, and calling a step twice
gives the gradients of one call (nothing accumulates across calls); each model row's
two sides, from the same weights, give the same logits and the same training loss
and update.
"""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from fastdl import bench
from fastdl.bench.inference import inference_cases
from fastdl.bench.suites import SUITES

OP_SUITES = ("conv", "pool", "norm")
OP_CASES = [case for suite in OP_SUITES for case in SUITES[suite]()]


def _numpy(tensor):
    return np.array(tensor.detach().numpy(), dtype=np.float64)


def test_every_case_names_its_work_and_makers():
    for suite, cases in SUITES.items():
        for case in cases():
            name, work, unit = case[:3]
            assert isinstance(name, str) and (work is None or work > 0)
            assert unit in ("", "GFLOP/s", "GB/s")
            assert all(callable(make) for make in case[3:])


def test_the_op_rows_are_benchmarks_md_s():
    names = [case[0] for case in OP_CASES]
    for wanted in ("depthwise 3x3 N32 C144 28^2 s1", "depthwise 3x3 N32 C96 56^2 s2",
                   "depthwise 3x3 N1 C256 14^2 s1", "avg_pool2d 2x2", "max_pool2d 2x2",
                   "batch_norm2d", "group_norm", "layer_norm", "instance_norm2d"):
        assert any(name.startswith(wanted) for name in names), wanted
    assert len(set(names)) == len(names)


def test_smoke_mode_runs_every_op_row_in_the_harness():
    out = io.StringIO()
    rows = bench.run(list(OP_SUITES), rounds=1, threads=1, out=out, smoke=True)
    assert [row["case"] for row in rows] == [case[0] for case in OP_CASES]
    assert all(row["fastdl_ms"] > 0 and row["rate"] is None for row in rows)
    text = out.getvalue()
    assert "host:" in text and "SMOKE" in text and "fastdl" in text
    try:
        import torch  # noqa: F401
    except ImportError:
        assert all(row["ratio"] is None for row in rows)
    else:
        assert all(row["ratio"] > 0 for row in rows)
        assert "torch" in text and "CPU capability" in text


@pytest.mark.parametrize("case", OP_CASES, ids=[case[0] for case in OP_CASES])
def test_op_row_sides_compute_the_same_outputs_and_gradients(case):
    pytest.importorskip("torch")
    ours, theirs, reference = case[3](smoke=True), case[4](smoke=True), case[4](smoke=True)
    for step in (ours, theirs):
        step()
    results = []
    for step in (ours, theirs, reference):   # the reference is called once
        y = step()
        assert all(leaf.grad is not None for leaf in step.leaves)
        results.append([_numpy(y)] + [_numpy(leaf.grad) for leaf in step.leaves])
    expected = results[2]
    assert [r.shape for r in results[0]] == [r.shape for r in expected]
    for got_ours, got_theirs, exact in zip(*results):
        scale = max(np.abs(exact).max(), 1e-6)
        assert np.abs(got_theirs - exact).max() <= 1e-6 * scale   # torch: no accumulation
        assert np.abs(got_ours - exact).max() <= 1e-4 * scale     # fastdl: the same work


def test_op_row_sides_share_one_forward():
    # Both sides run the very same data maker and forward: no side has an extra op.
    for case in OP_CASES:
        assert case[3].forward is case[4].forward, case[0]
        assert case[3].arrays is case[4].arrays, case[0]


MODEL_CASES = [case for case in SUITES["models"]() if "b1 " in case[0] or "train" in case[0]]


@pytest.mark.parametrize("case", MODEL_CASES, ids=[case[0] for case in MODEL_CASES])
def test_model_row_sides_compute_the_same_step(case):
    torch = pytest.importorskip("torch")
    theirs, ours = case[4](smoke=True), case[3](smoke=True)
    state = {key: value.detach().numpy().copy() for key, value in
             theirs.model.state_dict().items()}
    ours.model.load_state_dict(state)
    before = {key: value.copy() for key, value in state.items()}
    if "train" not in case[0]:
        expected, got = _numpy(theirs()), _numpy(ours())
        assert got.shape == expected.shape == (1, 10)
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
        return
    expected_loss, loss = theirs().item(), ours().item()
    assert loss == pytest.approx(expected_loss, rel=1e-3)
    # one SGD-momentum update, compared as a whole (a ReLU at batch 2 may flip within
    # rounding in one library and not the other; a wrong step moves it by ~100 %)
    with torch.no_grad():
        moved_theirs = np.concatenate([(value.numpy() - before[key]).ravel() for key, value
                                       in theirs.model.state_dict().items()
                                       if value.dtype == torch.float32])
    moved_ours = np.concatenate([(np.asarray(value.detach().numpy()) - before[key]).ravel()
                                 for key, value in ours.model.state_dict().items()
                                 if before[key].dtype == np.float32])
    assert np.linalg.norm(moved_ours - moved_theirs) <= 5e-2 * np.linalg.norm(moved_theirs)


def test_bench_runs_without_torch(tmp_path):
    (tmp_path / "torch.py").write_text("raise ImportError('torch is hidden in this test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-m", "fastdl.cli", "bench", "--suite", "pool",
                             "--smoke", "--rounds", "1", "--threads", "1"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "host:" in result.stdout and "torch 2" not in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("max_pool2d")]
    assert lines and all(line.split()[-6] == "-" for line in lines)


def test_run_prints_a_row_per_case_with_the_peer_when_installed():
    out = io.StringIO()
    rows = bench.run(["autograd"], rounds=1, threads=1, repeats=2, out=out)
    assert len(rows) == 1 and rows[0]["fastdl_ms"] > 0
    text = out.getvalue()
    assert "machine: sgemm" in text and rows[0]["case"][:20] in text
    try:
        import torch  # noqa: F401
    except ImportError:
        assert rows[0]["ratio"] is None
    else:
        assert rows[0]["ratio"] > 0


def test_inference_case_runs_a_compiled_plan():
    step = inference_cases()[0][3]()
    logits = step()
    assert logits.shape == (1, 10) and np.isfinite(logits).all()


def test_unknown_suite_is_a_usage_error(capsys):
    assert bench.main(["--suite", "nope"]) == 2
    assert "unknown suite nope" in capsys.readouterr().err


def test_onnxruntime_peer_runs_the_exported_model():
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    step = inference_cases()[0][5](1)
    (logits,) = step()
    assert logits.shape == (1, 10)
