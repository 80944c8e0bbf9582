"""``fastdl.backends``: torch's backend switches, answering for a CPU-only library.

``fastdl.backends.cudnn.deterministic = True`` and ``.benchmark = False`` are
accepted (they change nothing: fastdl's kernels are deterministic at a fixed
thread count) and ``fastdl.backends.mps.is_available()`` is False.
"""
from fastdl.backends import cudnn, mps

__all__ = ["cudnn", "mps"]
