"""Atomic file writes: a crash mid-save never leaves a broken or half-written file."""
import os
import tempfile


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

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
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                    suffix=".tmp")
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
