"""``fastdl.save`` / ``fastdl.load``: checkpoints as safetensors files, never pickle.

What programs save — a state dict, or a checkpoint such as ``{"epoch": 3, "model":
model.state_dict(), "optimizer": opt.state_dict(), "acc": 0.91}`` — is split in two:
every array goes into the safetensors data section under a readable name (a state
dict's own keys, ``model.conv1.weight`` inside a checkpoint), and the structure
around them goes into the header's ``__metadata__`` as one JSON document. Loading
rebuilds exactly what was saved: dict key types (an optimizer's ``state`` is keyed by
ints) and order, tuples vs lists, ints vs floats vs bools, ndarrays vs Tensors, dtypes
and 0-d arrays. Nothing in a file is ever executed; an object the format cannot
describe (a module, a function, any other class) is refused when saving, with its
place in the object named.

Structure nodes (JSON)::

    null, true/false, int, float, str       themselves (floats keep a ".0"; NaN/Infinity)
    [node, ...]                             a list
    {"tuple": [node, ...]}                  a tuple
    {"dict": [[key, node], ...]}            a dict (keys: None/bool/int/float/str/tuple)
    {"odict": [[key, node], ...]}           an OrderedDict
    {"ndarray": name} / {"tensor": name}    an array / a Tensor, stored under ``name``
    {"scalar": name}                        a NumPy scalar (stored as a 0-d array)
    {"dtype": "float32"}                    a NumPy dtype
    {"namespace": [[name, node], ...]}      an argparse.Namespace (programs save their args)

Files without the structure (written by earlier versions of :func:`save`, or any
other safetensors file) load as a dict of name → ndarray.
"""
import argparse
import json
from collections import OrderedDict

import numpy as np

from fastdl._io import atomic_write_bytes
from fastdl.autograd import Tensor
from fastdl.safetensors_io import SUPPORTED_DTYPES, load_bytes, save_bytes

FORMAT = "fastdl-object"
VERSION = "1"


class _Encoder:
    """Walks an object once, collecting its arrays and building its structure node."""

    def __init__(self):
        self.arrays = {}
        self._names_of = {}   # id(array-like) -> stored name, so a shared array is stored once
        self._keep = []       # keeps those ids alive (and so unique) while encoding

    def encode(self, value, where, name):
        if value is None or type(value) in (bool, int, float, str):
            return value
        if isinstance(value, Tensor):   # keyed by its array: a state dict's tied weights once
            return {"tensor": self._store(value.array, value.numpy(), where, name)}
        if isinstance(value, np.ndarray):
            return {"ndarray": self._store(value, value, where, name)}
        if isinstance(value, np.generic):
            return {"scalar": self._store(value, np.asarray(value), where, name)}
        if isinstance(value, np.dtype):
            self._check_dtype(value, where)
            return {"dtype": value.name}
        if type(value) is list:
            return [self.encode(item, "%s[%d]" % (where, i), _join(name, i))
                    for i, item in enumerate(value)]
        if type(value) is tuple:
            return {"tuple": [self.encode(item, "%s[%d]" % (where, i), _join(name, i))
                              for i, item in enumerate(value)]}
        if type(value) in (dict, OrderedDict):
            items = [[self._key(key, where), self.encode(item, "%s[%r]" % (where, key),
                                                         _join(name, key))]
                     for key, item in value.items()]
            return {"odict" if type(value) is OrderedDict else "dict": items}
        if type(value) is argparse.Namespace:
            return {"namespace": [[key, self.encode(item, "%s.%s" % (where, key),
                                                    _join(name, key))]
                                  for key, item in vars(value).items()]}
        raise TypeError("%s: cannot save an object of type %s safely%s"
                        % (where, type(value).__name__, _hint(value)))

    def _key(self, key, where):
        if key is None or type(key) in (bool, int, float, str):
            return key
        if type(key) is tuple:
            return {"tuple": [self._key(part, where) for part in key]}
        raise TypeError("%s: cannot save a dict key of type %s safely (keys must be None, "
                        "bool, int, float, str or tuples of them)" % (where, type(key).__name__))

    def _store(self, owner, array, where, name):
        if id(owner) in self._names_of:
            return self._names_of[id(owner)]
        self._check_dtype(array.dtype, where)
        unique, count = name, 1
        while unique in self.arrays:
            count += 1
            unique = "%s#%d" % (name, count)
        self.arrays[unique] = array
        self._names_of[id(owner)] = unique
        self._keep.append(owner)
        return unique

    @staticmethod
    def _check_dtype(dtype, where):
        if np.dtype(dtype) not in SUPPORTED_DTYPES:
            supported = ", ".join(sorted(d.name for d in SUPPORTED_DTYPES))
            raise TypeError("%s: cannot save an array of dtype %s (supported: %s)"
                            % (where, dtype, supported))


def _join(prefix, key):
    text = "_".join(map(str, key)) if type(key) is tuple else str(key)
    return text if not prefix else prefix + "." + text


def _hint(value):
    if callable(getattr(value, "state_dict", None)):
        return "; save its state_dict() instead"
    if callable(value):
        return "; functions and other code are never saved"
    return ("; only None, bool, int, float, str, list, tuple, dict, ndarray, Tensor, "
            "NumPy scalars and argparse.Namespace can be saved")


