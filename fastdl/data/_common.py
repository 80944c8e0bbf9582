"""Helpers shared by the data modules: Tensors in and out, random generators, index checks.

The data layer hands out fastdl Tensors (as ``torch.utils.data`` hands out
torch Tensors) but sits below the autograd: :mod:`fastdl.autograd` is imported
on first use, never at import time.
"""
import sys

import numpy as np

from fastdl.random import Generator, default_generator


def tensor_type():
    """fastdl's ``Tensor`` class (imported on first use)."""
    from fastdl.autograd import Tensor
    return Tensor


def is_tensor(value):
    """Whether ``value`` is a fastdl Tensor (without importing the autograd)."""
    autograd = sys.modules.get("fastdl.autograd")
    return autograd is not None and isinstance(value, autograd.Tensor)


def as_tensor(array):
    """A Tensor over ``array`` (no copy for float32/float64/integer/bool arrays)."""
    if is_tensor(array):
        return array
    return tensor_type()(np.asarray(array))


def as_array(value):
    """The ndarray under a Tensor, or ``np.asarray(value)``."""
    return value.array if is_tensor(value) else np.asarray(value)


def like(result, original):
    """``result`` (an ndarray) as a Tensor when ``original`` was one, else as is."""
    return as_tensor(result) if is_tensor(original) else result


def is_integer(value):
    """A Python or NumPy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def numpy_generator(generator):
    """The ``numpy.random.Generator`` to draw from for a ``generator=`` argument.

    Parameters
    ----------
    generator : None, int, numpy.random.Generator or generator-like
        None: fastdl's global generator (seeded by ``fastdl.manual_seed``). A
        ``fastdl.Generator``: its NumPy generator (draws advance it). An
        int: a fresh generator seeded with it. An object holding a NumPy
        generator (as ``generator``, ``rng`` or their private forms) or with
        ``initial_seed()`` (as ``torch.Generator``): that generator, or a fresh
        one seeded with the initial seed.

    Raises
    ------
    TypeError
        For anything else.
    """
    if generator is None:
        return default_generator()
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, Generator):     # fastdl.Generator: draws advance its state
        return generator.generator
    if is_integer(generator):
        return np.random.default_rng(int(generator))
    for name in ("generator", "_generator", "rng", "_rng"):
        inner = getattr(generator, name, None)
        if isinstance(inner, np.random.Generator):
            return inner
    initial_seed = getattr(generator, "initial_seed", None)
    if callable(initial_seed):
        return np.random.default_rng(int(initial_seed()))
    raise TypeError("generator must be None, an int seed or a numpy.random.Generator, got %s"
                    % type(generator).__name__)
