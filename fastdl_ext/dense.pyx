# cython: language_level=3
"""Dense (fully connected) layer forward with a fused epilogue, for inference plans.

``out = act(x @ weight.T + bias)`` as one single-threaded GEMM from SciPy's
BLAS followed by the bias and (leaky) ReLU per row while it is in cache: at
batch 1 this replaces three NumPy calls (matmul, add, maximum) by one.
"""
from cython.parallel cimport prange

from fastdl_ext._activation cimport leaky_relu
from fastdl_ext._blas cimport floating, gemm, gemv

# Up to this many rows, one GEMV per row: GEMM packs the whole weight matrix
# first, which costs 35-45 µs for LeNet-5's 400 -> 120 at 1-8 rows (GEMV: 2.5 µs a row).
cdef enum:
    GEMV_ROWS = 8
    # Multiply-adds per thread below which one thread does it all: waking the team
    # costs 10-20 µs (LeNet-5's 400 -> 120 at batch 64, 3M, took 160 µs on one thread).
    WORK_PER_THREAD = 1 << 20


cdef void _rows(floating* x, floating* weight, floating* out, floating* bias, int first,
                int end, int features, int inputs, bint activate,
                floating slope) noexcept nogil:
    """out[first:end] = act(x[first:end] @ weight.T + bias), single-threaded BLAS."""
    cdef int row, feature
    cdef floating* values
    # Column-major, outᵀ (F × N) = W (F × K) xᵀ (K × N); the row-major W and x are
    # column-major (K × F) and (K × N), so W is taken transposed.
    if end - first <= GEMV_ROWS:
        for row in range(first, end):
            gemv(c'T', inputs, features, 1, weight, inputs, x + <Py_ssize_t>row * inputs, 1,
                 0, out + <Py_ssize_t>row * features, 1)
    else:
        gemm(c'T', c'N', features, end - first, inputs, 1, weight, inputs,
             x + <Py_ssize_t>first * inputs, inputs, 0, out + <Py_ssize_t>first * features,
             features)
    for row in range(first, end):
        values = out + <Py_ssize_t>row * features
        if bias != NULL:
            for feature in range(features):
                values[feature] = values[feature] + bias[feature]
        if activate:
            leaky_relu(values, features, slope)


def linear_forward_into(floating[:, ::1] x, floating[:, ::1] weight, floating[:, ::1] out,
                        floating[::1] bias=None, bint activate=False, double slope=0.0,
                        int num_threads=1):
    """out (N, F) = act(x (N, K) @ weight (F, K)ᵀ + bias (F,)).

    ``activate``: ``v < 0 → slope·v`` last (slope 0: ReLU). Rows are shared between up
    to ``num_threads`` threads, one GEMM each, where the work pays for waking them.
    Shapes are the caller's to check.
    """
    cdef int rows = x.shape[0], features = weight.shape[0], inputs = weight.shape[1]
    cdef int threads = max(1, min(num_threads, rows // GEMV_ROWS,
                                  <Py_ssize_t>rows * features * inputs // WORK_PER_THREAD))
    cdef int thread
    cdef floating* bias_data = &bias[0] if bias is not None and bias.shape[0] else NULL
    cdef floating slope_value = <floating>slope
    if rows == 0 or features == 0:
        return
    with nogil:
        if threads == 1:
            _rows(&x[0, 0], &weight[0, 0], &out[0, 0], bias_data, 0, rows, features, inputs,
                  activate, slope_value)
        else:
            for thread in prange(threads, num_threads=threads, schedule="static"):
                _rows(&x[0, 0], &weight[0, 0], &out[0, 0], bias_data,
                      rows * thread // threads, rows * (thread + 1) // threads, features,
                      inputs, activate, slope_value)
