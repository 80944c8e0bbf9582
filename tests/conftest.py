import functools
import os
import sys

import numpy as np
import pytest

PORTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ported")


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator per test."""
    return np.random.default_rng(0)


@functools.lru_cache(maxsize=None)
def _cifar_zoo(framework):
    sys.path.insert(0, PORTED)
    try:
        from porting import load_program
    finally:
        sys.path.remove(PORTED)
    return load_program(os.path.join(PORTED, "cifar_zoo.py"), framework)


@pytest.fixture(scope="session")
def cifar_zoo():
    """``cifar_zoo(framework)``: the ported CIFAR-10 zoo (tests/ported/cifar_zoo.py, a
    torch program) run with its imports as ``"torch"`` or ``"fastdl"``, loaded once."""
    return _cifar_zoo
