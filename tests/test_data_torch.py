"""fastdl.data against torch.utils.data: collate, loader batches, samplers, splits."""
import collections
import warnings

import numpy as np
import pytest

import fastdl
from fastdl.data import (BatchSampler, ConcatDataset, DataLoader, Dataset, RandomSampler,
                         SequentialSampler, Subset, SubsetRandomSampler, TensorDataset,
                         WeightedRandomSampler, default_collate, default_convert, random_split)

torch = pytest.importorskip("torch")

Point = collections.namedtuple("Point", "x y")


def _same(ours, theirs):
    """Same structure, Tensor dtypes and values as a torch batch."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, fastdl.Tensor), type(ours)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), \
            (ours.dtype, theirs.dtype)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and ours.keys() == theirs.keys()
        for key in theirs:
            _same(ours[key], theirs[key])
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _same(a, b)
    else:
        assert ours == theirs


SAMPLES = {
    "int": [1, 2, 3],
    "float": [1.5, 2.0],
    "bool": [True, False],
    "numpy float32": [np.float32(1), np.float32(2)],
    "numpy int32": [np.int32(1), np.int32(7)],
    "arrays": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)],
    "int64 arrays": [np.arange(3), np.arange(3, 6)],
    "strings": ["a", "b"],
    "tuples": [(np.zeros(2), 1, "x"), (np.ones(2), 2, "y")],
    "lists": [[1, 2.0], [3, 4.0]],
    "dicts": [{"image": np.zeros((1, 2)), "label": 3, "meta": {"id": 1.0}},
              {"image": np.ones((1, 2)), "label": 4, "meta": {"id": 2.0}}],
    "namedtuples": [Point(1, 2.0), Point(3, 4.0)],
}


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_default_collate_matches_torch(kind):
    batch = SAMPLES[kind]
    _same(default_collate(batch), torch.utils.data.default_collate(batch))


def test_default_collate_of_tensors_and_errors():
    samples = [fastdl.Tensor(np.full(3, i, np.float32)) for i in range(4)]
    _same(default_collate(samples), torch.stack([torch.full((3,), float(i)) for i in range(4)]))
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(TypeError, match="default_collate"):
        default_collate([object(), object()])
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [3]])
    converted = default_convert({"a": np.arange(3), "b": 1.0, "c": np.float64(2)})
    _same(converted, torch.utils.data.default_convert({"a": np.arange(3), "b": 1.0,
                                                        "c": np.float64(2)}))


class Squares(Dataset):
    """Map-style samples: (image, label, dict) from an index."""

    def __len__(self):
        return 11

    def __getitem__(self, index):
        return np.full((2, 3), index, np.float32), index % 3, {"square": float(index ** 2)}


class TorchSquares(torch.utils.data.Dataset):
    def __len__(self):
        return 11

    def __getitem__(self, index):
        return Squares()[index]


@pytest.mark.parametrize("options", [
    dict(batch_size=4), dict(batch_size=4, drop_last=True), dict(batch_size=1),
    dict(batch_size=None), dict(batch_size=3, sampler=[5, 1, 9, 0, 3, 3, 10]),
    dict(batch_sampler=[[1, 2], [0], [10, 4, 7]]),
])
def test_loader_batches_match_torch(options):
    ours = list(DataLoader(Squares(), **options))
    theirs = list(torch.utils.data.DataLoader(TorchSquares(), **options))
    assert len(ours) == len(theirs) == len(DataLoader(Squares(), **options))
    for a, b in zip(ours, theirs):
        _same(a, b)


def test_tensor_dataset_fast_path_matches_torch(rng):
    x = rng.normal(size=(10, 1, 2, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=10)
    order = [3, 1, 4, 1, 5, 9, 2, 6]
    ours = list(DataLoader(TensorDataset(fastdl.Tensor(x), y), 3, sampler=order))
    theirs = list(torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), 3,
        sampler=order))
    for a, b in zip(ours, theirs):
        _same(a, b)
    sample = TensorDataset(x, y)[2]
    assert isinstance(sample, tuple) and sample[1].shape == () and sample[1].dtype == np.int64
    batch = list(DataLoader(Subset(TensorDataset(x, y), [7, 8, 9]), 2))
    np.testing.assert_array_equal(batch[0][1].numpy(), y[7:9])
    with pytest.raises(ValueError, match="size mismatch"):
        TensorDataset(x, y[:3])


def test_loader_argument_errors_are_torchs():
    data = Squares()
    for options in [dict(sampler=[0], shuffle=True), dict(batch_sampler=[[0]], batch_size=2),
                    dict(batch_size=None, drop_last=True), dict(num_workers=-1),
                    dict(timeout=-1), dict(prefetch_factor=2), dict(persistent_workers=True)]:
        with pytest.raises(ValueError):
            DataLoader(data, **options)
        with pytest.raises(ValueError):
            torch.utils.data.DataLoader(TorchSquares(), **options)


def test_concat_dataset_indexes_as_torchs():
    parts = [TensorDataset(np.arange(3)), TensorDataset(np.arange(10, 14))]
    concat = parts[0] + parts[1]
    reference = torch.utils.data.ConcatDataset(
        [torch.utils.data.TensorDataset(torch.arange(3)),
         torch.utils.data.TensorDataset(torch.arange(10, 14))])
    assert isinstance(concat, ConcatDataset) and len(concat) == len(reference) == 7
    for index in [0, 2, 3, 6, -1, -7]:
        assert concat[index][0].item() == reference[index][0].item()
    with pytest.raises(IndexError):
        concat[7]


# -------------------------------------------------------------- splits, samplers

@pytest.mark.parametrize("lengths", [[3, 7], [0.3, 0.3, 0.4], [0.5, 0.5], [1 / 3] * 3])
def test_random_split_lengths_and_disjointness(lengths):
    data = TensorDataset(np.arange(10))
    parts = random_split(data, lengths, generator=np.random.default_rng(0))
    expected = torch.utils.data.random_split(range(10), lengths)
    assert [len(p) for p in parts] == [len(p) for p in expected]
    indices = np.concatenate([p.indices for p in parts])
    assert sorted(indices.tolist()) == list(range(10))
    again = random_split(data, lengths, generator=np.random.default_rng(0))
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(parts, again))
    fastdl.manual_seed(1)
    seeded = random_split(data, lengths)
    fastdl.manual_seed(1)
    assert all(np.array_equal(a.indices, b.indices)
               for a, b in zip(seeded, random_split(data, lengths)))


def test_random_split_rejects_bad_lengths():
    data = TensorDataset(np.arange(10))
    with pytest.raises(ValueError, match="sum of input lengths"):
        random_split(data, [3, 3])
    with pytest.raises(ValueError, match="between 0 and 1"):
        random_split(data, [1.5, -0.5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [len(p) for p in random_split(TensorDataset(np.arange(2)), [0.1, 0.1, 0.8])] \
            == [1, 0, 1]
    assert any("index 1 is 0" in str(w.message) for w in caught)


def test_weighted_sampler_frequencies_follow_the_weights():
    weights = np.array([1.0, 2.0, 3.0, 0.0, 4.0])
    drawn = WeightedRandomSampler(weights, 20000, generator=np.random.default_rng(0))
    counts = np.bincount(list(drawn), minlength=5) / 20000
    np.testing.assert_allclose(counts, weights / weights.sum(), atol=0.012)
    unique = list(WeightedRandomSampler(weights, 4, replacement=False))
    assert sorted(unique) == [0, 1, 2, 4]
    with pytest.raises(ValueError, match="without replacement"):
        WeightedRandomSampler(weights, 5, replacement=False)
    with pytest.raises(TypeError, match="replacement"):
        WeightedRandomSampler(weights, 5, replacement=1)
    with pytest.raises(ValueError, match="num_samples"):
        WeightedRandomSampler(weights, 0)


def test_random_samplers_and_batch_sampler():
    data = Squares()
    assert sorted(RandomSampler(data)) == list(range(11))
    with_replacement = list(RandomSampler(data, replacement=True, num_samples=50))
    assert len(with_replacement) == 50 and set(with_replacement) <= set(range(11))
    chained = list(RandomSampler(data, num_samples=25))
    assert np.bincount(chained).min() >= 2 and len(chained) == 25
    subset = list(SubsetRandomSampler([4, 8, 15, 16]))
    assert sorted(subset) == [4, 8, 15, 16]
    for drop_last in (False, True):
        ours = list(BatchSampler(SequentialSampler(data), 4, drop_last))
        theirs = list(torch.utils.data.BatchSampler(range(11), 4, drop_last))
        assert ours == theirs
        assert len(BatchSampler(SequentialSampler(data), 4, drop_last)) == len(theirs)
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(SequentialSampler(data), 0, False)


def test_shuffled_orders_follow_manual_seed_and_generators():
    data = TensorDataset(np.arange(30))

    def order(**options):
        return np.concatenate([b[0].numpy() for b in DataLoader(data, 7, shuffle=True,
                                                                **options)])
    fastdl.manual_seed(3)
    first = order()
    fastdl.manual_seed(3)
    np.testing.assert_array_equal(order(), first)
    np.testing.assert_array_equal(order(generator=np.random.default_rng(9)),
                                  order(generator=np.random.default_rng(9)))
    assert sorted(first.tolist()) == list(range(30))
    fastdl.manual_seed(3)
    sampler_first = list(RandomSampler(data))
    fastdl.manual_seed(3)
    assert list(RandomSampler(data)) == sampler_first


def test_torch_utils_data_path_is_fastdl_data():
    import fastdl.data
    import fastdl.utils.data
    from fastdl.distributed import DistributedSampler
    from fastdl.utils.data import DataLoader as Loader
    assert Loader is DataLoader and fastdl.utils.data.random_split is random_split
    assert fastdl.utils.data.DistributedSampler is DistributedSampler
    assert fastdl.utils.data.get_worker_info is fastdl.data.get_worker_info


def test_custom_collate_fn_gets_the_samples_as_torchs():
    def keep(samples):
        return samples
    ours = list(DataLoader(Squares(), 4, collate_fn=keep, pin_memory=True))
    theirs = list(torch.utils.data.DataLoader(TorchSquares(), 4, collate_fn=keep))
    assert [[s[1] for s in batch] for batch in ours] == [[s[1] for s in b] for b in theirs]
    data = TensorDataset(np.arange(6), np.arange(6) * 2)
    pairs = list(DataLoader(data, 3, collate_fn=lambda samples: [s[1].item() for s in samples]))
    assert pairs == [[0, 2, 4], [6, 8, 10]]