class _Decoder:
    """Rebuilds an object from its structure node and the file's arrays."""

    def __init__(self, arrays, source):
        self.arrays = arrays
        self.source = source
        self.used = set()
        self._tensors = {}

    def fail(self, reason):
        raise ValueError("%s is not a valid fastdl checkpoint: %s" % (self.source, reason))

    def decode(self, node):
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is list:
            return [self.decode(item) for item in node]
        if type(node) is not dict or len(node) != 1:
            self.fail("unexpected structure node %.60r" % (node,))
        (tag, body), = node.items()
        if tag == "tuple" and type(body) is list:
            return tuple(self.decode(item) for item in body)
        if tag in ("dict", "odict") and type(body) is list:
            result = OrderedDict() if tag == "odict" else {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    self.fail("a dict entry must be a [key, value] pair, got %.60r" % (pair,))
                result[self._key(pair[0])] = self.decode(pair[1])
            return result
        if tag == "namespace" and type(body) is list:
            namespace = argparse.Namespace()
            for pair in body:
                if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                    self.fail("a namespace entry must be a [name, value] pair, got %.60r"
                              % (pair,))
                setattr(namespace, pair[0], self.decode(pair[1]))
            return namespace
        if tag in ("ndarray", "tensor", "scalar") and type(body) is str:
            return self._array(tag, body)
        if tag == "dtype" and type(body) is str:
            try:
                dtype = np.dtype(body)
            except TypeError:
                dtype = None
            if dtype not in SUPPORTED_DTYPES:
                self.fail("unsupported dtype %r" % (body,))
            return dtype
        self.fail("unexpected structure node %.60r" % (node,))

    def _key(self, node):
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is dict and list(node) == ["tuple"] and type(node["tuple"]) is list:
            return tuple(self._key(part) for part in node["tuple"])
        self.fail("unexpected dict key %.60r" % (node,))

    def _array(self, tag, name):
        if name not in self.arrays:
            self.fail("the structure refers to an array %r the file does not hold" % name)
        self.used.add(name)
        array = self.arrays[name]
        if tag == "scalar":
            return array[()] if array.ndim == 0 else self.fail("scalar %r is not 0-d" % name)
        if tag == "ndarray":
            return array
        if name not in self._tensors:    # a Tensor saved twice is one Tensor again
            self._tensors[name] = Tensor(array)
        return self._tensors[name]


def save(obj, f, pickle_module=None, pickle_protocol=None,
         _use_new_zipfile_serialization=True):
    """Save ``obj`` to the path or binary file ``f``, atomically for paths, without pickle.

    Parameters
    ----------
    obj : object
        A state dict, or any nesting of dict/OrderedDict (keys None, bool, int,
        float, str or tuples of them), list, tuple, None, bool, int, float, str,
        ndarray, Tensor, NumPy scalar, NumPy dtype and argparse.Namespace — what
        ``model.state_dict()``, ``optimizer.state_dict()``,
        ``scheduler.state_dict()`` and checkpoints built of them hold.
    f : str, os.PathLike or binary file object
    pickle_module, pickle_protocol, _use_new_zipfile_serialization
        Accepted for ``torch.save`` compatibility; ignored (nothing is pickled).

    Raises
    ------
    TypeError
        For anything else, naming where it is, e.g. ``obj['model'][2]: cannot save
        an object of type Foo safely``; for arrays of an unsupported dtype.
    """
    encoder = _Encoder()
    try:
        structure = encoder.encode(obj, "obj", "")
    except RecursionError:
        raise TypeError("save: the object nests too deeply or contains itself") from None
    metadata = {"format": FORMAT, "version": VERSION,
                "structure": json.dumps(structure, separators=(",", ":"))}
    data = save_bytes(encoder.arrays, metadata)
    if hasattr(f, "write"):
        f.write(data)
    else:
        atomic_write_bytes(f, data)


def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None,
         **pickle_load_args):
    """Load what :func:`save` wrote to the path or binary file ``f``.

    Parameters
    ----------
    f : str, os.PathLike or binary file object
    map_location, weights_only, mmap, pickle_module, pickle_load_args
        Accepted for ``torch.load`` compatibility. Everything loads on the CPU,
        and loading is always weights-only: a file holds data, never code.

    Returns
    -------
    object
        Exactly the saved structure: Tensors load as Tensors and ndarrays as
        ndarrays, so a saved ``model.state_dict()`` loads as torch.load gives it,
        name → Tensor (tied weights saved once load as one Tensor). A file without
        the structure (an earlier ``fastdl.save`` of a state dict, any safetensors
        file) loads as a dict of name → ndarray.

    Raises
    ------
    ValueError
        If the file is not a valid safetensors file (truncated, corrupted, a
        pickle) or its structure is malformed; nothing in it is executed.
    """
    if hasattr(f, "read"):
        source = getattr(f, "name", "<file object>")
        arrays, metadata = load_bytes(f.read(), source)
    else:
        source = str(f)
        with open(f, "rb") as stream:
            arrays, metadata = load_bytes(stream.read(), f)
    if metadata.get("format") != FORMAT:
        return arrays
    decoder = _Decoder(arrays, source)
    if metadata.get("version") != VERSION:
        decoder.fail("format version %r; this fastdl reads %r"
                     % (metadata.get("version"), VERSION))
    try:
        structure = json.loads(metadata.get("structure", ""))
        result = decoder.decode(structure)
    except ValueError as error:
        if str(error).startswith(source + " is not"):
            raise
        decoder.fail("the structure is not valid JSON (%s)" % error)
    except RecursionError:
        decoder.fail("the structure nests too deeply")
    unused = sorted(set(arrays) - decoder.used)
    if unused:
        decoder.fail("arrays %s are not part of the structure" % unused[:5])
    return result
