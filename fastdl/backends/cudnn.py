"""``fastdl.backends.cudnn``: cuDNN's switches as plain settable attributes.

fastdl uses no cuDNN: ``is_available()`` is False and setting ``deterministic``,
``benchmark``, ``enabled`` or ``allow_tf32`` has no effect.
"""
__all__ = ["is_available", "version", "deterministic", "benchmark", "enabled", "allow_tf32"]

deterministic = False
benchmark = False
enabled = True
allow_tf32 = True


def is_available():
    """False: fastdl does not use cuDNN."""
    return False


def version():
    """None: no cuDNN is loaded."""
    return None
