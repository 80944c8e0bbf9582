"""Module and container API as torch's: registration and attribute rules, traversal,
hooks, modes, state dicts (names, order, strict loading), containers and repr."""
import copy
from collections import OrderedDict

import numpy as np
import pytest

import fastdl
from fastdl import nn


def define(nn, ones, zeros):
    """A small ResNet-like network written once, against ``torch.nn`` or ``fastdl.nn``."""

    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU(inplace=True)
            self.register_buffer("scale", ones(1))
            self.register_buffer("cache", zeros(2), persistent=False)

        def forward(self, x):
            return self.relu(self.bn1(self.conv1(x))) + x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.layer1 = nn.Sequential(Block(4), Block(4))
            self.heads = nn.ModuleDict({"cls": nn.Linear(4, 2), "aux": nn.Linear(4, 1)})
            self.extra = nn.ModuleList([nn.Identity()])
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            x = self.pool(self.layer1(self.stem(x))).flatten(1)
            return self.heads["cls"](x)
    return Net


Net = define(nn, lambda n: np.ones(n, np.float32), lambda n: np.zeros(n, np.float32))


def test_state_dict_names_and_order_are_torchs():
    keys = list(Net().state_dict())
    # a module's own parameters, then its own buffers, then its children's entries
    assert keys[:4] == ["stem.weight", "stem.bias", "layer1.0.scale", "layer1.0.conv1.weight"]
    assert keys[4:9] == ["layer1.0.bn1.weight", "layer1.0.bn1.bias",
                         "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var",
                         "layer1.0.bn1.num_batches_tracked"]
    assert "layer1.0.cache" not in keys   # not persistent
    assert keys[-4:] == ["heads.cls.weight", "heads.cls.bias", "heads.aux.weight",
                         "heads.aux.bias"]
    assert "layer1.1.cache" in dict(Net().named_buffers())


def test_state_dict_matches_torchs_for_the_same_code():
    torch = pytest.importorskip("torch")
    reference = define(torch.nn, torch.ones, torch.zeros)()
    ours = Net()
    assert list(ours.state_dict()) == list(reference.state_dict())
    result = ours.load_state_dict(reference.state_dict())   # torch tensors, strict
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    np.testing.assert_array_equal(ours.stem.weight.array, reference.stem.weight.detach().numpy())
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in reference.named_modules()]
    assert [n for n, _ in ours.named_parameters()] == [
        n for n, _ in reference.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in reference.named_buffers()]
    assert repr(ours) == repr(reference).replace("torch.", "")
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(ours(fastdl.Tensor(x)).array,
                               reference(torch.tensor(x)).detach().numpy(), rtol=1e-4,
                               atol=1e-5)


def test_load_state_dict_strict_and_not():
    net = Net()
    state = net.state_dict()
    del state["stem.bias"]
    state["stem.extra"] = np.zeros(1)
    with pytest.raises(RuntimeError, match='Missing key.*"stem.bias".*\n.*Unexpected key.*'
                                           '"stem.extra"'):
        net.load_state_dict(state)
    result = net.load_state_dict(state, strict=False)
    assert result == (["stem.bias"], ["stem.extra"])
    state = net.state_dict()
    state["stem.weight"] = np.zeros((1, 2))
    with pytest.raises(RuntimeError, match="size mismatch for stem.weight"):
        net.load_state_dict(state, strict=False)
    with pytest.raises(TypeError, match="dict-like"):
        net.load_state_dict([1, 2])


def test_load_copies_in_place_and_assign_replaces():
    net = nn.Linear(2, 3)
    weight = net.weight
    net.load_state_dict({"weight": fastdl.Tensor(np.ones((3, 2))), "bias": np.zeros(3)})
    assert net.weight is weight and np.all(weight.array == 1)
    assert weight.dtype == np.float32   # cast to the parameter's dtype, as torch's copy_
    net.load_state_dict({"weight": np.full((3, 2), 2.0), "bias": np.zeros(3)}, assign=True)
    assert np.all(net.weight.array == 2)


