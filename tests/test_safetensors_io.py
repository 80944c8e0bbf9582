"""The strict safetensors reader: valid files round-trip, hostile ones fail cleanly."""
import json
import os
import pickle

import numpy as np
import pytest
import safetensors.numpy

from fastdl.safetensors_io import load_file, save_file


@pytest.fixture
def tensors(rng):
    return {"conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
            "fc.bias": rng.normal(size=5),
            "steps": np.arange(3, dtype=np.int64),
            "view": rng.normal(size=(4, 6))[:, ::2]}


def test_round_trip_is_exact_and_readable_by_the_reference_library(tmp_path, tensors):
    path = tmp_path / "model.safetensors"
    save_file(tensors, path, metadata={"format": "1"})
    loaded, metadata = load_file(path)
    assert metadata == {"format": "1"}
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].flags.writeable and loaded[name].flags.c_contiguous
    reference = safetensors.numpy.load_file(str(path))
    np.testing.assert_array_equal(reference["view"], tensors["view"])


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, tensors):
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    save_file({"x": np.zeros(2)}, path)  # overwrite
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert set(load_file(path)[0]) == {"x"}


def test_failed_save_keeps_the_previous_file(tmp_path, tensors):
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    with pytest.raises(TypeError, match="unsupported dtype"):
        save_file({"bad": np.array(["a"])}, path)
    assert set(load_file(path)[0]) == set(tensors)


def _valid_bytes(tmp_path, tensors):
    path = tmp_path / "valid.safetensors"
    save_file(tensors, path)
    return path.read_bytes()


def _header_with(raw, change):
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    change(header)
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(8, "little") + encoded + raw[8 + length:]


@pytest.mark.parametrize("case, match", [
    ("truncated", "truncated"),
    ("tiny", "8"),
    ("pickle", "beyond the file"),
    ("huge_header", "beyond the file"),
    ("not_json", "not JSON"),
    ("json_list", "JSON object"),
    ("bad_dtype", "unsupported dtype"),
    ("bad_shape", "invalid shape"),
    ("shape_disagrees", "needs"),
    ("offsets_beyond", "ends at byte"),
])
def test_hostile_files_raise_value_error(tmp_path, tensors, case, match):
    raw = _valid_bytes(tmp_path, tensors)
    name = "conv.weight"
    variants = {
        "truncated": lambda: raw[:-7],
        "tiny": lambda: raw[:5],
        "pickle": lambda: pickle.dumps({"weights": np.zeros(3)}),
        "huge_header": lambda: (2 ** 40).to_bytes(8, "little") + raw[8:],
        "not_json": lambda: (4).to_bytes(8, "little") + b"\xff{x}" + raw[8:],
        "json_list": lambda: (2).to_bytes(8, "little") + b"[]",
        "bad_dtype": lambda: _header_with(raw, lambda h: h[name].update(dtype="OBJ")),
        "bad_shape": lambda: _header_with(raw, lambda h: h[name].update(shape=[-1, 3])),
        "shape_disagrees": lambda: _header_with(raw, lambda h: h[name].update(shape=[4, 3])),
        "offsets_beyond": lambda: _header_with(
            raw, lambda h: h[name].update(data_offsets=[0, 10 ** 9])),
    }
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(variants[case]())
    with pytest.raises(ValueError, match=match):
        load_file(path)
