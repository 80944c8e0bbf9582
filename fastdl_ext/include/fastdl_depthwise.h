/* Depthwise convolution (groups == input channels, weight (C_in * M, 1, K, K), K 3 or
   5, dilation 1, strides 1 or 2), forward, input gradient and weight gradient, one
   (image, channel) plane at a time. Declared for Cython in depthwise.pyx.

   A plane is copied into a thread's buffer, zeroed once per call, whose border is its
   padding (and, at a column stride of 2, its even and odd columns go to two phase
   planes), so every tap of every output row reads a contiguous run: the K * K
   multiply-adds of a run of output columns are explicit vectors of FASTDL_DW_BYTES,
   summed in tap order. No im2col, and no work split finer than a plane: results do
   not depend on the thread count.

   The input gradient is the stride-1 correlation of grad_out, spread out by the
   stride and padded by K - 1 - padding, with the flipped kernel (the spread's zero
   rows are skipped, its zero columns read). The weight gradient
   of a channel sums over all its images in one thread, in per-lane sums reduced in
   lane order at the end (a fixed order: bitwise the same for any thread count). */

#ifndef FASTDL_DEPTHWISE_H
#define FASTDL_DEPTHWISE_H

#include <string.h>
#include "fastdl_vectors.h"

/* 32-byte vectors, the AVX2 registers of FASTDL_CLONES' x86-64-v3 clone. 64-byte ones
   (AVX-512) ran no faster on an AVX-512 host, whose loops here wait on memory, and GCC
   splits them badly where the hardware has only 32 bytes: the weight gradient's sums
   went through the stack, 4x slower. */
#define FASTDL_DW_BYTES 32

typedef struct {
    Py_ssize_t images, channels, multiplier;   /* N, C_in, C_out / C_in */
    Py_ssize_t height, width, out_h, out_w;
    int kernel, stride_h, stride_w, pad_h, pad_w;
} fastdl_dw_shape;

/* Channels whose weight-gradient sums one pass over the images keeps (in L1: 16 x 26
   vectors, 13 KiB). */
#define FASTDL_DW_BLOCK 16

#define FASTDL_DW_ROUND(value, lanes) (((value) + (lanes) - 1) / (lanes) * (lanes))

/* The low and the high halves of a and b's lanes interleaved (a vector of zeros as b:
   a stride-2 grad_out spread over its columns), and the even and the odd lanes of a,
   then b's (a row split into its column phases): for 8 floats, then 4 doubles. */
#if FASTDL_DW_BYTES == 32 && (defined(__clang__) || __GNUC__ >= 12)
#  define FASTDL_DW_ZIP_LOW(a, b) FASTDL_ZIP_LOW8(a, b)
#  define FASTDL_DW_ZIP_HIGH(a, b) FASTDL_ZIP_HIGH8(a, b)
#  define FASTDL_DW_EVEN(a, b) FASTDL_EVEN8(a, b)
#  define FASTDL_DW_ODD(a, b) FASTDL_ODD8(a, b)
#endif
#define FASTDL_DW_T float
#include "fastdl_depthwise_body.h"
#undef FASTDL_DW_T
#ifdef FASTDL_DW_ZIP_LOW
#  undef FASTDL_DW_ZIP_LOW
#  undef FASTDL_DW_ZIP_HIGH
#  undef FASTDL_DW_EVEN
#  undef FASTDL_DW_ODD
#  define FASTDL_DW_ZIP_LOW(a, b) __builtin_shufflevector(a, b, 0, 4, 1, 5)
#  define FASTDL_DW_ZIP_HIGH(a, b) __builtin_shufflevector(a, b, 2, 6, 3, 7)
#  define FASTDL_DW_EVEN(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6)
#  define FASTDL_DW_ODD(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7)
#endif
#define FASTDL_DW_T double
#include "fastdl_depthwise_body.h"
#undef FASTDL_DW_T

#endif  /* FASTDL_DEPTHWISE_H */
