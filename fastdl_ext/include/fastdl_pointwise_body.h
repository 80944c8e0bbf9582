/* One float type's pointwise tiles and items (fastdl_pointwise.h includes this twice,
   with PW_T float and double). */

typedef PW_T PW(vec) __attribute__((vector_size(64)));
typedef PW_T PW(vecu) __attribute__((vector_size(64), aligned(sizeof(PW_T)), may_alias));
typedef PW_MASK_T PW(mask) __attribute__((vector_size(64)));
#define PW_LANES ((Py_ssize_t)(64 / sizeof(PW_T)))

/* acc[r][j] lane i = sum over k in order of w[k * ROWS + r] * x[k * ldx + j * LANES + i],
   for ``wide`` (a constant where inlined) vectors of positions. */
#define PW_TILE(wide_)                                                              \
    static inline __attribute__((always_inline)) void PW(tile##wide_)(            \
            const PW_T *restrict w, const PW_T *restrict x, Py_ssize_t ldx,         \
            Py_ssize_t depth, PW(vec) acc[FASTDL_PW_ROWS][FASTDL_PW_WIDE]) {        \
        PW(vec) sum[FASTDL_PW_ROWS][wide_];                                        \
        for (int r = 0; r < FASTDL_PW_ROWS; r++)                                    \
            for (int j = 0; j < wide_; j++)                                         \
                sum[r][j] = (PW(vec)){0};                                           \
        for (Py_ssize_t k = 0; k < depth; k++) {                                    \
            PW(vec) v[wide_];                                                       \
            for (int j = 0; j < wide_; j++)                                         \
                v[j] = *(const PW(vecu) *)(x + k * ldx + j * PW_LANES);             \
            for (int r = 0; r < FASTDL_PW_ROWS; r++) {                              \
                PW_T scale = w[k * FASTDL_PW_ROWS + r];                             \
                for (int j = 0; j < wide_; j++)                                     \
                    sum[r][j] += scale * v[j];                                      \
            }                                                                       \
        }                                                                           \
        for (int r = 0; r < FASTDL_PW_ROWS; r++)                                    \
            for (int j = 0; j < wide_; j++)                                         \
                acc[r][j] = sum[r][j];                                              \
    }
PW_TILE(1)
PW_TILE(2)
PW_TILE(3)
#undef PW_TILE

/* out[r, :cols] = act(acc[r] + bias[r] + residual[r, :cols]) for ``rows`` rows, rows
   ``stride`` apart, as the other convs' epilogue computes it (FASTDL_LEAKY's two
   selects as masks): whole vectors stored as they are, a last part of one (``cols``
   below a vector: a spilled run) through a copy. */
static inline void PW(store)(PW(vec) acc[FASTDL_PW_ROWS][FASTDL_PW_WIDE], int rows,
                             int vectors, Py_ssize_t cols, PW_T *out,
                             const PW_T *residual, Py_ssize_t stride, const PW_T *bias,
                             int activate, PW_T slope) {
    for (int r = 0; r < rows; r++) {
        PW_T *to = out + r * stride;
        const PW_T *added = residual != NULL ? residual + r * stride : NULL;
        PW_T add = bias != NULL ? bias[r] : (PW_T)0;
        for (int j = 0; j < vectors; j++) {
            PW(vec) v = acc[r][j];
            if (bias != NULL) v = v + add;
            if (added != NULL) {
                PW(vec) more;
                memcpy(&more, added + j * PW_LANES,
                       sizeof(PW_T) * (size_t)(cols < PW_LANES ? cols : PW_LANES));
                v = v + more;
            }
            if (activate) {
                PW(mask) positive = v > 0;
                v = (PW(vec))((PW(mask))v & positive)
                    + slope * (PW(vec))((PW(mask))v & ~positive);
            }
            if (cols >= PW_LANES)
                *(PW(vecu) *)(to + j * PW_LANES) = v;
            else
                memcpy(to, &v, sizeof(PW_T) * (size_t)cols);
        }
    }
}

/* One pointwise item: rows [m0, m1) and positions [p0, p1) of one image. A last run of
   fewer than a vector of positions is copied, zero-filled, to ``spill`` (K vectors),
   and with ``pack`` every run of columns a tile reads (K rows of up to
   FASTDL_PW_WIDE vectors): x's rows are whole pages apart on a 32x32 map, so the K
   rows of a tile fell into one set of the L1 cache and evicted each other (batch 32,
   24 -> 144 channels at 32x32: 51 GF/s one thread). */
