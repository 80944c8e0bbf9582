"""Strict reading and atomic writing of safetensors files, with no pickle anywhere.

The safetensors layout is: 8 bytes little-endian header length ``L``, then ``L``
bytes of JSON mapping tensor names to ``{"dtype", "shape", "data_offsets"}``
(plus an optional ``"__metadata__"`` of string pairs), then the raw data.
Every field is checked here before any array is built, so a truncated, hostile
or mislabelled file (a pickle renamed ``.safetensors``) fails with a clear
``ValueError`` and nothing in it is ever executed.
"""
import json
import math
import os

import numpy as np
import safetensors.numpy

from fastdl._io import atomic_write_bytes

#: Largest JSON header accepted (the format's own reference reader caps it at 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
#: The NumPy dtypes a safetensors file can hold.
SUPPORTED_DTYPES = frozenset(np.dtype(v) for v in _DTYPES.values())


def save_bytes(tensors, metadata=None):
    """The safetensors encoding of ``tensors`` (name → ndarray) and string ``metadata``.

    Raises
    ------
    TypeError
        For a non-string name or metadata entry, or an unsupported dtype.
    """
    arrays = {}
    for name, value in tensors.items():
        array = np.require(value, requirements="C")  # keeps 0-d arrays 0-d
        if not isinstance(name, str):
            raise TypeError("save_file: tensor names must be str, got %r" % (name,))
        if array.dtype not in SUPPORTED_DTYPES:
            raise TypeError("save_file: tensor %r has unsupported dtype %s" % (name, array.dtype))
        arrays[name] = array
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("save_file: metadata must map str to str, got %r: %s"
                            % (key, type(value).__name__))
    return safetensors.numpy.save(arrays, metadata=metadata or None)


def save_file(tensors, path, metadata=None):
    """Write ``tensors`` (name → ndarray) and string ``metadata`` to ``path`` atomically.

    Parameters
    ----------
    tensors : dict of str to ndarray
        Arrays of the dtypes float64/32/16, int64/32/16/8, uint8 or bool.
    path : str or os.PathLike
    metadata : dict of str to str, optional

    Raises
    ------
    TypeError
        For a non-string name or metadata entry, or an unsupported dtype.
    """
    atomic_write_bytes(path, save_bytes(tensors, metadata))


def _fail(path, reason):
    raise ValueError("%s is not a valid safetensors file: %s" % (os.fspath(path), reason))


def _parse_header(path, raw, file_size, max_header_bytes=MAX_HEADER_BYTES):
    if file_size < 8:
        _fail(path, "only %d bytes (a header length needs 8)" % file_size)
    header_length = int.from_bytes(raw[:8], "little")
    if header_length > min(max_header_bytes, file_size - 8):
        _fail(path, "header length %d is beyond the file (%d bytes) or the %d-byte limit"
              % (header_length, file_size, max_header_bytes))
    try:
        header = json.loads(bytes(raw[8:8 + header_length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError, or an int of
        _fail(path, "header is not JSON (%s)" % error)  # more digits than Python parses
    except RecursionError:
        _fail(path, "header nests too deeply")
    if not isinstance(header, dict):
        _fail(path, "header is not a JSON object")
    return header, 8 + header_length


def _check_entry(path, name, entry, data_size):
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        _fail(path, "entry %r must have exactly dtype, shape and data_offsets" % name)
    dtype = _DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    if dtype is None:
        _fail(path, "tensor %r has unsupported dtype %r" % (name, entry["dtype"]))
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        _fail(path, "tensor %r has an invalid shape %r" % (name, shape))
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        _fail(path, "tensor %r has invalid data_offsets %r" % (name, offsets))
    if offsets[1] > data_size:
        _fail(path, "tensor %r ends at byte %d but the data section has %d bytes (truncated?)"
              % (name, offsets[1], data_size))
    itemsize = np.dtype(dtype).itemsize
    if math.prod(d or 1 for d in shape) * itemsize >= 2 ** 63:  # even with a 0 among them
        _fail(path, "tensor %r has a shape %s no array can have" % (name, shape))
    expected = math.prod(shape) * itemsize   # Python ints: huge dimensions cannot wrap
    if offsets[1] - offsets[0] != expected:
        _fail(path, "tensor %r of shape %s and dtype %s needs %d bytes, its offsets span %d"
              % (name, shape, entry["dtype"], expected, offsets[1] - offsets[0]))


def load_file(path, max_header_bytes=MAX_HEADER_BYTES):
    """Read a safetensors file, validating every header field first.

    Parameters
    ----------
    path : str or os.PathLike
    max_header_bytes : int
        Largest JSON header accepted (parsing JSON takes several times its size).

    Returns
    -------
    tensors : dict of str to ndarray
        Native-endian, writeable, C-contiguous copies.
    metadata : dict of str to str

    Raises
    ------
    ValueError
        If the file is not a well-formed safetensors file (truncated, wrong
        magic, header beyond the file, bad JSON, bad dtype/shape/offsets).
    FileNotFoundError
        If ``path`` does not exist.
    """
    with open(path, "rb") as f:
        raw = f.read()
    return load_bytes(raw, path, max_header_bytes)


def load_bytes(raw, path="<bytes>", max_header_bytes=MAX_HEADER_BYTES):
    """Read safetensors bytes, validating every header field first (see :func:`load_file`).

    ``path`` only names the source in error messages.
    """
    header, data_start = _parse_header(path, raw, len(raw), max_header_bytes)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        _fail(path, "__metadata__ must map strings to strings")
    data_size = len(raw) - data_start
    for name, entry in header.items():
        _check_entry(path, name, entry, data_size)
    try:
        tensors = safetensors.numpy.load(raw)
    except Exception as error:  # the library's own checks, as a last line
        _fail(path, str(error))
    return {name: np.array(array, copy=True) for name, array in tensors.items()}, metadata
