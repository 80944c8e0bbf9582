"""What the Trainer measures besides the loss, per task.

========================  ==========================  =============  ========================
task                      output, target              metrics        ``accuracy`` means
========================  ==========================  =============  ========================
``'classification'``      ``(N, C)``, int ``(N,)``    accuracy       correct / samples
``'segmentation'``        ``(N, C, *S)``, int         accuracy,      correct / pixels
                          ``(N, *S)``                 mean_iou
``'regression'``          anything else (float        none: only     (not logged)
                          targets, ``mse_loss``)      the loss
========================  ==========================  =============  ========================

Targets equal to the loss's ``ignore_index`` are left out of every metric.
The task is the Trainer's ``task=`` argument, else a regression loss
(``MSELoss``/``mse_loss``, L1, smooth L1, Huber) says regression, else the
first batch's output and target shapes decide.
"""
import functools

import numpy as np

from fastdl.train.metrics import confusion_matrix, mean_iou_from_confusion

TASKS = ("classification", "segmentation", "regression")

#: The metrics logged (as ``train_<name>``/``val_<name>``) for each task, besides ``loss``.
TASK_METRICS = {"classification": ("accuracy",), "segmentation": ("accuracy", "mean_iou"),
                "regression": ()}

_REGRESSION_LOSSES = ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "mse_loss", "l1_loss",
                      "smooth_l1_loss", "huber_loss")


def check_task(task):
    """``task`` if it is one of :data:`TASKS` or None (``'auto'`` is None)."""
    if task is None or task == "auto":
        return None
    if task not in TASKS:
        raise ValueError("Trainer: task must be 'auto', %s, got %r"
                         % (", ".join(repr(t) for t in TASKS), task))
    return task


def _unwrap(loss_fn):
    while isinstance(loss_fn, functools.partial):
        loss_fn = loss_fn.func
    return loss_fn


def task_from_loss(loss_fn):
    """``'regression'`` for a known regression loss (module or function), else None."""
    loss_fn = _unwrap(loss_fn)
    name = getattr(loss_fn, "__name__", None) or type(loss_fn).__name__
    return "regression" if name in _REGRESSION_LOSSES else None


def ignore_index_of(loss_fn):
    """The loss's ``ignore_index`` (a module attribute or a partial's keyword), or -100."""
    while isinstance(loss_fn, functools.partial):
        if "ignore_index" in loss_fn.keywords:
            return int(loss_fn.keywords["ignore_index"])
        loss_fn = loss_fn.func
    return int(getattr(loss_fn, "ignore_index", -100))


def infer_task(output, target):
    """The task from one batch: ``output`` and ``target`` as ndarrays.

    Integer targets with one axis fewer than the output, matching it but for
    the class axis 1, are classification (``(N,)``) or segmentation
    (``(N, *S)``); anything else is regression.
    """
    target = np.asarray(target)
    if target.dtype.kind in "iu" and output.ndim == target.ndim + 1 and output.ndim >= 2 \
            and output.shape[:1] + output.shape[2:] == target.shape:
        return "classification" if output.ndim == 2 else "segmentation"
    return "regression"


class EpochScores:
    """Running sums of the loss and the task's metrics over batches, reducible over ranks.

    Parameters
    ----------
    task : one of :data:`TASKS`
    ignore_index : int
        Targets equal to it count for no metric.
    keep : bool
        Keep every batch's labels (ignored ones dropped; flattened pixels for
        segmentation) or targets and outputs (regression), for ``labels()``.
    """

    def __init__(self, task, ignore_index=-100, keep=False):
        self.task, self.ignore_index, self.keep = task, int(ignore_index), keep
        self.loss_sum, self.samples, self.correct, self.counted = 0.0, 0, 0, 0
        self.confusion = None
        self.y_true, self.y_pred = [], []

    def add(self, loss, output, target):
        """One batch: its mean ``loss``, ``output`` ndarray and ``target``."""
        target = np.asarray(target)
        self.loss_sum += loss * len(target)
        self.samples += len(target)
        if self.task == "regression":
            if self.keep:
                self.y_true.append(target)
                self.y_pred.append(output)
            return
        valid = target != self.ignore_index
        target, prediction = target[valid], output.argmax(axis=1)[valid]
        self.correct += int(np.count_nonzero(prediction == target))
        self.counted += target.size
        if self.task == "segmentation":
            counts = confusion_matrix(target, prediction, output.shape[1])
            self.confusion = counts if self.confusion is None else self.confusion + counts
        if self.keep:
            self.y_true.append(target)
            self.y_pred.append(prediction)

    def reduce(self, allreduce):
        """Sum the counts over ranks with ``allreduce(float64 vector) -> vector``."""
        confusion = np.zeros(0) if self.confusion is None else self.confusion.ravel()
        totals = allreduce(np.concatenate([[self.loss_sum, self.samples, self.correct,
                                            self.counted], confusion]))
        self.loss_sum = float(totals[0])
        self.samples, self.correct, self.counted = (int(round(v)) for v in totals[1:4])
        if self.confusion is not None:
            self.confusion = np.rint(totals[4:]).astype(np.int64).reshape(
                self.confusion.shape)

    def summary(self):
        """``{'loss': ..., <the task's metrics>: ...}`` (NaN where nothing was counted)."""
        scores = {"loss": self.loss_sum / self.samples if self.samples else float("nan")}
        if self.task != "regression":
            scores["accuracy"] = self.correct / self.counted if self.counted else float("nan")
        if self.task == "segmentation":
            scores["mean_iou"] = float("nan") if self.confusion is None else \
                mean_iou_from_confusion(self.confusion)
        return scores

    def labels(self):
        """``(y_true, y_pred)`` concatenated over the kept batches."""
        if not self.y_true:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(self.y_true), np.concatenate(self.y_pred)
