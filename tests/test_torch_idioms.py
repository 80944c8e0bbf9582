"""PyTorch idioms that real CNN programs use, run unchanged with fastdl in torch's place:
``.data`` as a detached Tensor sharing the array."""
import numpy as np
import pytest

import fastdl
import fastdl.nn as nn
import fastdl.nn.functional as F
import fastdl.optim as optim


# ------------------------------------------------------------------------ .data
def test_data_max_gives_the_argmax_indices_as_torchs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    output = nn.Linear(5, 5)(fastdl.tensor(logits))
    pred = output.data.max(1)[1]                      # the classic accuracy line
    np.testing.assert_array_equal(np.asarray(pred), np.argmax(np.asarray(output), 1))
    reference = torch.tensor(np.asarray(output)).data.max(1)[1]
    np.testing.assert_array_equal(np.asarray(pred), reference.numpy())
    target = fastdl.tensor(np.argmax(np.asarray(output), 1))
    assert pred.eq(target.data.view_as(pred)).sum().item() == 6


def test_data_is_a_detached_tensor_sharing_the_array():
    x = fastdl.randn(3, 4, requires_grad=True)
    y = (x * 2).sum(1)
    for t in (x, y):
        data = t.data
        assert isinstance(data, fastdl.Tensor) and not isinstance(data, nn.Parameter)
        assert not data.requires_grad and data.is_leaf and data.grad_fn is None
        assert data.shape == t.shape and data.dtype == t.dtype
        assert np.shares_memory(np.asarray(data), np.asarray(t))
    x.data[0, 0] = 5.0                                    # writes through, unrecorded
    assert x[0, 0].item() == 5.0 and x.is_leaf


def test_weight_data_normal_changes_the_weight_and_the_optimizer_steps_from_it():
    fastdl.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    model.weight.data.normal_(0.0, 0.02)                  # DCGAN-style init after packing
    model.bias.data.zero_()
    weight = model.weight.numpy().copy()
    assert np.abs(weight).max() < 0.2 and np.all(model.bias.numpy() == 0)
    assert np.shares_memory(model.weight.array, optimizer.flat_params)
    x = fastdl.randn(5, 4)
    model(x).sum().backward()
    grad = model.weight.grad.numpy().copy()
    optimizer.step()
    np.testing.assert_allclose(model.weight.numpy(), weight - 0.1 * grad, rtol=1e-6)
    np.testing.assert_allclose(model.bias.numpy(), -0.1 * 5 * np.ones(3), rtol=1e-6)


def test_in_place_writes_through_data_land_in_the_optimizers_buffer():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((3, 2)).astype(np.float32)
    ours = nn.Parameter(w0.copy())
    theirs = torch.nn.Parameter(torch.tensor(w0))
    opt_ours = optim.SGD([ours], lr=0.5, momentum=0.9)
    opt_theirs = torch.optim.SGD([theirs], lr=0.5, momentum=0.9)
    for step in range(3):
        for p, lib in ((ours, fastdl), (theirs, torch)):
            p.data.add_(lib.ones(3, 2), alpha=0.25)
            p.data.mul_(0.5)
            if step == 1:
                p.data.copy_(lib.full((3, 2), 0.75))
                p.data.clamp_(max=0.5)
        for opt, p in ((opt_ours, ours), (opt_theirs, theirs)):
            opt.zero_grad()
            (p * p).sum().backward()
            p.grad.data.mul_(2.0)                          # gradients too, through .data
            opt.step()
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-6)
    ours.data.zero_()
    assert np.all(opt_ours.flat_params == 0)


def test_data_of_a_recorded_tensor_is_not_recorded():
    x = fastdl.randn(4, requires_grad=True)
    y = x * 3
    y.data.fill_(1.0)                                     # no error, no record
    assert y.grad_fn is not None and np.all(y.numpy() == 1.0)
    with pytest.raises(RuntimeError):
        x.add_(1.0)                                      # a leaf requiring grad still refuses
    x.data.add_(1.0)


# ------------------------------------------------------------------ state_dict
def _train_a_step(model, optimizer):
    optimizer.zero_grad()
    F.cross_entropy(model(fastdl.randn(4, 1, 6, 6)), fastdl.tensor([0, 1, 2, 1])).backward()
    optimizer.step()


def _small_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 3))


def test_state_dict_values_are_detached_tensors_sharing_memory_as_torchs():
    torch = pytest.importorskip("torch")
    fastdl.manual_seed(0)
    model = _small_cnn()
    reference = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                    torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3))
    state, expected = model.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    for key, value in state.items():
        assert isinstance(value, fastdl.Tensor) and not value.requires_grad, key
        assert tuple(value.shape) == tuple(expected[key].shape), key
        assert str(value.dtype) == str(expected[key].dtype).replace("torch.", ""), key
    assert np.shares_memory(np.asarray(state["0.weight"]), model[0].weight.array)
    assert np.shares_memory(np.asarray(state["1.running_mean"]), np.asarray(model[1].running_mean))
    state["4.bias"].zero_()                                 # writes reach the module
    assert np.all(model[4].bias.numpy() == 0)


