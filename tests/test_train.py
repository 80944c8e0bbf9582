"""The training workflow: exact resume, early stopping, NaN guard, imbalance, fine-tuning,
segmentation and regression metrics."""
import json

import numpy as np
import pytest

import fastdl
from fastdl import nn, optim
from fastdl.data import (ClassBalancedSampler, DataLoader, RandomSampler, TensorDataset,
                         class_weights, load_digits)
from fastdl.models import fcn, lenet5
from fastdl.train import (EarlyStopping, ModelCheckpoint, Trainer, TrainingDiverged,
                          cross_validate, load_checkpoint, mean_iou, per_class_recall,
                          pixel_accuracy)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _trainer(callbacks=(), seed=0, lr=3e-3, loss=None):
    fastdl.manual_seed(seed)
    model = lenet5(input_size=8)
    optimizer = optim.Adam(model.parameters(), lr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, 4)
    return Trainer(model, optimizer, loss or nn.CrossEntropyLoss(), callbacks=list(callbacks),
                   scheduler=scheduler, progress=False)


def test_resume_gives_identical_weights(digits, tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    straight = _trainer()
    straight.fit(DataLoader(digits.train, 64, shuffle=True, seed=1), epochs=4)
    first = _trainer([ModelCheckpoint(path)])
    first.fit(DataLoader(digits.train, 64, shuffle=True, seed=1), epochs=2)
    resumed = _trainer(seed=99)   # different init: everything must come from the file
    resumed.fit(DataLoader(digits.train, 64, shuffle=True, seed=1), epochs=4, resume=path)
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert a.numpy().tobytes() == b.numpy().tobytes(), name
    assert len(resumed.history) == 4


def test_early_stopping_stops_and_restores_best(digits):
    stopper = EarlyStopping("val_loss", patience=1)
    trainer = _trainer([stopper], lr=0.5)   # a too-large lr makes val loss rise early
    history = trainer.fit(DataLoader(digits.train, 64, shuffle=True),
                          DataLoader(digits.val, 512), epochs=15)
    assert stopper.stopped_epoch is not None and len(history) < 15
    restored = trainer.evaluate(DataLoader(digits.val, 512))["loss"]
    assert np.isclose(restored, min(history["val_loss"]), rtol=1e-5)


def test_nan_guard_stops_and_last_checkpoint_loads(digits, tmp_path):
    x, y = digits.train.arrays
    poisoned = x.copy()
    poisoned[-5:] = np.nan   # the last batch of every epoch
    path = tmp_path / "ck.safetensors"

    class PoisonAfterFirstEpoch(TensorDataset):
        def __getitem__(self, indices):
            batch = super().__getitem__(indices)
            return (poisoned[indices], batch[1]) if trainer.epoch >= 1 else batch
    trainer = _trainer([ModelCheckpoint(path)])
    with pytest.raises(TrainingDiverged, match="nan"):
        trainer.fit(DataLoader(PoisonAfterFirstEpoch(x, y), 64), epochs=3)
    fresh = _trainer(seed=5)
    extra = load_checkpoint(path, fresh.model, fresh.optimizer)
    assert extra["epoch"] == 0
    assert all(np.isfinite(v).all() for v in fresh.model.state_dict().values())


def test_history_files_and_plot(digits, tmp_path):
    pytest.importorskip("matplotlib")
    trainer = _trainer()
    history = trainer.fit(DataLoader(digits.train, 128), DataLoader(digits.val, 512), 2)
    history.to_json(tmp_path / "h.json")
    history.to_csv(tmp_path / "h.csv")
    history.plot(tmp_path / "curves.png")
    records = json.loads((tmp_path / "h.json").read_text())
    assert [r["epoch"] for r in records] == [0, 1] and "val_accuracy" in records[0]
    assert (tmp_path / "h.csv").read_text().startswith("epoch,")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_imbalance_remedies_raise_minority_recall(digits):
    """Three classes keep 5% of their samples; each remedy beats plain cross-entropy."""
    x, y = digits.train.arrays
    rare = [2, 5, 8]
    rng = np.random.default_rng(0)
    keep = np.concatenate([
        rng.permutation(np.flatnonzero(y == c))[:max(1, int(0.05 * np.sum(y == c)))]
        if c in rare else np.flatnonzero(y == c) for c in range(10)])
    train = TensorDataset(x[keep], y[keep])

    def minority_recall(mode):
        recalls = []
        for seed in (0, 1, 2):
            fastdl.manual_seed(seed)
            model = lenet5(input_size=8)
            weight = class_weights(train.targets, 10) if mode == "weights" else None
            loss = nn.FocalLoss(gamma=2.0) if mode == "focal" else \
                nn.CrossEntropyLoss(weight=weight)
            sampler = ClassBalancedSampler(train.targets) if mode == "oversample" else \
                RandomSampler(len(train))
            trainer = Trainer(model, optim.Adam(model.parameters(), 3e-3), loss,
                              progress=False)
            trainer.fit(DataLoader(train, 32, sampler=sampler, seed=seed), epochs=15)
            result = trainer.evaluate(DataLoader(digits.test, 512))
            recalls.append(per_class_recall(result["y_true"], result["y_pred"], 10)[rare])
        return float(np.mean(recalls))
    plain = minority_recall("plain")
    for mode in ("weights", "oversample", "focal"):
        assert minority_recall(mode) > plain, mode


def test_fine_tuning_freezes_the_body_and_trains_a_new_head(digits):
    fastdl.manual_seed(0)
    model = lenet5(input_size=8)
    Trainer(model, optim.Adam(model.parameters(), 3e-3), nn.CrossEntropyLoss(),
            progress=False).fit(DataLoader(digits.train, 32, shuffle=True), epochs=8)
    body = [p.array.copy() for p in model.parameters()][:-2]
    model.requires_grad_(False)
    model[-1] = nn.Linear(84, 10)                 # new head, trainable
    optimizer = optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    Trainer(model, optimizer, nn.CrossEntropyLoss(), progress=False).fit(
        DataLoader(digits.train, 32, shuffle=True), epochs=6)
    for before, p in zip(body, list(model.parameters())[:-2]):
        np.testing.assert_array_equal(before, p.array)
    accuracy = Trainer(model, optimizer, nn.CrossEntropyLoss(),
                       progress=False).evaluate(DataLoader(digits.test, 512))["accuracy"]
    assert accuracy > 0.8


def test_cross_validate_returns_folds_and_an_ensemble(digits):
    scores, ensemble = cross_validate(
        lambda: lenet5(input_size=8), digits.train, 3,
        lambda params: optim.Adam(params, 3e-3), nn.CrossEntropyLoss(), epochs=10)
    assert [s["fold"] for s in scores] == [0, 1, 2]
    x, y = digits.test.arrays
    probabilities = ensemble.predict_proba(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert np.mean(ensemble.predict(x) == y) > 0.85


def test_evaluate_reports_extra_metrics_logged_per_epoch(digits):
    metrics = pytest.importorskip("sklearn.metrics")
    fastdl.manual_seed(0)
    model = lenet5(input_size=8)
    trainer = Trainer(model, optim.Adam(model.parameters(), 3e-3), nn.CrossEntropyLoss(),
                      {"balanced_accuracy": metrics.balanced_accuracy_score}, progress=False)
    history = trainer.fit(DataLoader(digits.train, 64, shuffle=True),
                          DataLoader(digits.val, 512), epochs=2)
    result = trainer.evaluate(DataLoader(digits.val, 512))
    recall = per_class_recall(result["y_true"], result["y_pred"], 10)
    assert result["balanced_accuracy"] == pytest.approx(np.mean(recall))
    assert history.records[-1]["val_balanced_accuracy"] == pytest.approx(
        result["balanced_accuracy"])


# ------------------------------------------------------- segmentation and regression
def _numpy_mean_iou(y_true, y_pred, num_classes, ignore_index):
    """IoU class by class with boolean masks, averaged over the classes that occur."""
    valid = y_true != ignore_index
    ious = []
    for c in range(num_classes):
        truth, guess = (y_true == c) & valid, (y_pred == c) & valid
        union = np.sum(truth | guess)
        if union:
            ious.append(np.sum(truth & guess) / union)
    return np.mean(ious)


def test_pixel_accuracy_and_mean_iou_match_numpy():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=(3, 7, 5))   # class 4 never occurs
    y_pred = np.where(rng.random(y_true.shape) < 0.6, y_true, rng.integers(0, 5, y_true.shape))
    y_true[:, 0] = 255                             # ignored pixels
    y_pred[:, 0] = 4                               # (their prediction must not count)
    valid = y_true != 255
    assert pixel_accuracy(y_true, y_pred, ignore_index=255) == pytest.approx(
        np.sum((y_true == y_pred) & valid) / np.sum(valid))
    assert mean_iou(y_true, y_pred, 5, ignore_index=255) == pytest.approx(
        _numpy_mean_iou(y_true, y_pred, 5, 255))
    assert mean_iou(y_true, y_true, 5, ignore_index=255) == 1.0


def _segmentation_data(n=24, size=12, seed=0):
    """Class 1 where a smoothed noise image is positive, class 2 on a border band."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, size, size)).astype(np.float32)
    smooth = (x + np.roll(x, 1, 2) + np.roll(x, 1, 3)) / 3
    y = (smooth[:, 0] > 0).astype(np.int64)
    y[:, :, :2] = 2
    x[:, :, :, :2] += 2.0
    return TensorDataset(x, y)


def test_fcn_segmentation_logs_pixel_accuracy_and_mean_iou_in_unit_range():
    fastdl.manual_seed(0)
    model = fcn(1, 3, width=4, depth=2)
    loss = nn.CrossEntropyLoss(ignore_index=255)
    trainer = Trainer(model, optim.Adam(model.parameters(), 1e-2), loss, progress=False)
    data, val = _segmentation_data(), _segmentation_data(8, seed=1)
    history = trainer.fit(DataLoader(data, 8), DataLoader(val, 8), epochs=2)
    assert trainer.task == "segmentation"
    for key in ("train_accuracy", "train_mean_iou", "val_accuracy", "val_mean_iou"):
        assert all(0 <= value <= 1 for value in history[key]), (key, history[key])
    # evaluate's numbers are the metrics of the whole set's predictions
    x, y = val.arrays
    y = y.copy()
    y[:, -1] = 255
    result = trainer.evaluate(DataLoader(TensorDataset(x, y), 3))
    prediction = trainer.predict(x).argmax(axis=1)
    assert result["accuracy"] == pytest.approx(pixel_accuracy(y, prediction, 255))
    assert result["mean_iou"] == pytest.approx(_numpy_mean_iou(y, prediction, 3, 255))
    assert result["y_true"].shape == (np.sum(y != 255),)


def test_mse_regression_logs_only_losses_and_rejects_accuracy_early_stopping():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = np.stack([x.sum(1), x[:, 0] - x[:, 1]], axis=1).astype(np.float32)
    fastdl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = Trainer(model, optim.Adam(model.parameters(), 1e-2), nn.MSELoss(), progress=False)
    history = trainer.fit(DataLoader(TensorDataset(x, y), 8), DataLoader(TensorDataset(x, y), 8),
                          epochs=3)
    metric_keys = {key for key in history.keys() if key.startswith(("train_", "val_"))}
    assert metric_keys == {"train_loss", "val_loss"}
    assert history["train_loss"][-1] < history["train_loss"][0]
    result = trainer.evaluate(DataLoader(TensorDataset(x, y), 8))
    assert "accuracy" not in result and result["y_pred"].shape == y.shape
    with pytest.raises(ValueError, match="'val_accuracy' is not logged for a regression task"):
        Trainer(model, optim.Adam(model.parameters(), 1e-2), nn.MSELoss(), progress=False,
                callbacks=[EarlyStopping("val_accuracy")]).fit(
            DataLoader(TensorDataset(x, y), 8), DataLoader(TensorDataset(x, y), 8), epochs=1)


def test_early_stopping_on_mean_iou_stops_and_restores_the_best_epoch():
    fastdl.manual_seed(0)
    model = fcn(1, 3, width=4, depth=1)
    stopper = EarlyStopping("val_mean_iou", patience=0)
    trainer = Trainer(model, optim.Adam(model.parameters(), 0.1), nn.CrossEntropyLoss(),
                      callbacks=[stopper], progress=False)
    val = DataLoader(_segmentation_data(8, seed=1), 8)
    history = trainer.fit(DataLoader(_segmentation_data(), 8, shuffle=True), val, epochs=15)
    assert stopper.mode == "max"
    assert stopper.stopped_epoch is not None and len(history) < 15
    assert stopper.best == max(history["val_mean_iou"])
    assert trainer.evaluate(val)["mean_iou"] == pytest.approx(stopper.best)
