# cython: language_level=3
"""Single-threaded GEMM and GEMV from SciPy's BLAS for both float widths, shared by the
kernels.

Row-major GEMM through column-major BLAS: a row-major (r × c) matrix is a
column-major (c × r) one, so ``C = A @ B`` is computed as ``C^T = B^T @ A^T``
by swapping the operands and m ↔ n.

The operands read are ``const`` (read-only arrays may be passed); SciPy's ``.pxd``
declares them as plain pointers, hence the casts.
"""
from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

ctypedef fused floating:
    float
    double


cdef inline void gemm(char transa, char transb, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb, &beta,
              c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb,
              &beta, c, &ldc)


cdef inline void gemv(char trans, int m, int n, floating alpha, const floating* a, int lda,
                      const floating* x, int incx, floating beta, floating* y,
                      int incy) noexcept nogil:
    if floating is float:
        sgemv(&trans, &m, &n, &alpha, <float*>a, &lda, <float*>x, &incx, &beta, y, &incy)
    else:
        dgemv(&trans, &m, &n, &alpha, <double*>a, &lda, <double*>x, &incx, &beta, y, &incy)


# Sums that threads build in parts of their own (one part a thread, added by the caller):
# a thread's first product writes its part (beta 0), the later ones add to it, and the
# parts no thread wrote are zeroed after the parallel loop. No pass zeroes every part
# first (the 2 x 16 x 512² values of a Winograd weight gradient: 33 MB).

cdef inline double part_beta(char* written, int part) noexcept nogil:
    """GEMM beta for the next product into ``part``: 0 for its first (the part's values
    on entry are never read), 1 after; marks the part written."""
    if written[part]:
        return 1.0
    written[part] = 1
    return 0.0


cdef inline void zero_unwritten_parts(floating* parts, size_t part_size, int count,
                                      const char* written) noexcept nogil:
    """Zero each of the ``count`` parts (``part_size`` values apart) not ``written``."""
    cdef int part
    for part in range(count):
        if not written[part]:
            memset(parts + <size_t>part * part_size, 0, sizeof(floating) * part_size)
