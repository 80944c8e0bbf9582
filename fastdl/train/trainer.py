"""The training loop: fit, evaluate, predict, with callbacks, checkpoints and resume."""
import math
import sys
import time
import warnings

import numpy as np

from fastdl import autograd
from fastdl.functional import softmax
from fastdl.optim.lr_scheduler import ReduceLROnPlateau
from fastdl.train.checkpoint import load_checkpoint, save_checkpoint
from fastdl.train.history import History
from fastdl.train.metrics import accuracy
from fastdl.train.tasks import (TASK_METRICS, EpochScores, check_task, ignore_index_of,
                                infer_task, task_from_loss)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Trainer:
    """Train a classifier, a segmenter or a regressor: ``fit``, ``evaluate``, ``predict``.

    Besides the loss, each epoch logs the task's metrics as ``train_<name>`` and
    ``val_<name>`` (see :mod:`fastdl.train.tasks`):

    - classification, output ``(N, C)`` and int target ``(N,)``: ``accuracy``;
    - segmentation, output ``(N, C, H, W)`` and int target ``(N, H, W)``:
      ``accuracy`` (pixel accuracy) and ``mean_iou`` (over the classes present
      in the target or the prediction);
    - regression (float targets, ``mse_loss``): none, only the loss.

    Targets equal to the loss's ``ignore_index`` count for no metric.

    Parameters
    ----------
    model : nn.Module returning logits (or values, for regression)
    optimizer : optim.Optimizer
    loss_fn : callable ``(output, targets) -> scalar Tensor``
    metrics : dict of name -> callable ``(y_true, y_pred) -> float``, optional
        Extra scores computed by :meth:`evaluate` (and logged as ``val_<name>``),
        e.g. ``{"balanced_accuracy": ...}``. They get the labels (segmentation:
        the pixels' labels, flattened) or, for regression, targets and outputs.
    callbacks : list of Callback
    scheduler : lr scheduler (stepped once per epoch; ReduceLROnPlateau gets val_loss)
    grad_clip : float, optional
        Max total gradient norm (``clip_grad_norm_``); steps with a non-finite
        norm are skipped.
    regularization : callable ``(model) -> scalar Tensor``, optional
        Added to the loss (e.g. ``lambda m: 1e-4 * F.l2_penalty(m.parameters())``).
    progress : bool or None
        tqdm bar per epoch; None shows it only on a terminal.
    distributed : bool or None
        Data-parallel over MPI (``fastdl.distributed``): weights broadcast from
        rank 0 at the start, gradients averaged every step, metrics reduced;
        only rank 0 shows progress and writes checkpoints. Give each rank its
        shard with a ``DistributedSampler``. None (the default): data-parallel
        exactly when an MPI launcher started several ranks. False under such a
        launcher trains each rank alone, with a warning.
    task : {'auto', 'classification', 'segmentation', 'regression'} or None
        Which metrics to log. ``'auto'``/None: regression for a regression loss
        (``MSELoss``, ``mse_loss``, ...), else decided from the first batch's
        output and target shapes (int target with the output's shape less its
        axis 1: classification for ``(N,)``, segmentation for ``(N, H, W)``;
        anything else: regression).
    """

    def __init__(self, model, optimizer, loss_fn, metrics=None, callbacks=None, scheduler=None,
                 grad_clip=None, regularization=None, progress=None, distributed=None,
                 task=None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.metrics = dict(metrics or {})
        self.callbacks = list(callbacks or [])
        self.scheduler, self.grad_clip, self.regularization = scheduler, grad_clip, \
            regularization
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.task = check_task(task) or task_from_loss(loss_fn)
        self.ignore_index = ignore_index_of(loss_fn)
        self.group = _process_group(distributed)
        self.history = History()
        self.stop_training = False
        self.epoch = -1

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path, epoch=None):
        """Atomically write model, optimizer, scheduler, epoch and history to ``path``."""
        if self.group is not None and self.group.rank != 0:
            return
        save_checkpoint(path, self.model, self.optimizer, self.scheduler,
                        extra={"epoch": self.epoch if epoch is None else epoch,
                               "history": self.history.records})

    def load_checkpoint(self, path):
        """Restore a checkpoint written by :meth:`save_checkpoint`; return its epoch."""
        extra = load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        self.history = History(extra.get("history", []))
        self.epoch = int(extra.get("epoch", -1))
        return self.epoch

    # ----------------------------------------------------------------- metrics
    def metric_names(self):
        """The task's metrics logged besides the loss (None until the task is known)."""
        return None if self.task is None else TASK_METRICS[self.task]

    def _scores(self, output, target, keep=False):
        """A fresh :class:`EpochScores`, deciding the task from this batch if still open."""
        if self.task is None:
            self.task = infer_task(output, target)
        return EpochScores(self.task, self.ignore_index, keep)

    # ------------------------------------------------------------------ steps
    def _train_batch(self, x, y):
        """One optimizer step; returns ``(loss, output ndarray)``."""
        self.optimizer.zero_grad()
        logits = self.model(autograd.Tensor(x))
        loss = self.loss_fn(logits, y)
        if self.regularization is not None:
            loss = loss + self.regularization(self.model)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(
                "training stopped: the loss became %s at epoch %d; the last checkpoint (if "
                "any) holds the last good weights" % (value, self.epoch))
        loss.backward()
        if self.group is not None:
            from fastdl.distributed import average_gradients
            average_gradients(self.optimizer, self.group)
        if self.grad_clip is not None:
            from fastdl.optim.clip import clip_grad_norm_
            norm = clip_grad_norm_(self.model.parameters(), self.grad_clip)
            if not math.isfinite(norm):
                return value, logits.array
        self.optimizer.step()
        return value, logits.array

    def _reduce(self, values):
        """Sum ``values`` over ranks (identity in one process)."""
        values = np.asarray(values, dtype=np.float64)
        return values if self.group is None else self.group.allreduce_scalars(values)

    def _train_epoch(self, train_loader, epoch, epochs, show):
        """One pass over ``train_loader``; returns its reduced :class:`EpochScores`."""
        from tqdm import tqdm
        began = time.perf_counter()
        scores = None
        bar = tqdm(train_loader, desc="epoch %d/%d" % (epoch + 1, epochs),
                   disable=not show, leave=False, unit="batch")
        for x, y in bar:
            x, y = _unwrap(x), _unwrap(y)
            loss, output = self._train_batch(x, y)
            if scores is None:
                scores = self._scores(output, y)
            scores.add(loss, output, y)
            elapsed = time.perf_counter() - began
            postfix = {name: "%.4f" % value for name, value in scores.summary().items()}
            postfix["samples_s"] = "%.0f" % (scores.samples / max(elapsed, 1e-9))
            # refresh=False: tqdm redraws on its own interval with the current
            # batch count (a forced redraw here would show a stale count).
            bar.set_postfix(postfix, refresh=False)
        bar.close()
        if scores is None:   # an empty loader
            scores = EpochScores(self.task or "regression", self.ignore_index)
        scores.reduce(self._reduce)
        return scores

    def fit(self, train_loader, val_loader=None, epochs=1, resume=None):
        """Train for ``epochs`` epochs in total (continuing from ``resume`` if given).

        Returns
        -------
        History
        """
        start = 0
        if resume is not None:
            start = self.load_checkpoint(resume) + 1
        self.stop_training = False
        if self.group is not None:
            from fastdl.distributed import broadcast_parameters
            broadcast_parameters(self.model, group=self.group)
        for callback in self.callbacks:
            callback.on_train_begin(self)
        show = self.progress and (self.group is None or self.group.rank == 0)
        try:
            for epoch in range(start, epochs):
                self.epoch = epoch
                train_loader.set_epoch(epoch)
                self.model.train()
                began = time.perf_counter()
                train_scores = self._train_epoch(train_loader, epoch, epochs, show)
                seconds = time.perf_counter() - began
                record = {"epoch": epoch}
                record.update({"train_" + name: float(value)
                               for name, value in train_scores.summary().items()})
                record.update(lr=float(self.optimizer.param_groups[0]["lr"]), seconds=seconds,
                              samples_per_second=float(train_scores.samples
                                                       / max(seconds, 1e-9)))
                if val_loader is not None:
                    scores = self.evaluate(val_loader)
                    record.update({"val_" + name: value for name, value in scores.items()
                                   if name not in ("y_true", "y_pred")})
                self.history.append(record)
                self._step_scheduler(record)
                for callback in self.callbacks:
                    callback.on_epoch_end(self, record)
                if self.stop_training:
                    break
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self)
        return self.history

    def _step_scheduler(self, record):
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(record.get("val_loss", record["train_loss"]))
        else:
            self.scheduler.step()

    # ------------------------------------------------------------- inference
    def evaluate(self, loader):
        """Mean loss and the task's metrics over ``loader`` (eval mode, no gradients).

        Returns
        -------
        dict with ``loss``, the task's metrics (``accuracy``; ``mean_iou`` for
        segmentation; none for regression), ``y_true``, ``y_pred`` (labels;
        segmentation: the non-ignored pixels' labels, flattened; regression:
        targets and outputs) and one entry per metric given to the Trainer
        """
        was_training = self.model.training
        self.model.eval()
        scores = None
        try:
            with autograd.no_grad():
                for x, y in loader:
                    x, y = _unwrap(x), _unwrap(y)
                    output = self.model(autograd.Tensor(x))
                    loss = self.loss_fn(output, y).item()
                    if scores is None:
                        scores = self._scores(output.array, y, keep=True)
                    scores.add(loss, output.array, y)
        finally:
            self.model.train(was_training)
        if scores is None:   # an empty loader
            scores = EpochScores(self.task or "regression", self.ignore_index, True)
        scores.reduce(self._reduce)
        y_true, y_pred = scores.labels()
        result = scores.summary()
        result.update(y_true=y_true, y_pred=y_pred)
        for name, metric in self.metrics.items():
            result[name] = float(metric(y_true, y_pred))
        return result

    def predict(self, x, batch_size=256):
        """Logits for ``x (N, ...)`` in eval mode, batched, as an ndarray."""
        return predict_logits(self.model, x, batch_size)


