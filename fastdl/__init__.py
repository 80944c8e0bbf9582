"""fastdl: fast CPU deep learning for convolutional networks.

Compiled kernels (Cython + BLAS for convolution, Numba for the rest) under a
small autograd and a PyTorch-shaped API.

The layers, the autograd and the subpackages load on first use (PEP 562), as
SciPy's do: a service that imports only ``fastdl.deploy`` to run a saved plan
does not pay for the training stack, or for Numba, at start-up.
"""
import importlib

from fastdl import runtime  # first: configures Numba before it is imported
from fastdl.random import manual_seed
from fastdl.runtime import get_num_threads, set_num_threads

__version__ = "0.1.0"

# public name -> the module that defines it
_ATTRIBUTES = {
    **dict.fromkeys(["Tensor", "cat", "enable_grad", "is_grad_enabled", "no_grad", "stack",
                     "tensor"], "fastdl.autograd"),
    **dict.fromkeys(["load", "save"], "fastdl.serialization"),
}
_SUBMODULES = {"autograd", "bench", "data", "deploy", "detection", "distributed",
               "functional", "kernels", "models", "nn", "optim", "serialization", "shapes",
               "testing", "train", "utils"}


def __getattr__(name):
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module("fastdl." + name)
    else:
        raise AttributeError("module 'fastdl' has no attribute %r" % (name,))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES) | _SUBMODULES)


__all__ = ["Tensor", "cat", "enable_grad", "get_num_threads", "is_grad_enabled",
           "load", "manual_seed", "no_grad", "save", "set_num_threads", "stack", "tensor",
           "functional", "nn", "optim"]

runtime.pin_blas_to_one_thread()  # NumPy's BLAS; SciPy's is pinned where it loads