def test_attribute_rules():
    module = nn.Module()
    module.weight = nn.Parameter(np.zeros(2))
    module.child = nn.Linear(2, 2)
    module.register_buffer("stat", np.zeros(3))
    module.plain = 3
    assert list(module._parameters) == ["weight"] and list(module._modules) == ["child"]
    assert module.weight is module._parameters["weight"]
    with pytest.raises(TypeError, match="cannot assign 'ndarray' as parameter 'weight'"):
        module.weight = np.zeros(2)
    with pytest.raises(TypeError, match="child module 'child'"):
        module.child = 3
    with pytest.raises(TypeError, match="buffer 'stat'"):
        module.stat = [1, 2]
    module.stat = fastdl.Tensor(np.ones(3))   # a Tensor buffer is kept as a Tensor
    assert isinstance(module.state_dict()["stat"], fastdl.Tensor)
    module.weight = None
    assert "weight" in module._parameters and module.weight is None
    module.child = nn.Identity()
    module._modules["child"] = nn.ReLU()   # direct registry edits are seen, as in torch
    assert isinstance(module.child, nn.ReLU)
    module._modules = OrderedDict([("other", nn.Tanh())])
    assert not hasattr(module, "child") and isinstance(module.other, nn.Tanh)
    del module.other, module.stat, module.plain
    assert not module._modules and not module._buffers and not hasattr(module, "plain")
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'missing'"):
        module.missing


def test_registration_errors():
    module = nn.Module()
    module.value = 1
    with pytest.raises(KeyError, match="already exists"):
        module.register_buffer("value", np.zeros(1))
    with pytest.raises(KeyError, match="contain"):
        module.register_parameter("a.b", None)
    with pytest.raises(KeyError, match="empty"):
        module.add_module("", nn.ReLU())
    with pytest.raises(TypeError, match="is not a Module"):
        module.add_module("x", 3)
    with pytest.raises(TypeError, match="Parameter"):
        module.register_parameter("w", fastdl.Tensor(np.zeros(1)))
    with pytest.raises(TypeError, match="buffer"):
        module.register_buffer("b", 3)

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))
    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_traversal_and_submodule_lookup():
    net = Net()
    shared = nn.Linear(2, 2)
    net.a, net.b = shared, shared
    names = [n for n, _ in net.named_modules()]
    assert "a" in names and "b" not in names   # each module once
    assert [n for n, _ in net.named_modules(remove_duplicate=False)].count("b") == 1
    assert [n for n, _ in net.named_children()][:3] == ["stem", "layer1", "heads"]
    assert net.get_submodule("layer1.1.bn1") is net.layer1[1].bn1
    assert net.get_parameter("layer1.0.conv1.weight") is net.layer1[0].conv1.weight
    assert net.get_buffer("layer1.0.bn1.running_mean") is net.layer1[0].bn1.running_mean
    with pytest.raises(AttributeError, match="has no attribute `nope`"):
        net.get_submodule("layer1.nope")
    own = [n for n, _ in net.stem.named_parameters(prefix="stem", recurse=False)]
    assert own == ["stem.weight", "stem.bias"]
    assert len(list(net.parameters(recurse=False))) == 0
    assert "a.weight" in net.state_dict() and "b.weight" in net.state_dict()


def test_modes_apply_grad_and_freezing():
    net = Net()
    seen = []
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen[-1] == "Net" and seen[0] == "Conv2d"
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="boolean"):
        net.train("yes")
    out = net(fastdl.Tensor(np.ones((1, 3, 4, 4), np.float32))).sum()
    out.backward()
    assert net.stem.weight.grad is not None
    net.zero_grad(set_to_none=False)
    assert not np.any(np.asarray(net.stem.weight.grad))
    net.zero_grad()
    assert net.stem.weight.grad is None
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_forward_hooks_and_handles():
    layer = nn.Linear(2, 2)
    calls = []
    pre = layer.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    post = layer.register_forward_hook(lambda m, args, out: calls.append(out.shape) or out + 1)
    x = fastdl.Tensor(np.ones((1, 2), np.float32))
    expected = layer.forward(x * 2).array + 1
    np.testing.assert_allclose(layer(x).array, expected)
    assert calls == [(1, 2)]
    pre.remove()
    post.remove()
    np.testing.assert_allclose(layer(x).array, layer.forward(x).array)
    with layer.register_forward_hook(lambda m, a, k, out: out * 0, with_kwargs=True):
        assert not np.any(layer(x).array)
    assert not layer._forward_hooks


