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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Trainer:
    """Train a classifier: ``fit``, ``evaluate``, ``predict``.

    Parameters
    ----------
    model : nn.Module returning logits
    optimizer : optim.Optimizer
    loss_fn : callable ``(logits, targets) -> scalar Tensor``
    metrics : dict of name -> callable ``(y_true, y_pred) -> float``, optional
        Extra scores computed by :meth:`evaluate` (and logged as ``val_<name>``),
        e.g. ``{"balanced_accuracy": ...}``.
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
    """

    def __init__(self, model, optimizer, loss_fn, metrics=None, callbacks=None, scheduler=None,
                 grad_clip=None, regularization=None, progress=None, distributed=None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.metrics = dict(metrics or {})
        self.callbacks = list(callbacks or [])
        self.scheduler, self.grad_clip, self.regularization = scheduler, grad_clip, \
            regularization
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
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

    # ------------------------------------------------------------------ steps
    def _train_batch(self, x, y):
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
                return value, int(np.sum(logits.data.argmax(1) == y))
        self.optimizer.step()
        return value, int(np.sum(logits.data.argmax(1) == y))

    def _reduce(self, values):
        """Sum ``values`` over ranks (identity in one process)."""
        values = np.asarray(values, dtype=np.float64)
        return values if self.group is None else self.group.allreduce_scalars(values)

    def fit(self, train_loader, val_loader=None, epochs=1, resume=None):
        """Train for ``epochs`` epochs in total (continuing from ``resume`` if given).

        Returns
        -------
        History
        """
        from tqdm import tqdm
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
                totals = np.zeros(3)  # loss * n, correct, n
                began = time.perf_counter()
                bar = tqdm(train_loader, desc="epoch %d/%d" % (epoch + 1, epochs),
                           disable=not show, leave=False, unit="batch")
                for x, y in bar:
                    loss, correct = self._train_batch(x, y)
                    totals += (loss * len(y), correct, len(y))
                    elapsed = time.perf_counter() - began
                    # refresh=False: tqdm redraws on its own interval with the current
                    # batch count (a forced redraw here would show a stale count).
                    bar.set_postfix(loss="%.4f" % (totals[0] / totals[2]),
                                    acc="%.3f" % (totals[1] / totals[2]),
                                    samples_s="%.0f" % (totals[2] / max(elapsed, 1e-9)),
                                    refresh=False)
                bar.close()
                totals = self._reduce(totals)
                record = {"epoch": epoch, "train_loss": float(totals[0] / totals[2]),
                          "train_accuracy": float(totals[1] / totals[2]),
                          "lr": float(self.optimizer.param_groups[0]["lr"]),
                          "seconds": time.perf_counter() - began,
                          "samples_per_second": float(totals[2] / (time.perf_counter()
                                                                   - began))}
                if val_loader is not None:
                    scores = self.evaluate(val_loader)
                    record.update(val_loss=scores["loss"], val_accuracy=scores["accuracy"])
                    record.update({"val_" + name: scores[name] for name in self.metrics})
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
        """Mean loss and accuracy over ``loader`` (eval mode, no gradients).

        Returns
        -------
        dict with ``loss``, ``accuracy``, ``y_true``, ``y_pred`` and one entry per
        metric given to the Trainer
        """
        was_training = self.model.training
        self.model.eval()
        totals = np.zeros(3)
        y_true, y_pred = [], []
        try:
            with autograd.no_grad():
                for x, y in loader:
                    logits = self.model(autograd.Tensor(x))
                    loss = self.loss_fn(logits, y).item()
                    prediction = logits.data.argmax(axis=1)
                    totals += (loss * len(y), np.sum(prediction == y), len(y))
                    y_true.append(y)
                    y_pred.append(prediction)
        finally:
            self.model.train(was_training)
        totals = self._reduce(totals)
        y_true = np.concatenate(y_true) if y_true else np.zeros(0, np.int64)
        y_pred = np.concatenate(y_pred) if y_pred else np.zeros(0, np.int64)
        scores = {"loss": float(totals[0] / max(totals[2], 1)),
                  "accuracy": float(totals[1] / max(totals[2], 1)),
                  "y_true": y_true, "y_pred": y_pred}
        for name, metric in self.metrics.items():
            scores[name] = float(metric(y_true, y_pred))
        return scores

    def predict(self, x, batch_size=256):
        """Logits for ``x (N, ...)`` in eval mode, batched, as an ndarray."""
        return predict_logits(self.model, x, batch_size)


def _process_group(distributed):
    """The group a Trainer reduces over (None: this process alone)."""
    from fastdl.distributed import get_group, init
    from fastdl.distributed.comm import _launcher_world_size
    if distributed:
        return init()
    if distributed is None:
        group = get_group()
        return group if group.size > 1 else None
    size, _ = _launcher_world_size()
    if size is not None and size != 1:
        warnings.warn("Trainer(distributed=False) under an MPI launcher: each rank trains "
                      "alone on its own data (pass distributed=True, or None, to average "
                      "gradients over the ranks)", RuntimeWarning, stacklevel=3)
    return None


def predict_logits(model, x, batch_size=256):
    """Logits of ``model`` on ``x`` in eval mode without gradients (batched)."""
    was_training = model.training
    model.eval()
    try:
        with autograd.no_grad():
            outputs = [model(autograd.Tensor(np.ascontiguousarray(
                x[i:i + batch_size], dtype=np.float32))).data
                for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outputs)


def predict_proba(model, x, batch_size=256):
    """Softmax probabilities of ``model`` on ``x``."""
    return softmax(predict_logits(model, x, batch_size), 1).data


__all__ = ["Trainer", "TrainingDiverged", "predict_logits", "predict_proba", "accuracy"]
