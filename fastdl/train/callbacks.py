"""Callbacks: early stopping, checkpoints. Each gets ``on_epoch_end(trainer, record)``."""
import math

from fastdl.train.checkpoint import save_checkpoint
from fastdl.train.tasks import TASK_METRICS

#: Parts of a history key that mean "higher is better" (``mode='auto'``).
_HIGHER_IS_BETTER = ("acc", "iou", "dice", "f1", "auc", "precision", "recall")


class Callback:
    """Base class: override the hooks you need."""

    def on_train_begin(self, trainer):
        pass

    def on_epoch_end(self, trainer, record):
        pass

    def on_train_end(self, trainer):
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A history key, e.g. ``'val_loss'``, ``'val_accuracy'`` or ``'val_mean_iou'``.
    mode : {'auto', 'min', 'max'}
        ``'auto'``: max for keys containing "acc", "iou", "dice", "f1", "auc",
        "precision" or "recall", else min.
    restore_best : bool
        Load the best epoch's weights when training ends.

    Raises
    ------
    ValueError
        (when training begins, or once the task is known) if ``monitor`` is a
        task metric the trainer's task does not log, e.g. ``'val_accuracy'``
        for regression.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best=True):
        if mode not in ("auto", "min", "max"):
            raise ValueError("EarlyStopping: mode must be auto/min/max, got %r" % (mode,))
        if patience < 0 or min_delta < 0:
            raise ValueError("EarlyStopping: patience and min_delta must be >= 0")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        if mode == "auto":
            mode = "max" if any(part in monitor for part in _HIGHER_IS_BETTER) else "min"
        self.mode = mode
        self.restore_best = restore_best
        self.best, self.best_epoch, self.best_state, self.wait = None, None, None, 0
        self.stopped_epoch = None

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _check_task(self, trainer):
        names = getattr(trainer, "metric_names", lambda: None)()
        metric = self.monitor.split("_", 1)[-1]
        task_metrics = {name for names_of_task in TASK_METRICS.values()
                        for name in names_of_task}
        if names is not None and metric in task_metrics and metric not in names:
            logged = ", ".join(repr(prefix + name) for name in ("loss",) + tuple(names)
                               for prefix in ("train_", "val_"))
            raise ValueError("EarlyStopping: monitor %r is not logged for a %s task (it logs "
                             "%s)" % (self.monitor, trainer.task, logged))

    def on_train_begin(self, trainer):
        self._check_task(trainer)

    def on_epoch_end(self, trainer, record):
        self._check_task(trainer)
        if self.monitor not in record:
            raise KeyError("EarlyStopping: monitored key %r not in the epoch record %s"
                           % (self.monitor, sorted(record)))
        value = record[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, record["epoch"], 0
            if self.restore_best:
                self.best_state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.stopped_epoch = record["epoch"]
                trainer.stop_training = True

    def on_train_end(self, trainer):
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Write a full checkpoint (model, optimizer, scheduler, epoch, RNG, history) every epoch.

    Written atomically; only epochs whose losses are finite are saved, so the
    file always holds the last good state.
    """

    def __init__(self, path):
        self.path = path

    def on_epoch_end(self, trainer, record):
        if all(math.isfinite(v) for v in record.values() if isinstance(v, float)):
            trainer.save_checkpoint(self.path, record["epoch"])


