import numpy as np
import pytest

from fastdl.distributed import DistributedSampler, init, get_world_size


def test_single_process_group_without_mpi_launcher():
    group = init()
    assert get_world_size() == 1 and group.rank == 0
    values = np.arange(4.0)
    assert group.allreduce_(values) is values
    np.testing.assert_array_equal(values, np.arange(4.0))


@pytest.mark.parametrize("n, replicas", [(10, 2), (11, 2), (7, 3), (64, 4), (3, 5)])
def test_shards_are_disjoint_cover_everything_and_equal_length(n, replicas):
    samplers = [DistributedSampler(n, num_replicas=replicas, rank=r, seed=3)
                for r in range(replicas)]
    shards = [s.indices() for s in samplers]
    assert len({len(shard) for shard in shards}) == 1
    assert all(len(shard) == len(s) for shard, s in zip(shards, samplers))
    together = np.concatenate(shards)
    assert set(together.tolist()) == set(range(n))
    # Padding repeats only as much as needed to divide evenly.
    assert len(together) - n == (-n) % replicas


def test_drop_last_gives_disjoint_shards():
    shards = [DistributedSampler(11, num_replicas=2, rank=r, drop_last=True).indices()
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_reshuffles_per_epoch_identically_on_every_rank():
    a = DistributedSampler(20, num_replicas=2, rank=0, seed=1)
    b = DistributedSampler(20, num_replicas=2, rank=1, seed=1)
    first = np.concatenate([a.indices(), b.indices()])
    a.set_epoch(1)
    b.set_epoch(1)
    second = np.concatenate([a.indices(), b.indices()])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(20))
    assert not np.array_equal(first, second)


def test_unshuffled_order_is_round_robin():
    sampler = DistributedSampler(6, num_replicas=2, rank=1, shuffle=False)
    assert list(sampler) == [1, 3, 5]


@pytest.mark.parametrize("kwargs", [dict(num_replicas=0, rank=0), dict(num_replicas=2, rank=2),
                                    dict(num_replicas=2, rank=-1)])
def test_bad_rank_or_replicas_raise(kwargs):
    with pytest.raises(ValueError, match="DistributedSampler"):
        DistributedSampler(10, **kwargs)
