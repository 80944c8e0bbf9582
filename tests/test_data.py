"""Datasets, loader, samplers, transforms and splits."""
import numpy as np
import pytest

from fastdl.data import (ClassBalancedSampler, DataLoader, Normalize, RandomCrop,
                         RandomHorizontalFlip, TensorDataset, WeightedRandomSampler,
                         class_weights, kfold_split, load_digits, load_npz, stratified_split)


def test_loader_batches_cover_the_epoch_and_are_reproducible(rng):
    data = TensorDataset(np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1), np.arange(10))
    loader = DataLoader(data, 4, shuffle=True, seed=3)
    epoch0 = [y.numpy() for _, y in loader]
    assert [len(y) for y in epoch0] == [4, 4, 2]
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(10))
    loader.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in loader]),
                                  np.concatenate(epoch0))
    assert not np.array_equal(np.concatenate([y.numpy() for _, y in loader]),
                              np.concatenate(epoch0))
    assert len(DataLoader(data, 4, drop_last=True)) == 2
    x, _ = next(iter(loader))
    assert x.dtype == np.float32 and x.numpy().flags.c_contiguous


def test_samplers(rng):
    labels = np.array([0] * 90 + [1] * 10)
    over = ClassBalancedSampler(labels, "oversample").indices(0, 0)
    assert len(over) == 180 and np.bincount(labels[over]).tolist() == [90, 90]
    under = ClassBalancedSampler(labels, "undersample").indices(0, 0)
    assert np.bincount(labels[under]).tolist() == [10, 10]
    weights = np.where(labels == 1, 9.0, 1.0)
    drawn = WeightedRandomSampler(weights, 10000).indices(0, 1)
    assert abs(np.mean(labels[drawn]) - 0.5) < 0.03
    np.testing.assert_allclose(class_weights(labels), [100 / (2 * 90), 100 / (2 * 10)])
    with pytest.raises(ValueError, match="weights"):
        WeightedRandomSampler([-1, 1], 3)


def test_transforms_are_vectorised_and_correct(rng):
    x = rng.normal(size=(6, 2, 5, 5)).astype(np.float32)
    cropped = RandomCrop(5, padding=1)(x, np.random.default_rng(0))
    assert cropped.shape == x.shape
    for i in range(6):   # each crop is a shifted window of the zero-padded image
        padded = np.pad(x[i], ((0, 0), (1, 1), (1, 1)))
        assert any(np.array_equal(cropped[i], padded[:, r:r + 5, c:c + 5])
                   for r in range(3) for c in range(3))
    flipped = RandomHorizontalFlip(1.0)(x, rng)
    np.testing.assert_array_equal(flipped, x[..., ::-1])
    normalized = Normalize([1.0, 2.0], [2.0, 4.0])(x)
    np.testing.assert_allclose(normalized[:, 1], (x[:, 1] - 2) / 4, rtol=1e-6)


def test_splits_are_disjoint_and_stratified():
    labels = np.repeat(np.arange(3), [30, 60, 90])
    folds = kfold_split(len(labels), 3, seed=0, stratify=labels)
    validated = np.concatenate([val for _, val in folds])
    assert sorted(validated.tolist()) == list(range(180))
    for train, val in folds:
        assert not set(train) & set(val)
        assert np.bincount(labels[val]).tolist() == [10, 20, 30]
    parts = stratified_split(labels, (0.5, 0.25, 0.25))
    assert sum(len(p) for p in parts) == 180
    with pytest.raises(ValueError, match="k must be"):
        kfold_split(5, 1)


def test_load_digits_is_real_and_split():
    digits = load_digits()
    total = len(digits.train) + len(digits.val) + len(digits.test)
    assert total == 1797 and digits.train.arrays[0].shape[1:] == (1, 8, 8)
    assert 0 <= digits.train.arrays[0].min() and digits.train.arrays[0].max() <= 1
    assert set(np.unique(digits.test.targets)) == set(range(10))


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((4, 1, 2, 2))}, "no array 'y'"),
    ({"x": np.zeros((4, 1, 2, 2)), "y": np.zeros(3, int)}, "one label per image"),
    ({"x": np.zeros((4, 2, 2)), "y": np.zeros(4, int)}, "4-D"),
    ({"x": np.zeros((4, 1, 2, 2)), "y": np.array([0, 1, -1, 2])}, "labels"),
    ({"x": np.zeros((4, 1, 2, 2)), "y": np.zeros(4)}, "integer"),
    ({"x": np.full((4, 1, 2, 2), np.nan), "y": np.zeros(4, int)}, "finite"),
])
def test_load_npz_rejects_bad_files(tmp_path, arrays, match):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_npz(str(path))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_npz(str(tmp_path / "junk.npz"))
