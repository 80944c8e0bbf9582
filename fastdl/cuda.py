"""``fastdl.cuda``: answers as ``torch.cuda`` does on a machine without a GPU.

fastdl runs on the CPU only, so code written for either can ask
``fastdl.cuda.is_available()`` and take its CPU path. Seeding calls are
accepted and do nothing (as torch's are without CUDA); calls that need a
device raise a RuntimeError.
"""
__all__ = ["is_available", "device_count", "is_initialized", "manual_seed",
           "manual_seed_all", "empty_cache", "synchronize", "current_device"]

_NO_CUDA = "%s: CUDA is not available: fastdl runs on the CPU only"


def is_available():
    """False: fastdl has no CUDA devices."""
    return False


def device_count():
    """0."""
    return 0


def is_initialized():
    """False."""
    return False


def manual_seed(seed):
    """Accepted and ignored (there is no CUDA generator), as torch does without CUDA."""
    del seed


def manual_seed_all(seed):
    """Accepted and ignored, as :func:`manual_seed`."""
    del seed


def empty_cache():
    """Nothing to free."""


def synchronize(device=None):
    """Raises RuntimeError: there is no CUDA device to wait for."""
    raise RuntimeError(_NO_CUDA % "cuda.synchronize")


def current_device():
    """Raises RuntimeError: there is no current CUDA device."""
    raise RuntimeError(_NO_CUDA % "cuda.current_device")
