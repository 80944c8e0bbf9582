"""The one JIT policy for fastdl's Numba kernels.

Kernels are written as plain Python functions and bound here, so the plain
version stays importable and debuggable (``NUMBA_DISABLE_JIT=1`` runs every
kernel as ordinary Python; Numba itself honours that variable).

    def _relu_forward(x, out): ...
    relu_forward = jit(_relu_forward)                  # serial
    relu_forward = jit(_relu_forward, parallel=True)   # prange loops
"""
import types

from fastdl import runtime  # first: sets Numba's environment before its import

import numba
from numba import prange  # noqa: F401  (re-exported for kernels)

runtime.numba_loaded(numba)

__all__ = ["jit", "prange"]


def _variant(fn, parallel, fastmath):
    """A copy of ``fn`` whose qualified name says how it is compiled.

    Numba's on-disk cache keys a function by its qualified name, line and
    bytecode, not by ``parallel``/``fastmath``: a serial and a parallel binding
    of one plain kernel would load each other's machine code (a parallel
    max-pool was found running serially, 10x slower).
    """
    tag = ("parallel" if parallel else "serial") + ("_fastmath" if fastmath else "")
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    copy.__qualname__ = "%s.%s" % (fn.__qualname__, tag)
    copy.__module__, copy.__doc__ = fn.__module__, fn.__doc__
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


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
        return numba.njit(_variant(fn, parallel, fastmath), cache=runtime.cache_enabled(),
                          parallel=parallel, fastmath=fastmath, nogil=True, inline=inline)
    if function is None:
        return bind
    return bind(function)
