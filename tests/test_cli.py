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


# ---------------------------------------------------------------- bad input: exit 2
def _separable(n=40, channels=1, size=8, seed=0):
    """Two classes a model learns in one epoch: images around -1 and around +1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, channels, size, size)) * 0.5 + (2 * y - 1)[:, None, None, None]
    return x.astype(np.float32), y


FAST = ["--quiet", "--epochs", "1", "--batch-size", "8", "--lr", "1e-2"]


def _one_line_error(capsys, *words):
    """stderr is exactly one 'fastdl: error:' line containing every word."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("fastdl: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _write_bad_file(path, kind):
    x, y = _separable(20)
    if kind == "truncated":
        np.savez(path, x=x, y=y)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "truncated-compressed":
        np.savez_compressed(path, x=x, y=y)
        raw = path.read_bytes()
        path.write_bytes(raw[:len(raw) // 2])
    elif kind == "not-a-zip":
        path.write_bytes(b"these are not the images you are looking for" * 4)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, x)


@pytest.mark.parametrize("kind, word", [
    ("truncated", "not a readable .npz"), ("truncated-compressed", ".npz"),
    ("not-a-zip", "not a zip"), ("empty", "not a zip"), ("npy", "single .npy"),
])
def test_corrupt_npz_exits_2_with_one_line(tmp_path, capsys, kind, word):
    path = tmp_path / "d.npz"
    _write_bad_file(path, kind)
    out = tmp_path / "out"
    assert main(["train", "--data", str(path), "--out", str(out)] + FAST) == 2
    _one_line_error(capsys, word)
    assert not any(out.iterdir())


X, Y = _separable(20)


@pytest.mark.parametrize("arrays, extra, word", [
    ({"x": X}, [], "no array 'y'"),
    ({"y": Y}, [], "no array 'x'"),
    ({"x": X, "y": Y.astype(np.float64)}, [], "integer class labels"),
    ({"x": X, "y": np.array(["cat"] * 20)}, [], "integer class labels"),
    ({"x": X.astype(np.complex64), "y": Y}, [], "finite numbers"),
    ({"x": np.where(X > 1.5, np.nan, X), "y": Y}, [], "NaN"),
    ({"x": np.where(X > 1.5, np.inf, X), "y": Y}, [], "infinite"),
    ({"x": X.astype(np.float64) * 1e300, "y": Y}, [], "float32"),
    ({"x": np.zeros((20, 1, 0, 0)), "y": Y}, [], "at least"),
    ({"x": np.zeros((20, 1, 1, 1)), "y": Y}, [], "8x8"),
    ({"x": np.zeros((20, 1, 1, 1)), "y": Y}, ["--model", "resnet8"], "4x4"),
    ({"x": np.zeros((20, 0, 8, 8)), "y": Y}, [], "channel"),
    ({"x": X, "y": np.where(Y == 1, 10 ** 9, 0)}, [], "classes"),
    ({"x": X, "y": Y}, ["--num-classes", "1000000000"], "classes"),
    ({"x": X, "y": Y - 1}, [], "labels must be in"),
    ({"x": X, "y": np.zeros(20, np.int64)}, [], "at least 2 classes"),
    ({"x": X, "y": np.full(20, 2 ** 63 + 1, np.uint64)}, [], "labels"),
    ({"x": X[:8], "y": Y[:8]}, [], "at least 10 images"),
])
def test_bad_data_exits_2_with_one_line(tmp_path, capsys, arrays, extra, word):
    out = tmp_path / "out"
    code = main(["train", "--data", _npz(tmp_path / "d.npz", **arrays), "--out", str(out)]
                + FAST + extra)
    assert code == 2
    _one_line_error(capsys, word)
    assert not any(out.iterdir())


@pytest.mark.parametrize("option, word", [
    (["--threads", "-3"], "--threads"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "fast"], "--lr"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-2"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--patience", "-1"], "--patience"),
    (["--num-classes", "-1"], "--num-classes"),
    (["--num-classes", "1"], "--num-classes"),
    (["--seed", "-1"], "--seed"),
    (["--model", "vgg"], "--model"),
    (["--layout", "chwn"], "--layout"),
    (["--no-such-option"], "no-such-option"),
])
def test_bad_option_exits_2_with_one_line(tmp_path, capsys, option, word):
    x, y = _separable(20)
    out = tmp_path / "out"
    code = main(["train", "--data", _npz(tmp_path / "d.npz", x=x, y=y), "--out", str(out)]
                + FAST + option)
    assert code == 2
    _one_line_error(capsys, word)
    assert not out.exists() or not any(out.iterdir())


