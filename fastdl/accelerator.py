"""``fastdl.accelerator``: as ``torch.accelerator`` with no accelerator present."""
__all__ = ["is_available", "device_count", "current_accelerator"]


def is_available():
    """False: fastdl computes on the CPU."""
    return False


def device_count():
    """0."""
    return 0


def current_accelerator(check_available=False):
    """None: there is no accelerator."""
    del check_available
