/* One float type's pointwise tiles and items (fastdl_pointwise.h includes this twice,
   with PW_T float and double). */

typedef PW_T PW(vec) __attribute__((vector_size(64)));
typedef PW_T PW(vecu) __attribute__((vector_size(64), aligned(sizeof(PW_T)), may_alias));
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
   ``stride`` apart, as the other convs' epilogue computes it. */
static inline void PW(store)(PW(vec) acc[FASTDL_PW_ROWS][FASTDL_PW_WIDE], int rows,
                             Py_ssize_t cols, PW_T *out, const PW_T *residual,
                             Py_ssize_t stride, const PW_T *bias, int activate,
                             PW_T slope) {
    PW_T values[FASTDL_PW_WIDE * PW_LANES];
    for (int r = 0; r < rows; r++) {
        memcpy(values, acc[r], sizeof(PW_T) * (size_t)cols);
        PW_T *to = out + r * stride;
        const PW_T *added = residual != NULL ? residual + r * stride : NULL;
        PW_T add = bias != NULL ? bias[r] : (PW_T)0;
        for (Py_ssize_t i = 0; i < cols; i++) {
            PW_T v = values[i];
            if (bias != NULL) v = v + add;
            if (added != NULL) v = v + added[i];
            to[i] = activate ? FASTDL_LEAKY(v, slope) : v;
        }
    }
}

/* One pointwise item: rows [m0, m1) and positions [p0, p1) of one image. A last run of
   fewer than a vector of positions is copied, zero-filled, to ``spill`` (K vectors). */
FASTDL_PW_CLONES static void PW(pointwise)(const fastdl_pw_step *s, Py_ssize_t item,
                                           PW_T *spill, int wide) {
    Py_ssize_t per_image = s->row_blocks * s->col_blocks;
    Py_ssize_t image = item / per_image, rest = item % per_image;
    Py_ssize_t depth = s->in_channels, positions = s->positions;
    Py_ssize_t m0 = rest / s->col_blocks * s->row_block;
    Py_ssize_t m1 = m0 + s->row_block < s->out_channels ? m0 + s->row_block : s->out_channels;
    Py_ssize_t p0 = rest % s->col_blocks * s->col_block;
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
        }
        for (Py_ssize_t m = m0; m < m1; m += FASTDL_PW_ROWS) {
            const PW_T *w = (const PW_T *)s->weight + m * depth;
            if (vectors == 3)
                PW(tile3)(w, columns, ldx, depth, acc);
            else if (vectors == 2)
                PW(tile2)(w, columns, ldx, depth, acc);
            else
                PW(tile1)(w, columns, ldx, depth, acc);
            PW(store)(acc, m1 - m < FASTDL_PW_ROWS ? (int)(m1 - m) : FASTDL_PW_ROWS, cols,
                      out + m * positions + p,
                      residual != NULL ? residual + m * positions + p : NULL, positions,
                      bias != NULL ? bias + m : NULL, s->activate, (PW_T)s->slope);
        }
        p += cols;
    }
}

/* Item ``item`` of step ``s`` in this thread's ``scratch``. */
static void PW(item)(const fastdl_pw_step *s, Py_ssize_t item, char *scratch, int wide) {
    if (s->kind == FASTDL_PW_POINTWISE) {
        PW(pointwise)(s, item, (PW_T *)(scratch + s->scratch_offset), wide);
        return;
    }
    PW_DEPTHWISE(&s->dw, (const PW_T *)s->x, (const PW_T *)s->weight, (const PW_T *)s->bias,
                (const PW_T *)s->residual, s->activate, (PW_T)s->slope, (PW_T *)s->out,
                s->planes * item / s->items, s->planes * (item + 1) / s->items,
                (PW_T *)(scratch + s->scratch_offset));
}
#undef PW_LANES
