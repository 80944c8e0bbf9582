/* The 8-lane vectors the compiled kernels share (GCC/Clang vector extensions).

   FASTDL_CLONES compiles a function twice where GCC can dispatch at load time (an
   ifunc picks the clone the CPU runs): for x86-64-v3 (AVX2 + FMA) and for the
   baseline the package is built for. fastdl_<type>8 is a vector of 8 values,
   fastdl_<type>8u the same loaded and stored unaligned, fastdl_<type>8m its mask.
   Declared for Cython in _epilogue.pxd. */

#ifndef FASTDL_VECTORS_H
#define FASTDL_VECTORS_H

#include <Python.h>   /* Py_ssize_t */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#  if __GNUC__ >= 12
#    define FASTDL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#  else
#    define FASTDL_CLONES __attribute__((target_clones("avx2", "default")))
#  endif
#else
#  define FASTDL_CLONES
#endif
/* The even and the odd lanes of two 8-lane vectors (a's, then b's): the columns
   of 2x2 windows, and of the phase planes of a stride-2 conv; and the reverse, the
   lanes of a and b interleaved (the low and the high halves). */
#if defined(__clang__) || __GNUC__ >= 12
#  define FASTDL_EVEN8(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#  define FASTDL_ODD8(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
#  define FASTDL_ZIP_LOW8(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#  define FASTDL_ZIP_HIGH8(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#else
   typedef long long fastdl_lanes8 __attribute__((vector_size(64)));
#  define FASTDL_EVEN8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){0, 2, 4, 6, 8, 10, 12, 14})
#  define FASTDL_ODD8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){1, 3, 5, 7, 9, 11, 13, 15})
#  define FASTDL_ZIP_LOW8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){0, 8, 1, 9, 2, 10, 3, 11})
#  define FASTDL_ZIP_HIGH8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){4, 12, 5, 13, 6, 14, 7, 15})
#endif
/* The later of two window values in torch's order wins when it is larger or NaN,
   as a select (an ``||`` would branch). */
#define FASTDL_TAKE(best, v) (((v) > (best)) | ((v) != (v)))
/* 8-lane vectors of ``type`` (loaded unaligned) and the helpers on them:
   fastdl_every_other_<type>: target[r * target_stride + i] = source[r *
     source_stride + 2 i], i < count, for ``rows`` rows (a stride-2 conv's phase
     plane), eight at a time where a row has ``readable`` values from its start;
   fastdl_max_rows_<type>: out[j] = the winner of first[j] and second[j] (out may
     be first);
   fastdl_max_pairs_<type>: out[i] = the winner of values[2 i] and values[2 i + 1]
     (out may be values).
   Column pairs are split by shuffles of explicit vectors: GCC gathered them value
   by value (3x slower than the Numba pooling loop, a third of a strided conv). */
#define FASTDL_VECTOR_HELPERS(type, mask_type)                                     \
    typedef type fastdl_##type##8 __attribute__((vector_size(8 * sizeof(type))));  \
    typedef type fastdl_##type##8u __attribute__((vector_size(8 * sizeof(type)),   \
                                                  aligned(sizeof(type)), may_alias)); \
    typedef mask_type fastdl_##type##8m __attribute__((vector_size(8 * sizeof(type)))); \
    FASTDL_CLONES static void fastdl_every_other_##type(                           \
            type *restrict target, Py_ssize_t target_stride,                       \
            const type *restrict source, Py_ssize_t source_stride, Py_ssize_t rows, \
            Py_ssize_t count, Py_ssize_t readable) {                               \
        for (Py_ssize_t r = 0; r < rows; r++) {                                     \
            const type *restrict from = source + r * source_stride;                 \
            type *restrict to = target + r * target_stride;                         \
            Py_ssize_t i = 0;                                                       \
            for (; i + 8 <= count && 2 * i + 16 <= readable; i += 8) {              \
                fastdl_##type##8 a = *(const fastdl_##type##8u *)(from + 2 * i);    \
                fastdl_##type##8 b = *(const fastdl_##type##8u *)(from + 2 * i + 8); \
                *(fastdl_##type##8u *)(to + i) = FASTDL_EVEN8(a, b);                \
            }                                                                       \
            for (; i < count; i++)                                                  \
                to[i] = from[2 * i];                                                \
        }                                                                           \
    }                                                                               \
    FASTDL_CLONES static void fastdl_max_rows_##type(                              \
            const type *first, const type *restrict second, type *out,             \
            Py_ssize_t count) {                                                     \
        for (Py_ssize_t j = 0; j < count; j++)                                      \
            out[j] = FASTDL_TAKE(first[j], second[j]) ? second[j] : first[j];       \
    }                                                                               \
    FASTDL_CLONES static void fastdl_max_pairs_##type(const type *values, type *out, \
                                                      Py_ssize_t count) {          \
        Py_ssize_t i = 0;                                                           \
        for (; i + 8 <= count; i += 8) {   /* reads stay ahead of the writes */     \
            fastdl_##type##8 a = *(const fastdl_##type##8u *)(values + 2 * i);      \
            fastdl_##type##8 b = *(const fastdl_##type##8u *)(values + 2 * i + 8);  \
            fastdl_##type##8 left = FASTDL_EVEN8(a, b), right = FASTDL_ODD8(a, b);  \
            fastdl_##type##8m take = FASTDL_TAKE(left, right);                      \
            *(fastdl_##type##8u *)(out + i) = (fastdl_##type##8)(                   \
                (take & (fastdl_##type##8m)right) | (~take & (fastdl_##type##8m)left)); \
        }                                                                           \
        for (; i < count; i++) {                                                    \
            type left = values[2 * i], right = values[2 * i + 1];                   \
            out[i] = FASTDL_TAKE(left, right) ? right : left;                       \
        }                                                                           \
    }
FASTDL_VECTOR_HELPERS(float, int)
FASTDL_VECTOR_HELPERS(double, long long)
#define FASTDL_LEAKY(v, slope)                                                     \
    (((v) > 0 ? (v) : 0) + (slope) * ((v) > 0 ? 0 : (v)))

#endif  /* FASTDL_VECTORS_H */
