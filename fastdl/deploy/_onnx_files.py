"""Reading an ONNX file for :mod:`fastdl.deploy.onnx_import` as untrusted input: the
model's bytes and its graph's declared sizes bounded before anything is allocated, and
tensor data (external data included, only inside the model's directory) read checked
against its declared size."""
import math
import os

import numpy as np

from fastdl.deploy._opgraph import MAX_ELEMENTS, MAX_INT
from fastdl.deploy.planfile import MAX_OPS

_MAX_DIMS = 8


def _onnx():
    try:
        import onnx
    except ImportError:   # pragma: no cover - depends on the environment
        raise ImportError("deploy.from_onnx needs the onnx package: pip install "
                          "'fastdl[onnx]' (or pip install onnx)") from None
    return onnx


def _fail(message):
    raise ValueError("deploy.from_onnx: " + message)


# ------------------------------------------------------------------- the tensors

class _Tensors:
    """Reads TensorProtos after checking every size they declare."""

    def __init__(self, onnx, directory, limit):
        self.onnx, self.directory, self.limit, self.total = onnx, directory, limit, 0
        mapping = onnx.helper.tensor_dtype_to_np_dtype
        P = onnx.TensorProto
        self.dtypes = {code: np.dtype(mapping(code)) for code in (
            P.FLOAT, P.DOUBLE, P.INT64, P.INT32, P.FLOAT16, P.INT16, P.INT8, P.UINT8,
            P.BOOL)}
        # the field a tensor without raw data keeps its values in (the small ints and
        # float16's bits in int32_data)
        self.fields = {code: "int32_data" for code in self.dtypes}
        self.fields.update({P.FLOAT: "float_data", P.DOUBLE: "double_data",
                            P.INT64: "int64_data"})

    def charge(self, size, where, name):
        """Count ``size`` more bytes (a constant folded at import) against the limit."""
        self.total += size
        if self.limit is not None and self.total > self.limit:
            _fail("%s: constant %r takes the model's tensors past max_bytes=%d"
                  % (where, name, self.limit))

    def read(self, proto, where):
        if proto.data_type not in self.dtypes:
            _fail("%s: tensor %r has data type %d, not a float or int one"
                  % (where, proto.name, proto.data_type))
        dtype, dims = self.dtypes[proto.data_type], list(proto.dims)
        if len(dims) > _MAX_DIMS or not all(0 <= d <= MAX_INT for d in dims):
            _fail("%s: tensor %r declares shape %s (at most %d dims in [0, %d])"
                  % (where, proto.name, dims, _MAX_DIMS, MAX_INT))
        count = math.prod(dims)
        size = count * dtype.itemsize
        self.total += size
        if self.limit is not None and self.total > self.limit:
            _fail("%s: tensor %r of shape %s takes the model's tensors past max_bytes=%d"
                  % (where, proto.name, dims, self.limit))
        if proto.data_location == self.onnx.TensorProto.EXTERNAL:
            raw = self._external(proto, where, size)
        elif proto.HasField("raw_data"):
            raw = proto.raw_data
        else:
            values = getattr(proto, self.fields[proto.data_type])
            if len(values) != count:
                _fail("%s: tensor %r declares shape %s but holds %d values"
                      % (where, proto.name, dims, len(values)))
            array = np.asarray(values, dtype=np.uint16 if proto.data_type ==
                               self.onnx.TensorProto.FLOAT16 else dtype)
            return array.view(dtype).reshape(dims)
        if len(raw) != size:
            _fail("%s: tensor %r declares shape %s (%d bytes) but holds %d bytes"
                  % (where, proto.name, dims, size, len(raw)))
        return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(dims)

    def _external(self, proto, where, size):
        if self.directory is None:
            _fail("%s: tensor %r has external data; give a path, not bytes"
                  % (where, proto.name))
        info = {entry.key: entry.value for entry in proto.external_data}
        location = info.get("location", "")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", size))
        except ValueError:
            _fail("%s: tensor %r: bad external data offset or length" % (where, proto.name))
        base = os.path.realpath(self.directory)
        path = os.path.realpath(os.path.join(base, location))
        if not location or os.path.isabs(location) or os.path.commonpath([base, path]) != base:
            _fail("%s: tensor %r: external data %r is not a file in the model's directory"
                  % (where, proto.name, location))
        if length != size or offset < 0:
            _fail("%s: tensor %r: external data of %d bytes at %d, the shape takes %d"
                  % (where, proto.name, length, offset, size))
        try:
            with open(path, "rb") as handle:
                if not os.path.isfile(path) or os.fstat(handle.fileno()).st_size < offset + size:
                    _fail("%s: tensor %r: external file %r is shorter than offset + length"
                          % (where, proto.name, location))
                handle.seek(offset)
                return handle.read(size)
        except OSError as error:
            _fail("%s: tensor %r: external data %r: %s" % (where, proto.name, location,
                                                             error.strerror))


# ----------------------------------------------------------------------- the file

def _load(onnx, source, limit):
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, directory = bytes(source), None
    else:
        path = os.fspath(source)
        directory = os.path.dirname(os.path.abspath(path))
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if limit is not None and size > limit:
                _fail("%s takes %d bytes, more than max_bytes=%d" % (path, size, limit))
            data = handle.read()
    if limit is not None and len(data) > limit:
        _fail("the model takes %d bytes, more than max_bytes=%d" % (len(data), limit))
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:   # google.protobuf.message.DecodeError and kin
        _fail("not an ONNX model (%s)" % error)
    return model, directory


def _checked_graph(model, min_opset):
    """``(graph, opset)`` of ``model`` after the checks on its opset and node count."""
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    opset = opsets.get("ai.onnx", 1)
    if opset < min_opset:
        _fail("opset %d is older than %d" % (opset, min_opset))
    graph = model.graph
    if len(graph.node) > MAX_OPS or len(graph.initializer) > MAX_OPS:
        _fail("%d nodes and %d initializers, more than MAX_OPS=%d" % (
            len(graph.node), len(graph.initializer), MAX_OPS))
    if len(graph.sparse_initializer):
        _fail("sparse initializers are not supported")
    return graph, opset


def _input_signature(onnx, value):
    """``(dtype, (C, H, W), batch)`` of the graph input ``value``: float or double, fixed
    C, H, W; ``batch`` the declared batch size, None where it is not fixed."""
    kind = value.type.tensor_type
    dims = list(kind.shape.dim)
    dtypes = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64}
    if kind.elem_type not in dtypes or len(dims) != 4 or not all(
            dim.HasField("dim_value") and 1 <= dim.dim_value <= MAX_INT for dim in dims[1:]):
        _fail("input %r must be a float or double (N, C, H, W) tensor with fixed C, H and W "
              "in [1, %d]" % (value.name, MAX_INT))
    shape = tuple(dim.dim_value for dim in dims[1:])
    if math.prod(shape) > MAX_ELEMENTS:
        _fail("input %r of shape (N, %d, %d, %d) has more than %d elements a sample"
              % ((value.name,) + shape + (MAX_ELEMENTS,)))
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    return (np.dtype(dtypes[kind.elem_type]), tuple(dim.dim_value for dim in dims[1:]),
            batch)