FASTDL_PW_CLONES static void PW(pointwise)(const fastdl_pw_step *s, Py_ssize_t item,
                                           PW_T *spill, int wide) {
    /* items run through the column blocks, then the images, then the row blocks: a
       thread's run of items reads one block of weights for many images */
    Py_ssize_t rest = item / s->col_blocks, image = rest % s->images;
    Py_ssize_t depth = s->in_channels, positions = s->positions;
    Py_ssize_t m0 = rest / s->images * s->row_block;
    Py_ssize_t m1 = m0 + s->row_block < s->out_channels ? m0 + s->row_block : s->out_channels;
    Py_ssize_t p0 = item % s->col_blocks * s->col_block;
    Py_ssize_t p1 = p0 + s->col_block < positions ? p0 + s->col_block : positions;
    const PW_T *x = (const PW_T *)s->x + image * depth * positions;
    Py_ssize_t out_at = image * s->out_channels * positions;
    PW_T *out = (PW_T *)s->out + out_at;
    const PW_T *residual = s->residual != NULL ? (const PW_T *)s->residual + out_at : NULL;
    const PW_T *bias = (const PW_T *)s->bias;
    PW(vec) acc[FASTDL_PW_ROWS][FASTDL_PW_WIDE];
    for (Py_ssize_t p = p0; p < p1;) {
        Py_ssize_t left = p1 - p, cols, ldx = positions;
        const PW_T *columns = x + p;
        int vectors = left / PW_LANES < wide ? (int)(left / PW_LANES) : wide;
        if (vectors == 0) {
            for (Py_ssize_t k = 0; k < depth; k++) {
                memcpy(spill + k * PW_LANES, x + k * positions + p, sizeof(PW_T) * left);
                memset(spill + k * PW_LANES + left, 0, sizeof(PW_T) * (PW_LANES - left));
            }
            columns = spill;
            ldx = PW_LANES;
            vectors = 1;
            cols = left;
        } else {
            cols = vectors * PW_LANES;
            if (s->pack) {
                for (Py_ssize_t k = 0; k < depth; k++)
                    memcpy(spill + k * cols, x + k * positions + p, sizeof(PW_T) * cols);
                columns = spill;
                ldx = cols;
            }
        }
        for (Py_ssize_t m = m0; m < m1; m += FASTDL_PW_ROWS) {
            const PW_T *w = (const PW_T *)s->weight + m * depth;
            if (vectors == 3)
                PW(tile3)(w, columns, ldx, depth, acc);
            else if (vectors == 2)
                PW(tile2)(w, columns, ldx, depth, acc);
            else
                PW(tile1)(w, columns, ldx, depth, acc);
            PW(store)(acc, m1 - m < FASTDL_PW_ROWS ? (int)(m1 - m) : FASTDL_PW_ROWS, vectors,
                      cols,
                      out + m * positions + p,
                      residual != NULL ? residual + m * positions + p : NULL, positions,
                      bias != NULL ? bias + m : NULL, s->activate, (PW_T)s->slope);
        }
        p += cols;
    }
}

/* Depthwise convs of small maps, one plane's output in at most FASTDL_PW_TAP_VECTORS
   vectors: each output vector sums its K * K taps in order, a tap's values picked
   from a window of up to four consecutive input vectors by lane permutes (the
   ``fastdl_pw_taps`` table, built once per step), the lanes outside the image zeroed.
   The depthwise loops copy each plane into a bordered buffer and run half-empty
   vectors per output row: one thread, a 4x4 plane took 61 ns there and 22 ns here, an
   8x8 plane at stride 2 84 and 29 ns; from 4 output vectors on (8x8 at stride 1) the
   loops are faster. */

/* Fill ``taps`` for the geometry ``d``: whether every tap of every output vector
   reads a window of at most four input vectors (else nothing may use it). */
