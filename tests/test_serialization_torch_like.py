"""fastdl.save / fastdl.load on what torch programs save: checkpoints, optimizer and
scheduler states, round-tripped exactly and without pickle."""
import argparse
import io
import json
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import safetensors.numpy

import fastdl
from fastdl import nn
from fastdl.autograd import Tensor
from fastdl.safetensors_io import load_file, save_file


def _assert_same(loaded, saved, where="obj"):
    """Equal values of the same types all the way down (arrays: dtype, shape, values)."""
    assert type(loaded) is type(saved), "%s: %s vs %s" % (where, type(loaded), type(saved))
    if isinstance(saved, Tensor):
        _assert_same(loaded.numpy(), saved.numpy(), where)
    elif isinstance(saved, (np.ndarray, np.generic)):
        assert loaded.dtype == saved.dtype and loaded.shape == saved.shape, where
        np.testing.assert_array_equal(loaded, saved)
    elif isinstance(saved, dict):
        assert list(loaded) == list(saved), where
        for key in saved:
            assert type(key) is type(next(k for k in loaded if k == key)), where
            _assert_same(loaded[key], saved[key], "%s[%r]" % (where, key))
    elif isinstance(saved, (list, tuple)):
        assert len(loaded) == len(saved), where
        for i, (a, b) in enumerate(zip(loaded, saved)):
            _assert_same(a, b, "%s[%d]" % (where, i))
    elif isinstance(saved, argparse.Namespace):
        _assert_same(vars(loaded), vars(saved), where)
    elif isinstance(saved, float) and math.isnan(saved):
        assert math.isnan(loaded), where
    else:
        assert loaded == saved, where


def _model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 2))


def _train_step(model, optimizer):
    x = Tensor(np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype(np.float32))
    model(x).sum().backward()
    optimizer.step()


def test_a_state_dict_round_trips_and_stays_a_plain_safetensors_file(tmp_path):
    model = _model()
    path = tmp_path / "model.pt"
    fastdl.save(model.state_dict(), path)
    loaded = fastdl.load(path)
    _assert_same(loaded, model.state_dict())
    reference = safetensors.numpy.load_file(str(path))   # names are the state dict's keys
    assert set(reference) == set(model.state_dict())
    _model().load_state_dict(loaded)


def test_a_training_checkpoint_round_trips_exactly(tmp_path):
    model = _model()
    optimizer = fastdl.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = fastdl.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    _train_step(model, optimizer)
    scheduler.step()
    checkpoint = {"epoch": 3, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "acc": 0.91, "best": None,
                  "done": False, "history": [0.5, 0.75, float("nan")], "name": "run-1",
                  "size": (28, 28), "args": argparse.Namespace(lr=0.1, epochs=[1, 2])}
    path = tmp_path / "checkpoint.pt"
    fastdl.save(checkpoint, path)
    loaded = fastdl.load(path, map_location="cpu", weights_only=True)
    _assert_same(loaded, checkpoint)
    assert all(type(k) is int for k in loaded["optimizer"]["state"])
    restored = _model()
    restored.load_state_dict(loaded["model"])
    resumed = fastdl.optim.Adam(restored.parameters(), lr=1e-2)
    resumed.load_state_dict(loaded["optimizer"])
    _assert_same(resumed.state_dict(), optimizer.state_dict())


def test_keys_numbers_containers_and_arrays_keep_their_types(tmp_path):
    rng = np.random.default_rng(1)
    obj = OrderedDict([
        (0, "int key"), ("0", "str key"), (1.5, "float key"), (True, "bool key"),
        (None, "none key"), ((1, "a"), "tuple key"),
        ("numbers", [1, 1.0, -0.0, 2 ** 70, float("inf"), True]),
        ("nested", {"t": (1, [2, (3,)]), "empty": {}, "list": [], "tuple": ()}),
        ("zero_d", np.array(7, dtype=np.int64)),
        ("scalar", np.float32(0.25)),
        ("dtype", np.dtype(np.float64)),
        ("tensor", Tensor(rng.normal(size=(2, 3)).astype(np.float32))),
        ("non_contiguous", rng.normal(size=(4, 6))[:, ::2]),
        ("dtypes", [np.arange(3).astype(d) for d in
                    (np.float16, np.float64, np.int8, np.int16, np.int32, np.uint8, np.bool_)]),
    ])
    buffer = io.BytesIO()
    fastdl.save(obj, buffer)
    buffer.seek(0)
    loaded = fastdl.load(buffer)
    _assert_same(loaded, obj)
    assert loaded["zero_d"].ndim == 0