def test_bad_demo_option_exits_2(capsys):
    assert main(["demo", "--lr", "nan"]) == 2
    _one_line_error(capsys, "--lr")


# ------------------------------------------------------------------ --resume failures
@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """One finished run per model/optimizer/classes, to take checkpoints from."""
    root = tmp_path_factory.mktemp("runs")
    x, y = _separable(40)
    data = _npz(root / "d.npz", x=x, y=y)
    runs = {"lenet5": [], "resnet8": ["--model", "resnet8"], "sgd": ["--optimizer", "sgd"],
            "3 classes": ["--num-classes", "3"]}
    for name, options in runs.items():
        assert main(["train", "--data", data, "--out", str(root / name)] + FAST + options) == 0
    return root, data


@pytest.mark.parametrize("source, word", [
    (None, "no checkpoint"),
    (b"", "not a valid safetensors"),
    (b"garbage" * 10, "not a valid safetensors"),
    ("truncated", "truncated"),
    ("model.safetensors", "not a fastdl checkpoint"),
    ("resnet8", "does not fit a lenet5 model"),
    ("sgd", "optimizer"),
    ("3 classes", "shape"),
])
def test_failed_resume_exits_2_and_touches_nothing(tmp_path, capsys, trained_runs, source,
                                                   word):
    root, data = trained_runs
    out = tmp_path / "out"
    out.mkdir()
    checkpoint = out / "checkpoint.safetensors"
    good = (root / "lenet5" / "checkpoint.safetensors").read_bytes()
    if isinstance(source, bytes):
        checkpoint.write_bytes(source)
    elif source == "truncated":
        checkpoint.write_bytes(good[:len(good) // 2])
    elif source == "model.safetensors":
        checkpoint.write_bytes((root / "lenet5" / "model.safetensors").read_bytes())
    elif source is not None:
        checkpoint.write_bytes((root / source / "checkpoint.safetensors").read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["train", "--data", data, "--out", str(out), "--resume"]
                + FAST + ["--epochs", "2"]) == 2
    _one_line_error(capsys, "--resume", word)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_failed_resume_leaves_the_model_untouched(tmp_path, trained_runs):
    """The checkpoint is tried on a fresh model first: the real one never sees it."""
    import fastdl
    from fastdl import cli
    from fastdl.cli import UsageError, _check_resume, _make_model
    root, _ = trained_runs
    fastdl.manual_seed(0)
    model = _make_model("lenet5", (1, 8, 8), 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = cli.build_parser().parse_args(["train", "--data", "d.npz"] + FAST)
    with pytest.raises(UsageError, match="resume"):
        _check_resume(str(root / "resnet8" / "checkpoint.safetensors"), "lenet5", (1, 8, 8),
                      2, args)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_resume_continues_after_a_good_checkpoint(tmp_path, trained_runs):
    root, data = trained_runs
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.safetensors").write_bytes(
        (root / "lenet5" / "checkpoint.safetensors").read_bytes())
    assert main(["train", "--data", data, "--out", str(out), "--resume"]
                + FAST + ["--epochs", "2"]) == 0
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [0, 1]


# ------------------------------------------------------ failures while training: exit 2
def test_diverged_training_exits_2_with_one_line(tmp_path, capsys):
    x, y = _separable(40)
    out = tmp_path / "out"
    assert main(["train", "--data", _npz(tmp_path / "d.npz", x=x, y=y), "--out", str(out),
                 "--quiet", "--batch-size", "8", "--epochs", "2", "--optimizer", "sgd",
                 "--lr", "1e3"]) == 2
    _one_line_error(capsys, "loss", "smaller --lr")


@pytest.mark.parametrize("target", ["checkpoint", "outputs"])
def test_full_disk_exits_2_with_one_line(tmp_path, capsys, monkeypatch, target):
    import errno
    import fastdl
    import fastdl.train.checkpoint

    def full(tensors, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if target == "checkpoint":
        monkeypatch.setattr(fastdl.train.checkpoint, "save_file", full)
    else:
        monkeypatch.setattr(fastdl, "save", full)
    x, y = _separable(40)
    out = tmp_path / "out"
    assert main(["train", "--data", _npz(tmp_path / "d.npz", x=x, y=y), "--out", str(out)]
                + FAST) == 2
    _one_line_error(capsys, os.strerror(errno.ENOSPC), str(out))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permissions do not stop root")
def test_read_only_out_exits_2(tmp_path, capsys):
    x, y = _separable(20)
    data = _npz(tmp_path / "d.npz", x=x, y=y)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["train", "--data", data, "--out", str(locked / "run")] + FAST) == 2
        _one_line_error(capsys, "cannot write to --out")
    finally:
        locked.chmod(0o755)


def test_the_command_itself_exits_2_with_one_line(tmp_path):
    result = _run("train", "--data", str(tmp_path / "d.npz"), "--lr", "nan")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--lr" in result.stderr


def test_internal_errors_keep_their_traceback(tmp_path, monkeypatch):
    """The error boundary maps known failures only: a bug is not hidden as bad input."""
    from fastdl.train import Trainer

    def broken(self, *args, **kwargs):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(Trainer, "fit", broken)
    x, y = _separable(20)
    with pytest.raises(ZeroDivisionError):
        main(["train", "--data", _npz(tmp_path / "d.npz", x=x, y=y), "--out",
              str(tmp_path / "o")] + FAST)


# ------------------------------------------------------------- never beats chance: 3
def test_training_that_never_beats_chance_warns_and_exits_3(tmp_path, capsys):
    x, y = _separable(40)
    out = tmp_path / "out"
    assert main(["train", "--data", _npz(tmp_path / "d.npz", x=x, y=y), "--out", str(out),
                 "--quiet", "--batch-size", "8", "--epochs", "1", "--lr", "1e3"]) == 3
    err = capsys.readouterr().err
    assert "fastdl: warning: training never beat chance" in err and "Traceback" not in err
    assert (out / "summary.json").exists()


# --------------------------------------------------------------------- channels-last
def test_channels_last_data_is_transposed_with_a_note(tmp_path, capsys):
    import fastdl
    x, y = _separable(40, channels=3)
    data = _npz(tmp_path / "d.npz", x=np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y=y)
    out = tmp_path / "out"
    assert main(["train", "--data", data, "--out", str(out)] + FAST) == 0
    err = capsys.readouterr().err
    assert "channels-last" in err and "(40, 3, 8, 8)" in err
    weights = fastdl.load(out / "model.safetensors")
    assert weights["0.weight"].shape[1] == 3   # the first conv sees 3 channels
    # Explicit layouts: nhwc transposes without a note; nchw trains on x as given,
    # here 8 channels of 8x3 images, which LeNet-5 refuses.
    assert main(["train", "--data", data, "--out", str(tmp_path / "o2"), "--layout",
                 "nhwc"] + FAST) == 0
    assert "channels-last" not in capsys.readouterr().err
    assert main(["train", "--data", data, "--out", str(tmp_path / "o3"), "--layout",
                 "nchw"] + FAST) == 2
    _one_line_error(capsys, "8x3")


@pytest.mark.parametrize("shape, layout", [
    ((5, 1, 28, 28), "nchw"), ((5, 28, 28, 1), "nhwc"), ((5, 3, 32, 32), "nchw"),
    ((5, 32, 32, 3), "nhwc"), ((5, 64, 64, 4), "nhwc"), ((5, 4, 4, 4), "nchw"),
    ((5, 16, 16, 16), "nchw"), ((5, 64, 1, 1), "nchw"), ((5, 2, 8, 8), "nchw"),
])
def test_layout_guess(shape, layout):
    from fastdl.cli import _guess_layout
    assert _guess_layout(shape) == layout


# ---------------------------------------------------------------------------- --help
@pytest.mark.parametrize("command", ["demo", "train", "info", "warmup", "bench"])
def test_help_lists_every_option_with_its_default(command, capsys):
    import argparse
    from fastdl.cli import build_parser
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    if command == "bench":
        assert "(default: 3)" in text and "(default: all)" in text
        return
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        for flag in action.option_strings:
            assert flag in text, flag
        assert action.help, action.dest
        if action.option_strings and action.nargs != 0 and action.default is not None:
            assert "(default: %s)" % action.default in text, action.dest
    if command in ("demo", "train"):
        assert "exit status" in text and "3 trained, but never beat" in text
    if command == "train":
        assert "channels-last" in text


def test_python_dash_m_fastdl_is_the_command():
    result = subprocess.run([sys.executable, "-m", "fastdl", "bench", "--help"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "--suite" in result.stdout
