# cython: language_level=3
"""Dense (fully connected) layer forward with a fused epilogue, for inference plans.

``out = act(x @ weight.T + bias)``. In float32 from 4 rows on, a register kernel
on weights packed once (``linear_packed_into``): panels of 24 output features, each
``(K, 24)`` and read as three 8-lane vectors per input, against four rows of ``x``
broadcast value by value, with the bias and (leaky) ReLU applied in registers before
the one store. A BLAS GEMM packs the whole weight matrix on every call: LeNet-5's
400 -> 120 at batch 64 took 100-120 µs that way, 45-58 µs packed once. Fewer rows
(one GEMV per row) and float64 (eight doubles are two AVX2 registers: the block
would not fit in sixteen) go through SciPy's BLAS on the weights as they are
(``linear_forward_into``). Arrays are read through NumPy's C API (``_arrays.pxd``):
a typed memoryview's fused-type dispatch cost 3-7 µs a call.
"""
from cython.parallel cimport prange

cimport numpy as cnp

cnp.import_array()

from fastdl_ext._epilogue cimport leaky_relu
from fastdl_ext._arrays cimport _data, _dims, _float_type
from fastdl_ext._blas cimport floating, gemm, gemv
from fastdl_ext._dense cimport PANEL, PANEL_ROWS, packed_items

# Up to this many rows, one GEMV per row: GEMM packs the whole weight matrix
# first, which costs 35-45 µs for LeNet-5's 400 -> 120 at 1-8 rows (GEMV: 2.5 µs a row).
cdef enum:
    GEMV_ROWS = 8
    # Multiply-adds per thread below which one thread does it all: waking the team
    # costs 10-20 µs (LeNet-5's 400 -> 120 at batch 64, 3M: 125-135 µs on one thread,
    # 100-115 on two).
    WORK_PER_THREAD = 1 << 20


def panel_shape():
    """``(PANEL_ROWS, PANEL)``: rows of x per register block, output features per panel."""
    return PANEL_ROWS, PANEL


cdef void _features(floating* x, floating* weight, floating* out, floating* bias, int rows,
                    int first, int end, int features, int inputs, bint activate,
                    floating slope) noexcept nogil:
    """out[:, first:end] = act(x @ weight[first:end].T + bias[first:end])."""
    cdef int row, feature
    cdef floating* values
    if end <= first:
        return
    if rows <= GEMV_ROWS:
        for row in range(rows):
            gemv(c'T', inputs, end - first, 1, weight + <Py_ssize_t>first * inputs, inputs,
                 x + <Py_ssize_t>row * inputs, 1, 0, out + <Py_ssize_t>row * features + first, 1)
    else:
        gemm(c'T', c'N', end - first, rows, inputs, 1, weight + <Py_ssize_t>first * inputs,
             inputs, x, inputs, 0, out + first, features)
    for row in range(rows):
        values = out + <Py_ssize_t>row * features + first
        if bias != NULL:
            for feature in range(end - first):
                values[feature] = values[feature] + bias[first + feature]
        if activate:
            leaky_relu(values, end - first, slope)


