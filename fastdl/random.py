"""The global random generator used for parameter initialisation and dropout."""
import numpy as np

from fastdl._checks import is_int

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed fastdl's global generator (parameter init, dropout, shuffles without a seed).

    Parameters
    ----------
    seed : int
        Non-negative.

    Returns
    -------
    numpy.random.Generator
        The new global generator.
    """
    global _generator
    if not is_int(seed) or seed < 0:
        raise ValueError("manual_seed: seed must be a non-negative int, got %r" % (seed,))
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator():
    """The global ``numpy.random.Generator`` (replaced by :func:`manual_seed`)."""
    return _generator


def get_rng_state():
    """The global generator's state, a JSON-serialisable dict (for checkpoints)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state returned by :func:`get_rng_state`."""
    _generator.bit_generator.state = state
