"""fastdl: fast CPU deep learning for convolutional networks.

Compiled kernels (Cython + BLAS for convolution, Numba for the rest) under a
small autograd and a PyTorch-shaped API: ``import fastdl as torch`` gives a
CPU CNN program the names it uses (``torch.tensor``, ``torch.zeros``,
``torch.float32``, ``torch.device``, ``torch.no_grad``, ``torch.cuda``,
``torch.nn``, ``torch.optim``, ``torch.utils.data``, ...).

The layers, the autograd and the subpackages load on first use (PEP 562), as
SciPy's do: a service that imports only ``fastdl.deploy`` to run a saved plan
does not pay for the training stack, or for Numba, at start-up.
"""
import importlib

from fastdl import runtime  # first: configures Numba before it is imported
from fastdl.random import (Generator, default_cpu_generator, get_rng_state, initial_seed,
                           manual_seed, seed, set_rng_state)
from fastdl.runtime import get_num_threads, set_num_threads

__version__ = "0.1.0"

default_generator = default_cpu_generator()   # torch.default_generator: the global Generator

# public name -> the module that defines it
_ATTRIBUTES = {
    **dict.fromkeys(["Tensor", "tensor"], "fastdl.autograd"),
    **dict.fromkeys(["device"], "fastdl.devices"),
    **dict.fromkeys(["get_default_dtype", "set_default_dtype"], "fastdl.dtypes"),
    **dict.fromkeys(["as_tensor", "from_numpy", "zeros", "ones", "empty", "full",
                     "zeros_like", "ones_like", "empty_like", "full_like", "arange",
                     "linspace", "eye", "rand", "randn", "randint", "randperm", "rand_like",
                     "randn_like", "randint_like"], "fastdl.creation"),
    **dict.fromkeys(["load", "save"], "fastdl.serialization"),
    **dict.fromkeys(["use_deterministic_algorithms", "are_deterministic_algorithms_enabled"],
                    "fastdl.backends"),
    # torch's functions of tensors (fastdl.sum(x, dim), fastdl.cat, ...)
    **dict.fromkeys([
        "sum", "mean", "std", "var", "prod", "norm", "logsumexp", "cumsum", "max", "min",
        "amax", "amin", "argmax", "argmin", "all", "any", "sort", "argsort", "topk",
        "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
        "split", "chunk", "unbind", "gather", "index_select", "narrow", "select", "flip",
        "masked_fill", "scatter", "bernoulli", "exp", "log", "log1p", "sqrt", "rsqrt", "abs",
        "sign", "neg", "reciprocal", "square", "floor", "ceil", "round", "trunc", "clamp", "clip",
        "sigmoid", "tanh", "relu", "softmax", "log_softmax", "isnan", "isinf", "isfinite",
        "add", "sub", "mul", "div", "pow", "matmul", "mm", "bmm", "eq", "ne", "lt", "le",
        "gt", "ge", "logical_not", "logical_and", "logical_or", "clone", "detach", "cat",
        "concat", "concatenate", "stack", "where", "maximum", "minimum", "allclose",
        "isclose", "equal", "numel", "is_tensor", "is_floating_point", "no_grad",
        "enable_grad", "set_grad_enabled", "inference_mode", "is_grad_enabled"],
        "fastdl.tensor_functions"),
}
# dtype names (fastdl.float32, fastdl.long, ...): NumPy dtypes, see fastdl.dtypes
_DTYPE_NAMES = {"float32", "float", "float64", "double", "float16", "half", "int64", "long",
                "int32", "int", "int16", "short", "int8", "uint8", "bool"}
_SUBMODULES = {"accelerator", "autograd", "backends", "bench", "cuda", "data", "deploy",
               "detection", "distributed", "functional", "kernels", "models", "nn", "optim",
               "random", "serialization", "shapes", "testing", "train", "utils"}


def __getattr__(name):
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    elif name in _DTYPE_NAMES:
        value = importlib.import_module("fastdl.dtypes").DTYPES[name]
    elif name in _SUBMODULES:
        value = importlib.import_module("fastdl." + name)
    else:
        raise AttributeError("module 'fastdl' has no attribute %r" % (name,))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES) | _SUBMODULES | _DTYPE_NAMES)


__all__ = ["Generator", "Tensor", "cat", "default_generator", "enable_grad", "get_num_threads",
           "get_rng_state", "initial_seed", "is_grad_enabled", "load", "manual_seed",
           "no_grad", "save", "seed", "set_num_threads", "set_rng_state", "stack", "tensor",
           "functional", "nn", "optim"]

runtime.pin_blas_to_one_thread()  # NumPy's BLAS; SciPy's is pinned where it loads
