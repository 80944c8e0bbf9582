"""The fastdl command: the demo's outputs, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastdl.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fastdl.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_demo_trains_and_writes_every_output(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    result = _run("demo", "--quiet", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.97
    for name in ("model.safetensors", "checkpoint.safetensors", "history.json",
                 "history.csv", "confusion_matrix.csv", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    assert "test accuracy" in result.stdout
    matrix = np.loadtxt(out / "confusion_matrix.csv", delimiter=",")
    assert matrix.shape == (10, 10) and matrix.sum() == 269


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((20, 1, 8, 8))}, "no array 'y'"),
    ({"x": np.zeros((20, 1, 8, 8)), "y": np.zeros(19, int)}, "one label per image"),
    ({"x": np.zeros((20, 64)), "y": np.zeros(20, int)}, "4-D"),
    ({"x": np.zeros((20, 1, 8, 8)), "y": -np.ones(20, int)}, "labels"),
])
def test_train_bad_data_exits_2_with_one_line(tmp_path, arrays, match, capsys):
    out = tmp_path / "out"
    code = main(["train", "--data", _npz(tmp_path / "d.npz", **arrays), "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith("fastdl: error:") and match in error and "\n" not in error
    assert not any(out.iterdir()) if out.exists() else True


def test_unwritable_out_and_out_of_range_labels(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", x=np.zeros((20, 1, 8, 8)), y=np.arange(20) % 3)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--data", data, "--out", str(blocker / "sub")]) == 2
    assert "cannot write to --out" in capsys.readouterr().err
    assert main(["train", "--data", data, "--num-classes", "2", "--out",
                 str(tmp_path / "o")]) == 2
    assert "out of range" in capsys.readouterr().err


def test_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope.npz"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_train_on_npz_with_resnet8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3, 8, 8)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64)
    out = tmp_path / "run"
    assert main(["train", "--data", _npz(tmp_path / "d.npz", x=x, y=y), "--model", "resnet8",
                 "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    assert (out / "model.safetensors").exists()
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--model", "resnet8",
                 "--epochs", "3", "--quiet", "--resume", "--out", str(out)]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 3


def test_info_runs(capsys):
    assert main(["info"]) == 0
    assert "fastdl" in capsys.readouterr().out


def test_ctrl_c_keeps_the_last_epoch_and_resume_replays_exactly(tmp_path, monkeypatch):
    import fastdl
    from fastdl.train import Trainer
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    common = ["demo", "--quiet", "--epochs", "3", "--seed", "1"]
    assert main(common + ["--out", str(straight)]) == 0
    original = Trainer._train_batch

    def interrupt_in_epoch_two(self, x, y):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, x, y)
    monkeypatch.setattr(Trainer, "_train_batch", interrupt_in_epoch_two)
    assert main(common + ["--out", str(interrupted)]) == 130
    monkeypatch.setattr(Trainer, "_train_batch", original)
    assert main(common + ["--resume", "--out", str(interrupted)]) == 0
    a = fastdl.load(straight / "checkpoint.safetensors")
    b = fastdl.load(interrupted / "checkpoint.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
