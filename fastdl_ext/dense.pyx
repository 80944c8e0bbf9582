# cython: language_level=3
"""Dense (fully connected) layer forward with a fused epilogue, for inference plans.

``out = act(x @ weight.T + bias)`` as single-threaded GEMMs from SciPy's BLAS
followed by the bias and (leaky) ReLU per row while it is in cache: at batch 1
this replaces three NumPy calls (matmul, add, maximum) by one. Large layers are
split by output features between threads, each GEMM packing its own part of the
weights (split by rows, every GEMM packed all of them and two threads were no
faster than one).
"""
from cython.parallel cimport prange

from fastdl_ext._activation cimport leaky_relu
from fastdl_ext._blas cimport floating, gemm, gemv

# Up to this many rows, one GEMV per row: GEMM packs the whole weight matrix
# first, which costs 35-45 µs for LeNet-5's 400 -> 120 at 1-8 rows (GEMV: 2.5 µs a row).
cdef enum:
    GEMV_ROWS = 8
    # Multiply-adds per thread below which one thread does it all: waking the team
    # costs 10-20 µs (LeNet-5's 400 -> 120 at batch 64, 3M: 125-135 µs on one thread,
    # 100-115 on two).
    WORK_PER_THREAD = 1 << 20


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


def linear_forward_into(floating[:, ::1] x, floating[:, ::1] weight, floating[:, ::1] out,
                        floating[::1] bias=None, bint activate=False, double slope=0.0,
                        int num_threads=1):
    """out (N, F) = act(x (N, K) @ weight (F, K)ᵀ + bias (F,)).

    ``activate``: ``v < 0 → slope·v`` last (slope 0: ReLU). Output features (in
    multiples of 8) are shared between up to ``num_threads`` threads, one GEMM each,
    where the work pays for waking them.
    Shapes are the caller's to check.
    """
    cdef int rows = x.shape[0], features = weight.shape[0], inputs = weight.shape[1]
    cdef int threads = max(1, min(num_threads, features // 16,
                                  <Py_ssize_t>rows * features * inputs // WORK_PER_THREAD))
    cdef int thread
    cdef floating* bias_data = &bias[0] if bias is not None and bias.shape[0] else NULL
    cdef floating slope_value = <floating>slope
    if rows == 0 or features == 0:
        return
    with nogil:
        if threads == 1:
            _features(&x[0, 0], &weight[0, 0], &out[0, 0], bias_data, rows, 0, features,
                      features, inputs, activate, slope_value)
        else:
            for thread in prange(threads, num_threads=threads, schedule="static"):
                _features(&x[0, 0], &weight[0, 0], &out[0, 0], bias_data, rows,
                          features * thread // threads // 8 * 8,
                          features if thread == threads - 1 else
                          features * (thread + 1) // threads // 8 * 8,
                          features, inputs, activate, slope_value)