static int PW(build_taps)(const fastdl_dw_shape *d, fastdl_pw_taps *taps) {
    if (!FASTDL_PW_PERMUTES)
        return 0;
    Py_ssize_t out_positions = d->out_h * d->out_w, in_positions = d->height * d->width;
    int count = d->kernel * d->kernel;
    taps->out_vectors = (int)((out_positions + PW_LANES - 1) / PW_LANES);
    taps->in_vectors = (int)((in_positions + PW_LANES - 1) / PW_LANES);
    if (taps->out_vectors > FASTDL_PW_TAP_VECTORS || taps->in_vectors > FASTDL_PW_IN_VECTORS)
        return 0;
    PW_MASK_T *index = (PW_MASK_T *)taps->index, *valid = (PW_MASK_T *)taps->valid;
    for (int v = 0; v < taps->out_vectors; v++)
        for (int t = 0; t < count; t++) {
            int e = v * count + t, first = INT_MAX, last = -1;
            for (int lane = 0; lane < PW_LANES; lane++) {
                Py_ssize_t p = v * PW_LANES + lane;
                Py_ssize_t y = p / d->out_w * d->stride_h - d->pad_h + t / d->kernel;
                Py_ssize_t x = p % d->out_w * d->stride_w - d->pad_w + t % d->kernel;
                index[e * PW_LANES + lane] = 0;
                valid[e * PW_LANES + lane] = 0;
                if (p >= out_positions || y < 0 || y >= d->height || x < 0 || x >= d->width)
                    continue;
                int q = (int)(y * d->width + x);
                first = q / PW_LANES < first ? (int)(q / PW_LANES) : first;
                last = q / PW_LANES > last ? (int)(q / PW_LANES) : last;
                index[e * PW_LANES + lane] = q;
                valid[e * PW_LANES + lane] = -1;
            }
            if (last >= 0 && last - first > 3)
                return 0;
            taps->base[e] = last < 0 ? -1 : first;
            taps->wide[e] = last - first > 1;
            for (int lane = 0; lane < PW_LANES; lane++)
                if (valid[e * PW_LANES + lane])
                    index[e * PW_LANES + lane] -= first * PW_LANES;
        }
    return 1;
}

#if FASTDL_PW_PERMUTES
/* Planes [first, end) of N * C_out through the tap table. */
FASTDL_PW_CLONES static void PW(depthwise_small)(const fastdl_pw_step *s, Py_ssize_t first,
                                                 Py_ssize_t end) {
    const fastdl_dw_shape *d = &s->dw;
    const fastdl_pw_taps *taps = s->taps;
    const PW(mask) *index = (const PW(mask) *)taps->index;
    const PW(mask) *valid = (const PW(mask) *)taps->valid;
    int count = d->kernel * d->kernel;
    Py_ssize_t in_positions = d->height * d->width, out_positions = d->out_h * d->out_w;
    const PW_T *bias = (const PW_T *)s->bias, *weights = (const PW_T *)s->weight;
    PW_T slope = (PW_T)s->slope;
    PW(vec) in[FASTDL_PW_IN_VECTORS + 3];
    for (int v = taps->in_vectors; v < taps->in_vectors + 3; v++)
        in[v] = (PW(vec)){0};
    Py_ssize_t channels = d->channels * d->multiplier;
    Py_ssize_t channel = first % channels, whole = in_positions / PW_LANES;
    Py_ssize_t source = first / channels * d->channels + channel / d->multiplier;
    int fed = (int)(channel % d->multiplier);
    if (whole < taps->in_vectors)   /* the last vector's lanes past the plane stay 0 */
        in[whole] = (PW(vec)){0};
    for (Py_ssize_t plane = first; plane < end; plane++) {
        /* x's plane ``source`` feeds output channels ``channel`` (multiplier apart) */
        const PW_T *from = (const PW_T *)s->x + source * in_positions;
        for (Py_ssize_t v = 0; v < whole; v++)
            in[v] = *(const PW(vecu) *)(from + v * PW_LANES);
        if (whole < taps->in_vectors)
            memcpy(in + whole, from + whole * PW_LANES,
                   sizeof(PW_T) * (in_positions - whole * PW_LANES));
        const PW_T *w = weights + channel * count;
        PW_T *out = (PW_T *)s->out + plane * out_positions;
        const PW_T *residual = s->residual != NULL
            ? (const PW_T *)s->residual + plane * out_positions : NULL;
        for (int v = 0; v < taps->out_vectors; v++) {
            PW(vec) acc = (PW(vec)){0};
            for (int t = 0; t < count; t++) {
                int e = v * count + t, a = taps->base[e];
                if (a < 0)
                    continue;
                PW(mask) at = index[e];
                PW(vec) picked = __builtin_shuffle(in[a], in[a + 1], at);
                if (taps->wide[e]) {
                    PW(mask) high = (at & (PW_MASK_T)(2 * PW_LANES)) != 0;
                    PW(vec) far = __builtin_shuffle(in[a + 2], in[a + 3], at);
                    picked = (PW(vec))(((PW(mask))picked & ~high) | ((PW(mask))far & high));
                }
                acc += w[t] * (PW(vec))((PW(mask))picked & valid[e]);
            }
            PW(vec) sums[FASTDL_PW_ROWS][FASTDL_PW_WIDE];
            Py_ssize_t cols = out_positions - v * PW_LANES;
            sums[0][0] = acc;
            PW(store)(sums, 1, 1, cols < PW_LANES ? cols : PW_LANES, out + v * PW_LANES,
                      residual != NULL ? residual + v * PW_LANES : NULL, 0,
                      bias != NULL ? bias + channel : NULL, s->activate, slope);
        }
        channel++;
        if (++fed == d->multiplier) {
            fed = 0;
            source++;
        }
        if (channel == channels)
            channel = 0;
    }
}
#endif