cdef int _gemm_threads(Py_ssize_t rows, Py_ssize_t features, Py_ssize_t inputs,
                       int num_threads) noexcept nogil:
    """Threads to share a layer (its output features, or the packed kernel's register
    blocks): one per ``WORK_PER_THREAD`` multiply-adds."""
    return <int>max(1, min(num_threads, features // 16, rows * features * inputs
                           // WORK_PER_THREAD))


cdef void _linear(floating* x, floating* weight, floating* out, floating* bias, int rows,
                  int features, int inputs, bint activate, floating slope,
                  int threads) noexcept nogil:
    cdef int thread
    if threads == 1:
        _features(x, weight, out, bias, rows, 0, features, features, inputs, activate, slope)
        return
    for thread in prange(threads, num_threads=threads, schedule="static"):
        _features(x, weight, out, bias, rows, features * thread // threads // 8 * 8,
                  features if thread == threads - 1 else
                  features * (thread + 1) // threads // 8 * 8,
                  features, inputs, activate, slope)


cdef void* _bias_data(str caller, object bias, int typenum, Py_ssize_t features) except? NULL:
    """The bias's data (NULL for None or no values), checked against ``features``."""
    if bias is None:
        return NULL
    cdef cnp.npy_intp* shape = _dims(caller, bias, "bias", 1, typenum, False)
    if shape[0] not in (0, features):
        raise ValueError("%s: bias has %d values for %d features" % (caller, shape[0], features))
    return _data(bias) if shape[0] else NULL


def linear_forward_into(x, weight, out, bias=None, bint activate=False, double slope=0.0,
                        int num_threads=1):
    """out (N, F) = act(x (N, K) @ weight (F, K)ᵀ + bias (F,)).

    ``activate``: ``v < 0 → slope·v`` last (slope 0: ReLU). Output features (in
    multiples of 8) are shared between up to ``num_threads`` threads, one GEMM each,
    where the work pays for waking them. float32 or float64, C-contiguous; shapes
    are checked.
    """
    cdef str caller = "linear_forward_into"
    cdef int typenum = _float_type(caller, x)
    cdef cnp.npy_intp* x_shape = _dims(caller, x, "x", 2, typenum, False)
    cdef cnp.npy_intp* w_shape = _dims(caller, weight, "weight", 2, typenum, False)
    cdef cnp.npy_intp* out_shape = _dims(caller, out, "out", 2, typenum, True)
    cdef int rows = x_shape[0], features = w_shape[0], inputs = w_shape[1]
    if x_shape[1] != inputs or out_shape[0] != rows or out_shape[1] != features:
        raise ValueError("%s: x %s, weight %s and out %s do not fit x @ weight.T"
                         % (caller, (x_shape[0], x_shape[1]), (w_shape[0], w_shape[1]),
                            (out_shape[0], out_shape[1])))
    cdef void* bias_data = _bias_data(caller, bias, typenum, features)
    cdef int threads = _gemm_threads(rows, features, inputs, num_threads)
    cdef void* source = _data(x)
    cdef void* weights = _data(weight)
    cdef void* target = _data(out)
    if rows == 0 or features == 0:
        return
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            _linear(<float*>source, <float*>weights, <float*>target, <float*>bias_data, rows,
                    features, inputs, activate, <float>slope, threads)
        else:
            _linear(<double*>source, <double*>weights, <double*>target, <double*>bias_data,
                    rows, features, inputs, activate, slope, threads)


cdef void _packed(const float* x, const float* panels, const float* bias, float* out,
                  int rows, int features, int inputs, bint activate, float slope,
                  int threads) noexcept nogil:
    cdef Py_ssize_t items = ((rows + PANEL_ROWS - 1) // PANEL_ROWS
                             * ((features + PANEL - 1) // PANEL))
    cdef int thread
    if threads == 1:
        packed_items(x, panels, bias, out, rows, features, inputs, activate, slope, 0, items)
        return
    for thread in prange(threads, num_threads=threads, schedule="static"):
        packed_items(x, panels, bias, out, rows, features, inputs, activate, slope,
                     items * thread // threads, items * (thread + 1) // threads)


def linear_packed_into(x, panels, out, bias=None, bint activate=False, double slope=0.0,
                       int num_threads=1):
    """out (N, F) = act(x (N, K) @ weight.T + bias) on packed weights.

    ``panels`` (P, K, PANEL), P = ceil(F / PANEL): panel p holds ``weight[p * PANEL:
    (p + 1) * PANEL].T``, zeros past F. ``bias``: (P * PANEL,), zeros past F, or
    None. ``activate``: ``v < 0 → slope·v`` last. Register blocks are shared between
    up to ``num_threads`` threads where the work pays for waking them. float32,
    C-contiguous; shapes are checked.
    """
    cdef str caller = "linear_packed_into"
    cdef int typenum = cnp.NPY_FLOAT32
    cdef cnp.npy_intp* x_shape = _dims(caller, x, "x", 2, typenum, False)
    cdef cnp.npy_intp* p_shape = _dims(caller, panels, "panels", 3, typenum, False)
    cdef cnp.npy_intp* out_shape = _dims(caller, out, "out", 2, typenum, True)
    cdef int rows = x_shape[0], inputs = x_shape[1], features = out_shape[1]
    if p_shape[1] != inputs or p_shape[2] != PANEL or out_shape[0] != rows \
            or p_shape[0] != (features + PANEL - 1) // PANEL:
        raise ValueError("%s: x %s, panels %s and out %s do not fit (panels of %d features)"
                         % (caller, (x_shape[0], x_shape[1]),
                            (p_shape[0], p_shape[1], p_shape[2]),
                            (out_shape[0], out_shape[1]), PANEL))
    cdef void* bias_data = _bias_data(caller, bias, typenum, p_shape[0] * PANEL)
    cdef Py_ssize_t items = (rows + PANEL_ROWS - 1) // PANEL_ROWS * p_shape[0]
    if items == 0:
        return
    cdef int threads = <int>min(items, _gemm_threads(rows, features, inputs, num_threads))
    cdef const float* source = <const float*>_data(x)
    cdef const float* packed = <const float*>_data(panels)
    cdef float* target = <float*>_data(out)
    with nogil:
        _packed(source, packed, <const float*>bias_data, target, rows, features, inputs,
                activate, <float>slope, threads)
