"""The learning-rate scheduler base class, with torch's ``step()`` semantics.

Construction records each group's ``initial_lr`` (``base_lrs``) and takes the
first step, setting the lr for epoch 0. Each ``step()`` advances
``last_epoch`` and writes ``get_lr()`` into ``optimizer.param_groups``. Most
schedules are *chainable*, as torch's: ``get_lr`` scales the group's current
lr, so two schedulers on one optimizer compose, and an lr edited by hand is
carried on. ``step(epoch)`` (deprecated in torch) uses the closed form where
there is one. Calling ``scheduler.step()`` before the first
``optimizer.step()`` warns, as torch does.
"""
import warnings
import weakref
from functools import wraps

from fastdl.optim.optimizer import Optimizer

__all__ = ["LRScheduler", "format_param"]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated "
    "where possible. Please use `scheduler.step()` to step the scheduler. During the "
    "deprecation, if epoch is different from None, the closed form is used instead of the "
    "new chainable form, where available.")


def format_param(name, optimizer, value):
    """One value per parameter group: a list as given (checked), a scalar repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError("%s must have the same length as optimizer.param_groups. %s has "
                             "%d values, param_groups has %d." % (
                                 name, name, len(value), len(optimizer.param_groups)))
        return list(value)
    return [value] * len(optimizer.param_groups)


def _watch_step(optimizer):
    """Wrap ``optimizer.step`` once to record that it ran (for the order warning)."""
    if hasattr(optimizer.step, "_wrapped_by_lr_sched"):
        return
    reference = weakref.ref(optimizer)
    method = optimizer.step.__func__

    @wraps(method)
    def step(*args, **kwargs):
        owner = reference()
        owner._opt_called = True
        return method(owner, *args, **kwargs)
    step._wrapped_by_lr_sched = True
    optimizer.step = step


class LRScheduler:
    """Base class: subclasses implement ``get_lr()`` (and optionally
    ``_get_closed_form_lr()``).

    Parameters
    ----------
    optimizer : fastdl.optim.Optimizer
    last_epoch : int
        ``-1`` to start; a later epoch only to resume, when every group has an
        ``initial_lr``.
    """

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError("%s is not an Optimizer" % type(optimizer).__name__)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for index, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError("param 'initial_lr' is not specified in param_groups[%d] "
                                   "when resuming a scheduler with last_epoch >= 0 (load the "
                                   "optimizer's state first)" % index)
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        _watch_step(optimizer)
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        """The lr of each group for ``last_epoch`` (called by :meth:`step`)."""
        raise NotImplementedError("schedulers define get_lr")  # abstract

    def get_last_lr(self):
        """The lrs the last :meth:`step` set, one per parameter group."""
        return self._last_lr

    def _group_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, epoch=None):
        """Advance one epoch (call it after ``optimizer.step()``) and set the new lrs."""
        if self._step_count == 1 and not getattr(self.optimizer, "_opt_called", False):
            warnings.warn("Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
                          "You should call them in the opposite order: `optimizer.step()` "
                          "before `lr_scheduler.step()`; otherwise the first value of the "
                          "learning rate schedule is skipped.", UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed_form = getattr(self, "_get_closed_form_lr", None)
            values = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = self._group_lrs()

    def state_dict(self):
        """Every attribute but the optimizer (plain numbers, lists and strings)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned."""
        self.__dict__.update(state_dict)