/* Depthwise convs at stride 1 whose output is the input's size (padding (K - 1) / 2):
   output position p's tap (i, j) reads input position p + (i - pad) * W + (j - pad)
   of the plane laid out flat, so each tap of a vector of outputs is one unaligned load
   from a copy of the plane between zero rows, its lanes whose column falls outside
   the image zeroed (``columns``: those lanes' masks, set up once per step). Taps
   summed in order, as everywhere. One thread, 192 planes of 16x16 and 576 of 8x8: 30 and
   27 us against the depthwise loops' 34 and 36; on 32x32 planes the loops are faster
   (two threads, 144 planes: 44 against 52 us), hence FASTDL_PW_FLAT_VALUES. */
#define PW_FLAT_CAPACITY (FASTDL_PW_FLAT_VALUES + 2 * (2 * FASTDL_PW_FLAT_WIDTH + 2) + 64)

/* The K * K taps of ``group_`` output vectors of the flat loops (K and the group
   constants where inlined; several vectors, so that their sums' multiply-adds do not
   wait for each other): row i, column j of vector n reads ``at + n * LANES + i *
   width + j``, the lanes ``inside[n * K + j]`` leaves out (a column outside the image)
   zeroed. */
#define PW_FLAT_TAPS(kernel_, group_)                                               \
    static inline __attribute__((always_inline)) void PW(flat_taps##kernel_##_##group_)( \
            const PW_T *at, Py_ssize_t width, const PW(mask) *inside, const PW_T *w, \
            PW(vec) acc[FASTDL_PW_ROWS][FASTDL_PW_WIDE]) {                          \
        PW(vec) sum[group_];                                                        \
        for (int n = 0; n < group_; n++)                                            \
            sum[n] = (PW(vec)){0};                                                  \
        for (int i = 0; i < kernel_; i++)                                           \
            for (int j = 0; j < kernel_; j++)                                       \
                for (int n = 0; n < group_; n++) {                                  \
                    PW(vec) value = *(const PW(vecu) *)(at + n * PW_LANES + i * width + j); \
                    sum[n] += w[i * kernel_ + j]                                    \
                        * (PW(vec))((PW(mask))value & inside[n * kernel_ + j]);     \
                }                                                                   \
        for (int n = 0; n < group_; n++)                                            \
            acc[n][0] = sum[n];                                                     \
    }
PW_FLAT_TAPS(3, 1)
PW_FLAT_TAPS(3, 4)
PW_FLAT_TAPS(5, 1)
PW_FLAT_TAPS(5, 4)
#undef PW_FLAT_TAPS

/* ``inside[v * K + j]``: the lanes of output vector v whose tap column j lies inside
   the image (all bits set) and the others (0), lanes past the plane too. */
static void PW(flat_columns)(const fastdl_dw_shape *d, PW_MASK_T *inside) {
    Py_ssize_t out_positions = d->out_h * d->out_w;
    Py_ssize_t vectors = (out_positions + PW_LANES - 1) / PW_LANES;
    for (Py_ssize_t v = 0; v < vectors; v++)
        for (int j = 0; j < d->kernel; j++)
            for (Py_ssize_t lane = 0; lane < PW_LANES; lane++) {
                Py_ssize_t p = v * PW_LANES + lane, x = p % d->out_w + j - d->pad_w;
                inside[(v * d->kernel + j) * PW_LANES + lane] =
                    p < out_positions && x >= 0 && x < d->width ? -1 : 0;
            }
}

