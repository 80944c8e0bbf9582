"""``fastdl.backends.mps``: Apple's Metal backend, never available to fastdl."""
__all__ = ["is_available", "is_built"]


def is_available():
    """False: fastdl computes on the CPU."""
    return False


def is_built():
    """False."""
    return False
