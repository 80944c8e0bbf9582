"""Random generators: fastdl's global one (parameter init, dropout, shuffles, the random
factories) and :class:`Generator`, torch's ``torch.Generator`` on the CPU.

A :class:`Generator` holds a ``numpy.random.Generator`` (PCG64) as its ``generator``
attribute, which it replaces when seeded; every fastdl function that takes
``generator=`` draws from it, and the generator also answers NumPy's drawing methods
(``g.normal(...)``, ``g.permutation(n)``) by handing them to that NumPy generator.
"""
import os

import numpy as np

from fastdl._checks import is_int
from fastdl.devices import CPU, check_cpu

__all__ = ["Generator", "manual_seed", "initial_seed", "seed", "default_generator",
           "default_cpu_generator", "get_rng_state", "set_rng_state", "as_numpy_generator"]

_SEED_LIMIT = 1 << 64


def _check_seed(seed, op):
    if not is_int(seed) or not 0 <= seed < _SEED_LIMIT:
        raise ValueError("%s: seed must be a non-negative int below 2**64, got %r" % (op, seed))
    return int(seed)


def _fresh_seed():
    return int.from_bytes(os.urandom(8), "little") >> 1   # 63 bits, as torch's seed()


class Generator:
    """A random generator, as ``torch.Generator`` (CPU only).

    Parameters
    ----------
    device : str or device
        Only the CPU.

    Notes
    -----
    Unseeded, a generator starts from a fresh nondeterministic seed (see
    :meth:`initial_seed`). Its state (:meth:`get_state`) is a JSON-serialisable dict,
    where torch's is a ByteTensor; :meth:`set_state` takes it back, and ``fastdl.save``
    stores it.
    """

    __slots__ = ("generator", "_seed")

    def __init__(self, device="cpu"):
        check_cpu(device, "Generator")
        self._seed = _fresh_seed()
        self.generator = np.random.default_rng(self._seed)

    @property
    def device(self):
        """Always ``device(type='cpu')``."""
        return CPU

    def manual_seed(self, seed):
        """Seed it with ``seed`` (an int in ``[0, 2**64)``); returns self."""
        self._seed = _check_seed(seed, "manual_seed")
        self.generator = np.random.default_rng(self._seed)
        return self

    def initial_seed(self):
        """The seed it was last seeded with."""
        return self._seed

    def seed(self):
        """Seed it from a fresh nondeterministic seed and return that seed."""
        seed = _fresh_seed()
        self.manual_seed(seed)
        return seed

    def get_state(self):
        """Its state, a new JSON-serialisable dict (for :meth:`set_state`)."""
        return self.generator.bit_generator.state

    def set_state(self, new_state):
        """Restore a state from :meth:`get_state`; returns self."""
        if not isinstance(new_state, dict):
            raise TypeError("set_state: expected the dict get_state() returns, got %s"
                            % type(new_state).__name__)
        self.generator.bit_generator.state = new_state
        return self

    def __getattr__(self, name):
        # NumPy's drawing methods (normal, integers, permutation, ...), for code that
        # takes a numpy.random.Generator
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.generator, name)

    def __repr__(self):
        return "<fastdl.Generator object at 0x%x>" % id(self)


_default = Generator()


def manual_seed(seed):
    """Seed fastdl's global generator (parameter init, dropout, shuffles without a seed).

    Parameters
    ----------
    seed : int
        In ``[0, 2**64)``.

    Returns
    -------
    Generator
        The global generator (as torch's ``manual_seed`` returns its default
        generator); its ``generator`` attribute is the NumPy generator drawn from.
    """
    return _default.manual_seed(seed)


def initial_seed():
    """The seed the global generator was last seeded with."""
    return _default.initial_seed()


def seed():
    """Seed the global generator from a fresh nondeterministic seed and return it."""
    return _default.seed()


def default_cpu_generator():
    """The global :class:`Generator` (torch's ``torch.default_generator``)."""
    return _default


def default_generator():
    """The global generator's ``numpy.random.Generator`` (replaced by :func:`manual_seed`)."""
    return _default.generator


def as_numpy_generator(generator):
    """The ``numpy.random.Generator`` a ``generator=`` argument draws from: the global
    one for None, a :class:`Generator`'s own, or a NumPy generator itself."""
    if generator is None:
        return _default.generator
    if isinstance(generator, Generator):
        return generator.generator
    return generator


def get_rng_state():
    """The global generator's state, a JSON-serialisable dict (for checkpoints)."""
    return _default.get_state()


def set_rng_state(new_state):
    """Restore a state returned by :func:`get_rng_state`."""
    _default.set_state(new_state)