FASTDL_PW_CLONES static void PW(depthwise_flat)(const fastdl_pw_step *s, Py_ssize_t first,
                                                Py_ssize_t end) {
    const fastdl_dw_shape *d = &s->dw;
    int kernel = d->kernel, pad = d->pad_h, count = kernel * kernel;
    Py_ssize_t width = d->width, positions = d->height * width;
    Py_ssize_t lead = pad * width + pad;
    Py_ssize_t vectors = (positions + PW_LANES - 1) / PW_LANES;
    PW_T buffer[PW_FLAT_CAPACITY] __attribute__((aligned(64)));
    PW_T *plane = buffer + lead;
    memset(buffer, 0, sizeof(PW_T) * (size_t)(2 * lead + vectors * PW_LANES + PW_LANES));
    const PW(mask) *columns = (const PW(mask) *)s->columns;
    const PW_T *bias = (const PW_T *)s->bias, *weights = (const PW_T *)s->weight;
    Py_ssize_t channels = d->channels * d->multiplier;
    for (Py_ssize_t index = first; index < end; index++) {
        Py_ssize_t channel = index % channels;
        Py_ssize_t source = index / channels * d->channels + channel / d->multiplier;
        memcpy(plane, (const PW_T *)s->x + source * positions, sizeof(PW_T) * positions);
        const PW_T *w = weights + channel * count;
        PW_T *out = (PW_T *)s->out + index * positions;
        const PW_T *residual = s->residual != NULL
            ? (const PW_T *)s->residual + index * positions : NULL;
        PW(vec) sums[FASTDL_PW_ROWS][FASTDL_PW_WIDE];
        for (Py_ssize_t v = 0; v < vectors;) {
            const PW_T *at = plane + v * PW_LANES - lead;
            const PW(mask) *inside = columns + v * kernel;
            int group = vectors - v >= 4 ? 4 : 1;
            if (kernel == 3 && group == 4)
                PW(flat_taps3_4)(at, width, inside, w, sums);
            else if (kernel == 3)
                PW(flat_taps3_1)(at, width, inside, w, sums);
            else if (group == 4)
                PW(flat_taps5_4)(at, width, inside, w, sums);
            else
                PW(flat_taps5_1)(at, width, inside, w, sums);
            for (int n = 0; n < group; n++, v++) {
                Py_ssize_t cols = positions - v * PW_LANES;
                sums[0][0] = sums[n][0];
                PW(store)(sums, 1, 1, cols < PW_LANES ? cols : PW_LANES, out + v * PW_LANES,
                          residual != NULL ? residual + v * PW_LANES : NULL, 0,
                          bias != NULL ? bias + channel : NULL, s->activate, (PW_T)s->slope);
            }
        }
    }
}
#undef PW_FLAT_CAPACITY

/* Depthwise 3x3 convs at stride 1 and padding 1 whose rows are whole vectors (32x32
   float maps: two a row), read where they lie: each output row loads the three input
   rows it reads (zero vectors above and below the image), and a tap column's values
   are a row's vectors shifted by one lane, the value across the vector boundary (or a
   zero past the image's edge) shifted in. No copy of the plane and no masks; each
   output sums its taps in order, the padding's zeros included, as the other loops do.
   The depthwise loops copy each plane into a bordered buffer and write their sums
   through a second pass, the flat loops mask every tap: one thread, 144 planes of
   32x32 took 77 us there and 58 here, 192 of 16x16 30.5 in the flat loops and 19.5
   here. */
#define PW_ROWS_PLANE(vectors_)                                                     \
    static inline __attribute__((always_inline)) void PW(rows_plane##vectors_)(    \
            const PW_T *x, Py_ssize_t height, const PW_T *w, PW_T *out,            \
            const PW_T *residual, const PW_T *bias, int activate, PW_T slope) {    \
        const Py_ssize_t width = vectors_ * PW_LANES;                               \
        const PW(mask) iota = PW_IOTA;                                              \
        /* shuffle(a, b) lanes: a's last then b's first L - 1; a's last L - 1 then  \
           b's first */                                                             \
        const PW(mask) left = iota + (PW_MASK_T)(PW_LANES - 1), right = iota + 1;   \
        for (Py_ssize_t y = 0; y < height; y++) {                                   \
            PW(vec) acc[vectors_];                                                  \
            for (int v = 0; v < vectors_; v++)                                      \
                acc[v] = (PW(vec)){0};                                              \
            for (int i = 0; i < 3; i++) {                                           \
                Py_ssize_t r = y + i - 1;                                           \
                PW(vec) row[vectors_ + 2];                                          \
                row[0] = row[vectors_ + 1] = (PW(vec)){0};                          \
                for (int v = 0; v < vectors_; v++)                                  \
                    row[v + 1] = r < 0 || r >= height ? (PW(vec)){0}                \
                        : (PW(vec))*(const PW(vecu) *)(x + r * width + v * PW_LANES); \
                for (int v = 0; v < vectors_; v++) {                                \
                    acc[v] += w[3 * i] * __builtin_shuffle(row[v], row[v + 1], left); \
                    acc[v] += w[3 * i + 1] * row[v + 1];                            \
                    acc[v] += w[3 * i + 2] * __builtin_shuffle(row[v + 1], row[v + 2], \
                                                               right);              \
                }                                                                   \
            }                                                                       \
            PW(vec) sums[FASTDL_PW_ROWS][FASTDL_PW_WIDE];                           \
            for (int v = 0; v < vectors_; v++) {                                    \
                sums[0][0] = acc[v];                                                \
                PW(store)(sums, 1, 1, PW_LANES, out + y * width + v * PW_LANES,     \
                          residual != NULL ? residual + y * width + v * PW_LANES : NULL, \
                          0, bias, activate, slope);                                \
            }                                                                       \
        }                                                                           \
    }

