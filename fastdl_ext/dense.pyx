# cython: language_level=3
"""Dense (fully connected) layer forward with a fused epilogue, for inference plans.

``out = act(x @ weight.T + bias)`` as one single-threaded GEMM from SciPy's
BLAS followed by the bias and (leaky) ReLU per row while it is in cache: at
batch 1 this replaces three NumPy calls (matmul, add, maximum) by one.
"""
from fastdl_ext._activation cimport leaky_relu
from fastdl_ext._blas cimport floating, gemm, gemv

# Up to this many rows, one GEMV per row: GEMM packs the whole weight matrix
# first, which costs 35-45 µs for LeNet-5's 400 -> 120 at 1-8 rows (GEMV: 2.5 µs a row).
cdef enum:
    GEMV_ROWS = 8


def linear_forward_into(floating[:, ::1] x, floating[:, ::1] weight, floating[:, ::1] out,
                        floating[::1] bias=None, bint activate=False, double slope=0.0):
    """out (N, F) = act(x (N, K) @ weight (F, K)ᵀ + bias (F,)).

    ``activate``: ``v < 0 → slope·v`` last (slope 0: ReLU). Shapes are the caller's
    to check.
    """
    cdef int rows = x.shape[0], features = weight.shape[0], inputs = weight.shape[1]
    cdef int row, feature
    cdef floating* values
    cdef floating slope_value = <floating>slope
    if rows == 0 or features == 0:
        return
    with nogil:
        # Column-major, outᵀ (F × N) = W (F × K) xᵀ (K × N); the row-major W and x are
        # column-major (K × F) and (K × N), so W is taken transposed.
        if rows <= GEMV_ROWS:
            for row in range(rows):
                gemv(c'T', inputs, features, 1, &weight[0, 0], inputs, &x[row, 0], 1, 0,
                     &out[row, 0], 1)
        else:
            gemm(c'T', c'N', features, rows, inputs, 1, &weight[0, 0], inputs, &x[0, 0],
                 inputs, 0, &out[0, 0], features)
        for row in range(rows):
            values = &out[row, 0]
            if bias is not None:
                for feature in range(features):
                    values[feature] = values[feature] + bias[feature]
            if activate:
                leaky_relu(values, features, slope_value)
