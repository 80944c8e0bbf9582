"""The one JIT policy for fastdl's Numba kernels.

Kernels are written as plain Python functions and bound here, so the plain
version stays importable and debuggable (``NUMBA_DISABLE_JIT=1`` runs every
kernel as ordinary Python; Numba itself honours that variable).

    def _relu_forward(x, out): ...
    relu_forward = jit(_relu_forward)                  # serial
    relu_forward = jit(_relu_forward, parallel=True)   # prange loops
"""
from fastdl import runtime  # noqa: F401  (sets Numba's environment before import)

import numba
from numba import prange  # noqa: F401  (re-exported for kernels)

__all__ = ["jit", "prange"]


def jit(function=None, *, parallel=False, fastmath=False, inline="never"):
    """Compile ``function`` with Numba in nopython mode, cached on disk when possible.

    Parameters
    ----------
    function : callable
        A plain-Python kernel.
    parallel : bool
        Compile ``prange`` loops to run on Numba's thread pool.
    fastmath : bool or set of str
        Only where it cannot change results beyond rounding (e.g. ``{"contract"}``).

    Returns
    -------
    numba dispatcher (or a decorator when called without ``function``).
    """
    def bind(fn):
        return numba.njit(fn, cache=runtime.cache_enabled(), parallel=parallel,
                          fastmath=fastmath, nogil=True, inline=inline)
    if function is None:
        return bind
    return bind(function)