def test_state_dict_snapshots_by_clone_and_deepcopy_survive_training():
    import copy
    fastdl.manual_seed(1)
    model = _small_cnn()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train_a_step(model, optimizer)
    cloned = {k: v.cpu().clone() for k, v in model.state_dict().items()}
    best = copy.deepcopy(model.state_dict())
    values = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    for _ in range(2):
        _train_a_step(model, optimizer)
    assert not np.array_equal(model[0].weight.numpy(), values["0.weight"])
    for snapshot in (cloned, best):
        for key, value in snapshot.items():
            np.testing.assert_array_equal(np.asarray(value), values[key], err_msg=key)
    model.load_state_dict(best)
    np.testing.assert_array_equal(model[0].weight.numpy(), values["0.weight"])
    _train_a_step(model, optimizer)                         # the optimizer steps what it loaded


def test_a_saved_state_dict_loads_as_tensors(tmp_path):
    fastdl.manual_seed(2)
    model = _small_cnn()
    path = str(tmp_path / "model.pt")
    fastdl.save(model.state_dict(), path)
    loaded = fastdl.load(path)
    assert list(loaded) == list(model.state_dict())
    for key, value in loaded.items():
        assert isinstance(value, fastdl.Tensor) and not value.requires_grad, key
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[key].numpy())
    other = _small_cnn()
    other.load_state_dict(loaded)
    x = fastdl.randn(2, 1, 6, 6)
    np.testing.assert_array_equal(other.eval()(x).numpy(), model.eval()(x).numpy())


def test_tied_weights_are_saved_once_and_load_as_one_tensor(tmp_path):
    encoder, decoder = nn.Linear(3, 3), nn.Linear(3, 3)
    decoder.weight = encoder.weight
    model = nn.Sequential(encoder, decoder)
    path = str(tmp_path / "tied.pt")
    fastdl.save(model.state_dict(), path)
    loaded = fastdl.load(path)
    assert loaded["0.weight"] is loaded["1.weight"]


# ------------------------------------------------------------------- Generator
def test_generator_is_torchs_api_and_seeds_every_random_factory():
    g = fastdl.Generator()
    assert g.manual_seed(7) is g and g.initial_seed() == 7 and g.device.type == "cpu"

    def draws(generator):
        return [fastdl.randn(3, generator=generator), fastdl.rand(2, 2, generator=generator),
                fastdl.randint(0, 10, (4,), generator=generator),
                fastdl.randperm(6, generator=generator),
                fastdl.zeros(3).normal_(0, 2, generator=generator),
                fastdl.zeros(3).uniform_(-1, 1, generator=generator),
                nn.init.normal_(fastdl.zeros(2), generator=generator),
                F.dropout(fastdl.ones(8), 0.5, generator=generator)]

    first = draws(g)
    g.manual_seed(7)
    again = draws(g)
    other = draws(fastdl.Generator().manual_seed(8))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(first[0].numpy(), other[0].numpy())
    state = g.get_state()
    values = fastdl.randn(5, generator=g)
    g.set_state(state)
    np.testing.assert_array_equal(fastdl.randn(5, generator=g).numpy(), values.numpy())
    new = g.seed()
    assert isinstance(new, int) and g.initial_seed() == new


def test_a_generator_does_not_touch_the_global_one():
    fastdl.manual_seed(3)
    expected = fastdl.randn(4).numpy()
    fastdl.manual_seed(3)
    fastdl.randn(10, generator=fastdl.Generator().manual_seed(1))
    np.testing.assert_array_equal(fastdl.randn(4).numpy(), expected)


def test_manual_seed_returns_the_default_generator_and_the_global_state_round_trips():
    g = fastdl.manual_seed(11)
    assert isinstance(g, fastdl.Generator) and g is fastdl.default_generator
    assert fastdl.initial_seed() == 11 and g.initial_seed() == 11
    state = fastdl.get_rng_state()
    values = fastdl.rand(4).numpy()
    fastdl.set_rng_state(state)
    np.testing.assert_array_equal(fastdl.rand(4).numpy(), values)
    seed = fastdl.seed()
    assert fastdl.initial_seed() == seed
    with pytest.raises(ValueError):
        fastdl.Generator().manual_seed(-1)


def test_random_split_and_samplers_take_a_generator():
    from fastdl.utils.data import DataLoader, RandomSampler, TensorDataset, random_split
    splits = [random_split(range(10), [4, 6], generator=fastdl.Generator().manual_seed(42))
              for _ in range(2)]
    assert [list(s) for s in splits[0]] == [list(s) for s in splits[1]]
    orders = [list(RandomSampler(range(8), generator=fastdl.Generator().manual_seed(0)))
              for _ in range(2)]
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(8))
    g = fastdl.Generator().manual_seed(5)
    dataset = TensorDataset(fastdl.arange(8))
    first = [b[0].tolist() for b in DataLoader(dataset, batch_size=4, shuffle=True, generator=g)]
    g.manual_seed(5)
    second = [b[0].tolist() for b in DataLoader(dataset, batch_size=4, shuffle=True, generator=g)]
    assert first == second


# ---------------------------------------------------------------- Module devices
def test_module_cuda_and_mps_raise_tensors_clear_error():
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError) as tensor_error:
        fastdl.zeros(1).cuda()
    with pytest.raises(RuntimeError) as module_error:
        model.cuda()
    assert str(module_error.value) == str(tensor_error.value)
    assert "not available" in str(module_error.value)
    with pytest.raises(RuntimeError, match="'mps' is not available"):
        model.mps()


def test_module_type_casts_and_share_memory_is_a_no_op():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert model.type(fastdl.float64) is model
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model[1].running_mean.dtype == np.float64
    model.type("torch.float32")
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert model.share_memory() is model
