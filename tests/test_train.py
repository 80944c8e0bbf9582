"""The training workflow: exact resume, early stopping, NaN guard, imbalance, fine-tuning."""
import json

import numpy as np
import pytest

import fastdl
from fastdl import nn, optim
from fastdl.data import (ClassBalancedSampler, DataLoader, RandomSampler, TensorDataset,
                         class_weights, load_digits)
from fastdl.models import lenet5
from fastdl.train import (EarlyStopping, ModelCheckpoint, Trainer, TrainingDiverged,
                          cross_validate, load_checkpoint, per_class_recall)


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
        assert a.tobytes() == b.tobytes(), name
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
    body = [p.data.copy() for p in model.parameters()][:-2]
    model.requires_grad_(False)
    model[-1] = nn.Linear(84, 10)                 # new head, trainable
    optimizer = optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    Trainer(model, optimizer, nn.CrossEntropyLoss(), progress=False).fit(
        DataLoader(digits.train, 32, shuffle=True), epochs=6)
    for before, p in zip(body, list(model.parameters())[:-2]):
        np.testing.assert_array_equal(before, p.data)
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