/* The row loops at stride 2 (32 -> 16 float maps: an input row of two vectors, an
   output row of one): a tap row's centre column is the input row's even lanes, its
   right column the odd lanes, its left column the odd lanes moved up one, the odd
   lane before (or a zero at the image's edge) shifted in; rows past the image are
   zero vectors. Taps in order, as everywhere (one thread, 144 planes of 32x32: 31 us
   in the depthwise loops). */
#define PW_ROWS_HALVED(vectors_)                                                    \
    static inline __attribute__((always_inline)) void PW(rows_halved##vectors_)(   \
            const PW_T *x, Py_ssize_t height, Py_ssize_t out_h, const PW_T *w,      \
            PW_T *out, const PW_T *residual, const PW_T *bias, int activate,        \
            PW_T slope) {                                                           \
        const Py_ssize_t width = 2 * vectors_ * PW_LANES;                           \
        const PW(mask) iota = PW_IOTA;                                              \
        const PW(mask) even = iota + iota, odd = iota + iota + 1;                   \
        const PW(mask) left = iota + (PW_MASK_T)(PW_LANES - 1);                     \
        for (Py_ssize_t y = 0; y < out_h; y++) {                                    \
            PW(vec) acc[vectors_];                                                  \
            for (int v = 0; v < vectors_; v++)                                      \
                acc[v] = (PW(vec)){0};                                              \
            for (int i = 0; i < 3; i++) {                                           \
                Py_ssize_t r = 2 * y + i - 1;                                       \
                int inside = r >= 0 && r < height;                                  \
                PW(vec) before = (PW(vec)){0};                                      \
                for (int v = 0; v < vectors_; v++) {                                \
                    PW(vec) a = (PW(vec)){0}, b = (PW(vec)){0};                     \
                    if (inside) {                                                   \
                        a = *(const PW(vecu) *)(x + r * width + 2 * v * PW_LANES);  \
                        b = *(const PW(vecu) *)(x + r * width + (2 * v + 1) * PW_LANES); \
                    }                                                               \
                    PW(vec) centre = __builtin_shuffle(a, b, even);                 \
                    PW(vec) right = __builtin_shuffle(a, b, odd);                   \
                    acc[v] += w[3 * i] * __builtin_shuffle(before, right, left);    \
                    acc[v] += w[3 * i + 1] * centre;                                \
                    acc[v] += w[3 * i + 2] * right;                                 \
                    before = right;                                                 \
                }                                                                   \
            }                                                                       \
            PW(vec) sums[FASTDL_PW_ROWS][FASTDL_PW_WIDE];                           \
            for (int v = 0; v < vectors_; v++) {                                    \
                sums[0][0] = acc[v];                                                \
                PW(store)(sums, 1, 1, PW_LANES, out + y * (width / 2) + v * PW_LANES, \
                          residual != NULL ? residual + y * (width / 2) + v * PW_LANES \
                                           : NULL,                                  \
                          0, bias, activate, slope);                                \
            }                                                                       \
        }                                                                           \
    }
#if FASTDL_PW_PERMUTES
PW_ROWS_PLANE(1)
PW_ROWS_PLANE(2)
PW_ROWS_PLANE(3)
PW_ROWS_PLANE(4)
PW_ROWS_HALVED(1)

