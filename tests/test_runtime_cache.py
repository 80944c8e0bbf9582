"""Where Numba caches fastdl's kernels: only in a directory that is this user's alone,
and without a cache (but working) when there is none, or no temporary directory at all.

Numba's cache index is a pickle: a cache directory another user can write lets that
user run code in every process that loads from it.
"""
import os
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

from fastdl import runtime

OTHER_UID = 65534   # "nobody"


def _can_chown():
    return hasattr(os, "geteuid") and os.geteuid() == 0


needs_root = pytest.mark.skipif(not _can_chown(),
                                reason="needs root, to create directories owned by another user")


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    """No NUMBA_CACHE_DIR, no usable home cache (HOME is a file), the temporary
    directory ``tmp_path/tmp``; returns that directory."""
    temp = tmp_path / "tmp"
    temp.mkdir(mode=0o700)
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_created_directories_are_private(cache_env):
    path, reasons = runtime._choose_numba_cache_dir()
    expected = cache_env / ("fastdl-%d" % os.getuid()) / "numba"
    assert path == str(expected.resolve()) and reasons is None
    assert _mode(expected.parent) & 0o077 == 0 and _mode(expected) & 0o077 == 0


def test_home_cache_is_used_when_it_is_private(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path, _ = runtime._choose_numba_cache_dir()
    assert path == str((tmp_path / "cache" / "fastdl" / "numba").resolve())


def test_a_directory_others_can_write_is_not_reused(cache_env):
    mine = cache_env / ("fastdl-%d" % os.getuid())
    mine.mkdir()
    os.chmod(mine, 0o777)
    path, reasons = runtime._choose_numba_cache_dir()
    assert path is None and "fastdl-%d" % os.getuid() in reasons[-1]
    os.chmod(mine, 0o755)   # ours and written by no one else: reused
    assert runtime._choose_numba_cache_dir()[0] == str((mine / "numba").resolve())


def test_a_symlink_is_not_followed(cache_env, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (cache_env / ("fastdl-%d" % os.getuid())).symlink_to(target)
    path, reasons = runtime._choose_numba_cache_dir()
    assert path is None and "symlink" in reasons[-1]
    assert not (target / "numba").exists()


def test_a_temp_dir_others_can_write_without_sticky_bit_is_refused(cache_env):
    os.chmod(cache_env, 0o777)   # anyone could rename our directory and plant theirs
    path, reasons = runtime._choose_numba_cache_dir()
    assert path is None and "written by other users" in reasons[-1]
    os.chmod(cache_env, 0o1777)  # sticky, like /tmp
    assert runtime._choose_numba_cache_dir()[0] is not None


@needs_root
def test_directories_of_another_user_are_refused(cache_env, tmp_path, monkeypatch):
    planted = cache_env / ("fastdl-%d" % os.getuid())
    (planted / "numba").mkdir(parents=True)
    for path in (planted, planted / "numba"):
        os.chown(path, OTHER_UID, OTHER_UID)
        os.chmod(path, 0o700)
    assert runtime._choose_numba_cache_dir()[0] is None
    # a ~/.cache/fastdl of another user: not reused either (falls back to a fresh temp dir)
    home = tmp_path / "home"
    (home / ".cache" / "fastdl").mkdir(parents=True)
    os.chown(home / ".cache" / "fastdl", OTHER_UID, OTHER_UID)
    monkeypatch.setenv("HOME", str(home))
    path, reasons = runtime._choose_numba_cache_dir()
    assert path is None and str(home / ".cache" / "fastdl") in reasons[0]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "fresh-tmp"))
    path, _ = runtime._choose_numba_cache_dir()
    assert path == str((tmp_path / "fresh-tmp" / ("fastdl-%d" % os.getuid()) / "numba")
                       .resolve())


