"""Gradient recording switches, per thread: ``no_grad``, ``enable_grad``,
``set_grad_enabled`` and ``inference_mode``, as in ``torch``.

Each is a context manager and a decorator (``@no_grad()``, and as torch 2 also
``@no_grad`` without parentheses).
"""
import functools
import threading

__all__ = ["is_grad_enabled", "no_grad", "enable_grad", "set_grad_enabled", "inference_mode"]


class _GradMode(threading.local):
    enabled = True


grad_mode = _GradMode()


def is_grad_enabled():
    """Whether operations are currently recorded for backward (per thread)."""
    return grad_mode.enabled


class _GradModeSwitch:
    """Base of the switches: sets ``grad_mode.enabled`` to ``_mode`` inside its block."""

    _mode = False

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]) and cls._takes_function:
            return cls()(args[0])    # used as a decorator without parentheses
        return super().__new__(cls)

    _takes_function = True

    def __enter__(self):
        self._previous = grad_mode.enabled
        grad_mode.enabled = self._mode
        return self

    def __exit__(self, *exc_info):
        grad_mode.enabled = self._previous
        return False

    def __call__(self, function):
        """Decorate ``function`` so that it runs inside this switch's block."""
        switch = self

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with switch.clone():
                return function(*args, **kwargs)
        return wrapper

    def clone(self):
        return type(self)()


class no_grad(_GradModeSwitch):
    """Context manager (and decorator) that turns gradient recording off in this thread."""

    _mode = False


class enable_grad(_GradModeSwitch):
    """Context manager (and decorator) that turns recording back on inside ``no_grad``."""

    _mode = True


class inference_mode(_GradModeSwitch):
    """As ``no_grad`` (fastdl has no separate inference tensors).

    Parameters
    ----------
    mode : bool
        True turns recording off; False leaves it as it is.
    """

    def __init__(self, mode=True):
        if not isinstance(mode, bool):
            raise TypeError("inference_mode: mode must be a bool, got %s" % type(mode).__name__)
        self.mode = mode

    def __enter__(self):
        self._previous = grad_mode.enabled
        if self.mode:
            grad_mode.enabled = False
        return self

    def clone(self):
        return type(self)(self.mode)


class set_grad_enabled(_GradModeSwitch):
    """Turn recording on or off: at once when called, until the end of the block when
    used as a context manager (then the previous mode comes back).

    Parameters
    ----------
    mode : bool
    """

    _takes_function = False

    def __init__(self, mode):
        if not isinstance(mode, bool):
            raise TypeError("set_grad_enabled: mode must be a bool, got %s"
                            % type(mode).__name__)
        self.mode = mode
        self._previous = grad_mode.enabled
        grad_mode.enabled = mode

    def __enter__(self):
        return self

    def __call__(self, function):
        grad_mode.enabled = self._previous    # as a decorator it only applies inside calls
        return super().__call__(function)

    def clone(self):
        return type(self)(self.mode)
