"""Atomic file writes: a crash mid-save never leaves a broken or half-written file.

A save writes ``.{name}.tmp-{host}-{pid}-{random}`` next to the target, fsyncs it,
renames it over the target and fsyncs the directory. The new file gets the
permissions ``open()`` (and so ``np.save``) would give it: ``0o666`` less the
process's umask. A writer killed mid-save (``kill -9``, power loss) leaves its temp
file behind; the next save of the same target removes it once it is sure the writer
is gone: the pid in the name is not running on this host, or the file has not been
touched for ``STALE_AFTER_S`` seconds. A concurrent writer's temp file is never
removed while that writer is alive.
"""
import os
import re
import secrets
import socket
import threading
import time
import zlib

STALE_AFTER_S = 3600.0
"""A temp file untouched for this long is removed whatever its pid says (pid reuse,
writers on another host sharing the directory)."""

_writing = set()        # temp paths this process is writing now
_writing_lock = threading.Lock()


def _host_tag():
    # A short, filename-safe tag of the host name: a pid is only meaningful on its host.
    return "%08x" % zlib.crc32(socket.gethostname().encode("utf-8", "replace"))


def _temp_path(path, pid=None, host=None):
    """The temp file name a save of ``path`` by process ``pid`` on ``host`` uses."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, ".%s.tmp-%s-%d-%s" % (
        name, _host_tag() if host is None else host, os.getpid() if pid is None else pid,
        secrets.token_hex(4)))


def _pid_alive(pid):
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C there; rely on the age alone
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:     # EPERM: it exists, it is someone else's
        return True
    return True


def _remove_stale_temps(path):
    """Remove temp files of earlier saves of ``path`` whose writer is gone (best effort)."""
    directory, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(r"\.%s\.tmp-([0-9a-f]{8})-([0-9]+)-[0-9a-f]+\Z" % re.escape(name))
    # Earlier versions named temp files .{name}.XXXXXXXX.tmp, with no pid: by age only.
    unowned = re.compile(r"\.%s\.[a-z0-9_]{8}\.tmp\Z" % re.escape(name))
    host, me, now = _host_tag(), os.getpid(), time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None and unowned.match(entry.name) is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            if not stale and match is not None and match.group(1) == host:
                pid = int(match.group(2))
                if pid == me:   # ours unless a thread of this process is writing it now
                    with _writing_lock:
                        stale = entry.path not in _writing
                else:
                    stale = not _pid_alive(pid)
            if stale:
                os.unlink(entry.path)
        except (OSError, ValueError):
            continue


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    The file is created with mode ``0o666 & ~umask``, like ``open(path, "wb")``.
    Temp files that killed earlier saves of ``path`` left behind are removed first.

    Parameters
    ----------
    path : str or os.PathLike
    data : bytes-like

    Raises
    ------
    OSError
        If the directory is missing or not writable; ``path`` is then untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temps(path)
    tmp_path = _temp_path(path)
    with _writing_lock:
        _writing.add(tmp_path)
    try:
        # O_EXCL: never follow or reuse someone else's file; the kernel applies the umask.
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        except BaseException:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
            raise
    finally:
        with _writing_lock:
            _writing.discard(tmp_path)
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    except OSError:
        pass
    finally:
        os.close(dir_fd)