def test_user_cache_dir_that_is_not_usable_turns_caching_off(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    (tmp_path / "a-file").write_text("")
    path, reasons = runtime._choose_numba_cache_dir()
    assert path is None and "NUMBA_CACHE_DIR" in reasons[0]
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert runtime._choose_numba_cache_dir()[0] == str((tmp_path / "mine").resolve())


def _run(script, env, cwd):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def _clean_env(**changes):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONWARNINGS")}
    env.update(changes)
    return env


@needs_root
def test_cache_directory_planted_by_another_user_is_not_used(tmp_path):
    """Another user pre-creates ``$TMPDIR/fastdl-<uid>/numba``: the victim (root here)
    must neither load from nor write to it, and is told."""
    planted = tmp_path / ("fastdl-%d" % os.getuid()) / "numba"
    planted.mkdir(parents=True)
    (planted / "marker").write_text("planted")
    for path in (planted.parent, planted, planted / "marker"):
        os.chown(path, OTHER_UID, OTHER_UID)
    os.chmod(planted.parent, 0o777)
    os.chmod(planted, 0o777)
    os.chmod(tmp_path, 0o1777)  # a shared temporary directory, like /tmp
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    script = """
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import fastdl
        import numpy as np, numba
        from fastdl import runtime
        from fastdl.kernels.activation import relu_forward
        assert relu_forward(np.array([-1.0, 2.0])).tolist() == [0.0, 2.0]
        print(runtime.cache_enabled(), repr(numba.config.CACHE_DIR))
        print("|".join(str(w.message) for w in caught))
    """
    result = _run(script, _clean_env(HOME=str(home), TMPDIR=str(tmp_path)), tmp_path)
    assert result.returncode == 0, result.stderr
    enabled, message = result.stdout.splitlines()[:2]
    assert enabled.split()[0] == "False" and str(planted) not in enabled
    assert "without an on-disk cache" in message and str(planted.parent) in message
    assert sorted(os.listdir(planted)) == ["marker"]


@pytest.fixture
def no_cache_possible(tmp_path):
    """Environment of a process with no usable cache: HOME is a file, TMPDIR does not exist."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    return _clean_env(HOME=str(home), TMPDIR=str(tmp_path / "missing"))


def test_no_temporary_directory_at_all_imports_trains_and_infers(tmp_path, no_cache_possible):
    """No writable temporary directory anywhere (tempfile raises FileNotFoundError):
    ``import fastdl`` works, a training step and an inference plan run, uncached."""
    script = """
        import tempfile
        # what tempfile sees on a machine with no writable /tmp, /var/tmp or cwd
        tempfile._candidate_tempdir_list = lambda: [%r]
        import warnings
        warnings.simplefilter("ignore")
        import numpy as np
        import fastdl
        from fastdl import nn, optim, runtime
        from fastdl import functional as F
        assert not runtime.cache_enabled()
        rng = np.random.default_rng(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        opt = optim.SGD(model.parameters(), lr=0.1)
        x = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
        loss = F.cross_entropy(model(fastdl.Tensor(x)), np.array([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        plan = fastdl.deploy.compile(model, x)
        print(np.isfinite(loss.item()), plan(x).shape)
    """ % str(tmp_path / "missing")
    result = _run(script, no_cache_possible, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "(4,", "3)"]


def test_unwritable_numba_cache_dir_compiles_uncached(tmp_path):
    """A NUMBA_CACHE_DIR that cannot be written (a read-only install whose package
    directory cannot take Numba's cache either) must not make every kernel fail with
    "cannot cache function"."""
    (tmp_path / "a-file").write_text("")
    env = _clean_env(NUMBA_CACHE_DIR=str(tmp_path / "a-file" / "cache"),
                     # only the user's directory: as when site-packages is read-only
                     NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator")
    script = """
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import fastdl
        import numpy as np
        from fastdl import runtime
        from fastdl.kernels.activation import relu_forward
        print(runtime.cache_enabled(), relu_forward(np.array([-1.0, 2.0])).tolist())
        print("|".join(str(w.message) for w in caught))
    """
    result = _run(script, env, tmp_path)
    assert result.returncode == 0, result.stderr
    first, message = result.stdout.splitlines()[:2]
    assert first == "False [0.0, 2.0]"
    assert "NUMBA_CACHE_DIR" in message