/* Planes [first, end) of N * C_out through the row loops (``s->rows`` vectors a row). */
FASTDL_PW_CLONES static void PW(depthwise_rows)(const fastdl_pw_step *s, Py_ssize_t first,
                                                Py_ssize_t end) {
    const fastdl_dw_shape *d = &s->dw;
    Py_ssize_t positions = d->height * d->width, out_positions = d->out_h * d->out_w;
    Py_ssize_t channels = d->channels * d->multiplier;
    const PW_T *bias = (const PW_T *)s->bias, *weights = (const PW_T *)s->weight;
    PW_T slope = (PW_T)s->slope;
    for (Py_ssize_t index = first; index < end; index++) {
        Py_ssize_t channel = index % channels;
        const PW_T *x = (const PW_T *)s->x
            + (index / channels * d->channels + channel / d->multiplier) * positions;
        const PW_T *w = weights + channel * 9;
        PW_T *out = (PW_T *)s->out + index * out_positions;
        const PW_T *residual = s->residual != NULL
            ? (const PW_T *)s->residual + index * out_positions : NULL;
        const PW_T *add = bias != NULL ? bias + channel : NULL;
        if (d->stride_h == 2)
            PW(rows_halved1)(x, d->height, d->out_h, w, out, residual, add, s->activate,
                             slope);
        else if (s->rows == 1)
            PW(rows_plane1)(x, d->height, w, out, residual, add, s->activate, slope);
        else if (s->rows == 2)
            PW(rows_plane2)(x, d->height, w, out, residual, add, s->activate, slope);
        else if (s->rows == 3)
            PW(rows_plane3)(x, d->height, w, out, residual, add, s->activate, slope);
        else
            PW(rows_plane4)(x, d->height, w, out, residual, add, s->activate, slope);
    }
}
#endif
#undef PW_ROWS_PLANE
#undef PW_ROWS_HALVED

#if FASTDL_PW_PERMUTES
/* The flat loops' 3x3 convs of 4x4 and 8x8 planes (one and four float vectors) with
   the plane in registers: a tap's values are the plane's vectors shifted by its
   offset (i - 1) * width + j - 1 across the vector boundaries, zeros past the plane,
   the lanes whose column falls outside the image masked as the flat loops mask them;
   each output sums its taps in order, the same products as there. The flat loops
   copy each plane and read it back by unaligned loads straddling the copy's stores,
   the tap tables pick each tap's lanes through a table: one thread, 384 planes of 8x8
   took 18 us there and 11 here. */
#define PW_PLANE_IN_REGISTERS(size_)                                                \
    FASTDL_PW_CLONES static void PW(depthwise_in_registers##size_)(                 \
            const fastdl_pw_step *s, Py_ssize_t first, Py_ssize_t end) {            \
        enum { POSITIONS = size_ * size_, LANES = 64 / sizeof(PW_T),                \
               VECTORS = (POSITIONS + LANES - 1) / LANES };                         \
        const fastdl_dw_shape *d = &s->dw;                                          \
        const PW(mask) *columns = (const PW(mask) *)s->columns;                     \
        const PW(mask) iota = PW_IOTA;                                              \
        const PW_T *bias = (const PW_T *)s->bias, *weights = (const PW_T *)s->weight; \
        Py_ssize_t channels = d->channels * d->multiplier;                          \
        for (Py_ssize_t index = first; index < end; index++) {                      \
            Py_ssize_t channel = index % channels;                                  \
            const PW_T *x = (const PW_T *)s->x                                      \
                + (index / channels * d->channels + channel / d->multiplier) * POSITIONS; \
            const PW_T *w = weights + channel * 9;                                  \
            PW_T *out = (PW_T *)s->out + index * POSITIONS;                         \
            const PW_T *residual = s->residual != NULL                              \
                ? (const PW_T *)s->residual + index * POSITIONS : NULL;             \
            /* two zero vectors either side: a shift reaches size_ + 1 values away */ \
            PW(vec) plane[VECTORS + 4];                                             \
            plane[0] = plane[1] = plane[VECTORS + 2] = plane[VECTORS + 3] = (PW(vec)){0}; \
            _Pragma("GCC unroll 8")                                                 \
            for (int v = 0; v < VECTORS; v++)                                       \
                plane[v + 2] = *(const PW(vecu) *)(x + v * LANES);                  \
            PW(vec) sums[FASTDL_PW_ROWS][FASTDL_PW_WIDE];                           \
            _Pragma("GCC unroll 8")                                                 \
            for (int v = 0; v < VECTORS; v++) {                                     \
                PW(vec) acc = (PW(vec)){0};                                         \
                _Pragma("GCC unroll 3")                                             \
                for (int i = 0; i < 3; i++)                                         \
                    _Pragma("GCC unroll 3")                                         \
                    for (int j = 0; j < 3; j++) {                                   \
                        int q = (v + 2) * LANES + (i - 1) * size_ + (j - 1);        \
                        PW(vec) value = __builtin_shuffle(                          \
                            plane[q / LANES], plane[q / LANES + 1],                 \
                            iota + (PW_MASK_T)(q % LANES));                         \
                        acc += w[3 * i + j]                                         \
                            * (PW(vec))((PW(mask))value & columns[v * 3 + j]);      \
                    }                                                               \
                sums[0][0] = acc;                                                   \
                PW(store)(sums, 1, 1, LANES, out + v * LANES,                       \
                          residual != NULL ? residual + v * LANES : NULL, 0,        \
                          bias != NULL ? bias + channel : NULL, s->activate,        \
                          (PW_T)s->slope);                                          \
            }                                                                       \
        }                                                                           \
    }
