"""``fastdl.backends``: torch's backend switches, answering for a CPU-only library.

``fastdl.backends.cudnn.deterministic = True`` and ``.benchmark = False`` are
accepted (they change nothing: fastdl's kernels are deterministic at a fixed
thread count) and ``fastdl.backends.mps.is_available()`` is False.
"""
from fastdl.backends import cudnn, mps

__all__ = ["cudnn", "mps", "use_deterministic_algorithms", "are_deterministic_algorithms_enabled"]

_deterministic = False


def use_deterministic_algorithms(mode, *, warn_only=False):
    """Record ``mode`` (``fastdl.use_deterministic_algorithms``): fastdl's kernels give
    the same results run to run at a fixed thread count, so nothing else changes."""
    global _deterministic
    if not isinstance(mode, bool):
        raise TypeError("use_deterministic_algorithms: mode must be a bool, got %s"
                        % type(mode).__name__)
    _deterministic = mode


def are_deterministic_algorithms_enabled():
    """The mode last given to :func:`use_deterministic_algorithms` (False at first)."""
    return _deterministic