def _process_group(distributed):
    """The group a Trainer reduces over (None: this process alone)."""
    from fastdl.distributed import get_group, init
    from fastdl.distributed.comm import launcher_world_size
    if distributed:
        return init()
    if distributed is None:
        group = get_group()
        return group if group.size > 1 else None
    size, _ = launcher_world_size()
    if size is not None and size != 1:
        warnings.warn("Trainer(distributed=False) under an MPI launcher: each rank trains "
                      "alone on its own data (pass distributed=True, or None, to average "
                      "gradients over the ranks)", RuntimeWarning, stacklevel=3)
    return None


def _unwrap(batch):
    """A loader's Tensor as its ndarray (the metrics and the task inference read arrays)."""
    return batch.array if isinstance(batch, autograd.Tensor) else batch


def predict_logits(model, x, batch_size=256):
    """Logits of ``model`` on ``x`` in eval mode without gradients (batched)."""
    was_training = model.training
    model.eval()
    try:
        with autograd.no_grad():
            outputs = [model(autograd.Tensor(np.ascontiguousarray(
                x[i:i + batch_size], dtype=np.float32))).array
                for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outputs)


def predict_proba(model, x, batch_size=256):
    """Softmax probabilities of ``model`` on ``x``."""
    return softmax(predict_logits(model, x, batch_size), 1).array


__all__ = ["Trainer", "TrainingDiverged", "predict_logits", "predict_proba", "accuracy"]