PW_PLANE_IN_REGISTERS(4)
PW_PLANE_IN_REGISTERS(8)
#undef PW_PLANE_IN_REGISTERS
#endif

/* Planes [first, end) of N * C_out of the depthwise or mean step ``s``. */
static void PW(planes)(const fastdl_pw_step *s, Py_ssize_t first, Py_ssize_t end,
                       char *scratch) {
    if (s->kind == FASTDL_PW_MEAN) {
        for (Py_ssize_t plane = first; plane < end; plane++)
            ((PW_T *)s->out)[plane] = (PW_T)PW_MEAN((const PW_T *)s->x + plane * s->positions,
                                                    s->positions);
        return;
    }
    if (s->columns != NULL) {
#if FASTDL_PW_PERMUTES
        if (s->dw.kernel == 3 && s->dw.height == 8 && s->dw.width == 8) {
            PW(depthwise_in_registers8)(s, first, end);
            return;
        }
        if (s->dw.kernel == 3 && s->dw.height == 4 && s->dw.width == 4) {
            PW(depthwise_in_registers4)(s, first, end);
            return;
        }
#endif
        PW(depthwise_flat)(s, first, end);
        return;
    }
#if FASTDL_PW_PERMUTES
    if (s->rows) {
        PW(depthwise_rows)(s, first, end);
        return;
    }
    if (s->taps != NULL) {
        PW(depthwise_small)(s, first, end);
        return;
    }
#endif
    PW_DEPTHWISE(&s->dw, (const PW_T *)s->x, (const PW_T *)s->weight, (const PW_T *)s->bias,
                 (const PW_T *)s->residual, s->activate, (PW_T)s->slope, (PW_T *)s->out,
                 first, end, (PW_T *)(scratch + s->scratch_offset));
}

/* Item ``item`` of step ``s`` in this thread's ``scratch`` (and of the depthwise step
   fused to it, its planes of the item's rows). */
static void PW(item)(const fastdl_pw_step *s, Py_ssize_t item, char *scratch, int wide) {
    if (s->kind != FASTDL_PW_POINTWISE) {
        PW(planes)(s, s->planes * item / s->items, s->planes * (item + 1) / s->items, scratch);
        return;
    }
    PW(pointwise)(s, item, (PW_T *)(scratch + s->scratch_offset), wide);
    if (s->then != NULL) {
        Py_ssize_t image = item % s->images, block = item / s->images;   /* one column block */
        Py_ssize_t first = block * s->row_block;
        Py_ssize_t end = first + s->row_block < s->out_channels ? first + s->row_block
                                                                : s->out_channels;
        PW(planes)(s->then, image * s->out_channels + first, image * s->out_channels + end,
                   scratch);
    }
}

/* Every step on image ``image`` alone, one after another. */
static void PW(image)(const fastdl_pw_step *steps, int count, Py_ssize_t image,
                      char *scratch, int wide) {
    for (int k = 0; k < count; k++) {
        const fastdl_pw_step *s = &steps[k];
        if (s->kind == FASTDL_PW_POINTWISE) {
            for (Py_ssize_t block = 0; block < s->row_blocks; block++)
                for (Py_ssize_t column = 0; column < s->col_blocks; column++)
                    PW(pointwise)(s, (block * s->images + image) * s->col_blocks + column,
                                  (PW_T *)(scratch + s->scratch_offset), wide);
        } else {
            Py_ssize_t per_image = s->planes / s->images;
            PW(planes)(s, image * per_image, (image + 1) * per_image, scratch);
        }
    }
}

#undef PW_LANES