def test_a_shared_array_is_stored_once_and_names_never_collide(tmp_path):
    weight = np.ones((2, 2), np.float32)
    shared = Tensor(np.zeros(3, np.float32))
    obj = {"a.b": weight, "a": {"b": np.zeros(1)}, "x": shared, "y": shared, "w": weight}
    path = tmp_path / "c.pt"
    fastdl.save(obj, path)
    arrays, _ = load_file(path)
    assert len(arrays) == 3
    loaded = fastdl.load(path)
    assert loaded["x"] is loaded["y"]
    _assert_same(loaded, obj)


class Foo:
    pass


@pytest.mark.parametrize("obj, where, kind", [
    ({"model": {"foo": Foo()}}, r"obj\['model'\]\['foo'\]", "Foo"),
    ([1, lambda x: x], r"obj\[1\]", "function"),
    ({"net": nn.Linear(2, 2)}, r"obj\['net'\]", "Linear"),
    ({"s": {1, 2}}, r"obj\['s'\]", "set"),
    ({"a": np.array(["x"])}, r"obj\['a'\]", "dtype"),
    ({"a": np.array([1j])}, r"obj\['a'\]", "dtype"),
    ({Foo(): 1}, r"obj", "key of type Foo"),
])
def test_unsafe_objects_are_refused_naming_where_they_are(tmp_path, obj, where, kind):
    path = tmp_path / "bad.pt"
    with pytest.raises(TypeError, match=where + ".*" + kind):
        fastdl.save(obj, path)
    assert not path.exists()


def test_a_module_is_refused_with_a_hint():
    with pytest.raises(TypeError, match=r"obj: .*Sequential.*state_dict\(\)"):
        fastdl.save(_model(), io.BytesIO())


def test_a_self_containing_object_is_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match="contains itself"):
        fastdl.save(loop, io.BytesIO())


def test_files_of_the_earlier_format_and_other_safetensors_files_still_load(tmp_path):
    arrays = {"conv.weight": np.ones((2, 1, 3, 3), np.float32), "fc.bias": np.zeros(2)}
    old = tmp_path / "old.safetensors"
    save_file(arrays, old, metadata={"format": "fastdl-state-dict"})
    plain = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file(arrays, str(plain))
    for path in (old, plain):
        _assert_same(dict(sorted(fastdl.load(path).items())), dict(sorted(arrays.items())))


def _with_structure(path, change):
    arrays, metadata = load_file(path)
    change(arrays, metadata)
    save_file(arrays, path, metadata=metadata)


@pytest.mark.parametrize("change, match", [
    (lambda a, m: m.update(structure="{"), "not valid JSON"),
    (lambda a, m: m.update(structure='{"ndarray": "missing"}'), "does not hold"),
    (lambda a, m: m.update(structure='{"object": "os.system"}'), "unexpected structure"),
    (lambda a, m: m.update(structure='{"dict": [[{"x": 1}, 2]]}'), "unexpected dict key"),
    (lambda a, m: m.update(structure='{"dict": [[1]]}'), "pair"),
    (lambda a, m: m.update(structure='{"dtype": "object"}'), "unsupported dtype"),
    (lambda a, m: m.update(structure='{"namespace": [[1, 2]]}'), "namespace entry"),
    (lambda a, m: m.update(structure="[" * 100000 + "]" * 100000), "deeply|JSON"),
    (lambda a, m: m.update(version="99"), "version"),
    (lambda a, m: a.update(extra=np.zeros(1)), "not part of the structure"),
])
def test_malformed_structures_raise_value_error(tmp_path, change, match):
    path = tmp_path / "c.pt"
    fastdl.save({"w": np.zeros(2), "epoch": 1}, path)
    _with_structure(path, change)
    with pytest.raises(ValueError, match=match):
        fastdl.load(path)


def test_a_pickle_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": np.zeros(2)}))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        fastdl.load(path)


def test_the_structure_is_readable_json(tmp_path):
    path = tmp_path / "c.pt"
    fastdl.save({"epoch": 2, "state": {0: {"step": 1}}}, path)
    _, metadata = load_file(path)
    assert metadata["format"] == "fastdl-object"
    assert json.loads(metadata["structure"]) == {
        "dict": [["epoch", 2], ["state", {"dict": [[0, {"dict": [["step", 1]]}]]}]]}


def test_torch_reads_the_arrays_of_a_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = _model()
    path = tmp_path / "c.pt"
    fastdl.save({"epoch": 1, "model": model.state_dict()}, path)
    tensors = safetensors_torch.load_file(str(path))
    for name, array in model.state_dict().items():
        assert torch.equal(tensors["model." + name], torch.from_numpy(np.asarray(array)))


def test_a_state_dict_torch_wrote_as_safetensors_loads_into_fastdl(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                    torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(4 * 4 * 4, 2))
    path = tmp_path / "torch_model.safetensors"
    safetensors_torch.save_file(reference.state_dict(), str(path))
    model = _model()
    model.load_state_dict(fastdl.load(path))
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32)
    reference.eval()
    model.eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(model(Tensor(x)).numpy()), expected, rtol=1e-5,
                               atol=1e-6)
