"""The benchmark harness runs end to end (timings are never asserted)."""
import io

import numpy as np
import pytest

from fastdl import bench
from fastdl.bench.inference import inference_cases
from fastdl.bench.suites import SUITES


def test_every_case_names_its_work_and_makers():
    for suite, cases in SUITES.items():
        for case in cases():
            name, work, unit = case[:3]
            assert isinstance(name, str) and (work is None or work > 0)
            assert unit in ("", "GFLOP/s", "GB/s")
            assert all(callable(make) for make in case[3:])


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