def test_hooks_stop_the_sequential_conv_relu_fusion(monkeypatch):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    seen = []
    model[1].register_forward_hook(lambda m, args, out: seen.append(1))
    monkeypatch.setattr(fastdl.functional, "conv2d_relu", None)   # fused call would fail
    model(fastdl.Tensor(np.ones((1, 1, 4, 4), np.float32)))
    assert seen == [1]


def test_sequential_api():
    layers = [nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and seq[-1] is layers[2] and list(seq) == layers
    part = seq[1:]
    assert isinstance(part, nn.Sequential) and list(part._modules) == ["1", "2"]
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert named.fc is named[0] and list(named.state_dict()) == ["fc.weight", "fc.bias"]
    seq.append(nn.Tanh())
    seq.insert(0, nn.Identity())
    seq.extend([nn.Sigmoid()])
    assert [type(m).__name__ for m in seq] == ["Identity", "Linear", "ReLU", "Linear", "Tanh",
                                               "Sigmoid"]
    assert list(seq._modules) == [str(i) for i in range(6)]
    del seq[0]
    assert type(seq[0]).__name__ == "Linear" and list(seq._modules)[0] == "0"
    assert isinstance(seq.pop(-1), nn.Sigmoid) and len(seq) == 4
    seq[1] = nn.GELU()
    assert isinstance(seq[1], nn.GELU)
    assert len(seq + nn.Sequential(nn.ReLU())) == 5
    with pytest.raises(IndexError, match="out of range"):
        seq[7]
    x = fastdl.Tensor(np.ones((1, 2), np.float32))
    assert seq(x).shape == (1, 3)


def test_module_list_and_dict():
    blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))
    blocks.append(nn.ReLU())
    blocks.insert(1, nn.Tanh())
    blocks += [nn.Sigmoid()]
    assert len(blocks) == 6 and isinstance(blocks[1], nn.Tanh) and isinstance(blocks[-1],
                                                                            nn.Sigmoid)
    assert isinstance(blocks[:2], nn.ModuleList)
    assert len(list(blocks.parameters())) == 6
    heads = nn.ModuleDict([("a", nn.Linear(2, 1))])
    heads["b"] = nn.ReLU()
    heads.update({"c": nn.Tanh()})
    assert list(heads) == ["a", "b", "c"] and "b" in heads and len(heads) == 3
    assert [k for k, _ in heads.items()] == list(heads.keys())
    assert isinstance(heads.pop("b"), nn.ReLU) and list(heads) == ["a", "c"]
    params = nn.ParameterList([nn.Parameter(np.zeros(2)), np.ones(3)])
    assert len(params) == 2 and isinstance(params[1], nn.Parameter)
    table = nn.ParameterDict({"w": np.zeros(2)})
    assert list(dict(nn.Sequential(table).named_parameters())) == ["0.w"]


def test_repr_is_torchs():
    torch = pytest.importorskip("torch")
    for build in (lambda nn: nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2), nn.ReLU()]),
                  lambda nn: nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, bias=False),
                                           nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                           nn.Sequential(nn.MaxPool2d(2), nn.Dropout(0.2)),
                                           nn.ModuleDict({"fc": nn.Linear(8, 2)})),
                  lambda nn: nn.Module()):
        assert repr(build(nn)) == repr(build(torch.nn))


def test_deepcopy_keeps_registries():
    net = Net()
    clone = copy.deepcopy(net)
    assert list(clone.state_dict()) == list(net.state_dict())
    assert clone.stem.weight is not net.stem.weight
    np.testing.assert_array_equal(clone.stem.weight.array, net.stem.weight.array)
    clone._modules["stem"] = nn.Identity()   # the copy's registries are its own
    assert isinstance(clone.stem, nn.Identity) and isinstance(net.stem, nn.Conv2d)


def test_data_parallel_passes_through_with_torchs_keys():
    inner = nn.Linear(2, 3)
    wrapped = nn.DataParallel(inner, device_ids=None)
    assert list(wrapped.state_dict()) == ["module.weight", "module.bias"]
    x = fastdl.Tensor(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(wrapped(x).array, inner(x).array)
    assert wrapped.module is inner
