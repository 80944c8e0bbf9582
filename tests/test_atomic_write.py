"""Saved files: the user's umask decides their mode, and a killed save leaves no mess."""
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastdl
from fastdl import _io
from fastdl.safetensors_io import load_file, save_file

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX modes, pids and signals")


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@posix_only
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_get_the_mode_of_the_umask_like_np_save(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        save_file({"x": np.zeros(3)}, tmp_path / "m.safetensors")
        fastdl.save({"w": np.ones(2, np.float32)}, tmp_path / "c.safetensors")
        np.save(tmp_path / "reference.npy", np.zeros(3))
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "reference.npy") == expected
    assert _mode(tmp_path / "m.safetensors") == expected
    assert _mode(tmp_path / "c.safetensors") == expected


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _plant(path, pid, host=None, age_s=0.0):
    temp = _io._temp_path(path, pid=pid, host=host)
    with open(temp, "wb") as f:
        f.write(b"half a file")
    if age_s:
        then = time.time() - age_s
        os.utime(temp, (then, then))
    return os.path.basename(temp)


@posix_only
def test_temp_files_of_dead_writers_are_removed_on_the_next_save(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"x": np.zeros(3)}, path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _plant(path, _dead_pid())
        ours_from_before = _plant(path, os.getpid())  # our pid, but no save of ours writes it
        alive = _plant(path, live.pid)
        other_host = _plant(path, _dead_pid(), host="0badc0de")
        abandoned = _plant(path, live.pid, host="0badc0de", age_s=2 * _io.STALE_AFTER_S)
        old_style = ".m.safetensors.ab12cd_9.tmp"
        (tmp_path / old_style).write_bytes(b"")
        os.utime(tmp_path / old_style, (0, 0))
        other_target = _plant(tmp_path / "other.safetensors", _dead_pid())
        assert {dead, ours_from_before, alive, other_host, abandoned, old_style,
                other_target} <= set(os.listdir(tmp_path))

        save_file({"x": np.ones(3)}, path)
        left = set(os.listdir(tmp_path))
        assert dead not in left and ours_from_before not in left
        assert abandoned not in left and old_style not in left
        # a live writer's file, one from another host (its pid means nothing here) and
        # another target's files stay
        assert {alive, other_host, other_target} <= left
        np.testing.assert_array_equal(load_file(path)[0]["x"], np.ones(3))
    finally:
        live.kill()
        live.wait()


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from fastdl.safetensors_io import save_file
    path = sys.argv[1]
    states = [np.full(1 << 20, value, np.float64) for value in (1.0, 2.0)]
    i = 0
    while True:
        save_file({"x": states[i % 2]}, path)
        i += 1
        if i == 2:
            print("saving", flush=True)
""")


@posix_only
def test_kill_9_during_saves_leaves_the_previous_file_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"x": np.zeros(1 << 20)}, path)
    for delay in (0.05, 0.13, 0.31):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline() == "saving\n"
            time.sleep(delay)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            writer.stdout.close()
        x = load_file(path)[0]["x"]      # a whole file, one of the two the writer saved
        assert x.shape == (1 << 20,) and x[0] in (1.0, 2.0) and (x == x[0]).all()
    # whatever the kills left behind goes with the next save
    _plant(path, writer.pid)
    save_file({"x": np.zeros(2)}, path)
    assert os.listdir(tmp_path) == ["m.safetensors"]
