# cython: language_level=3
"""The register kernel of a dense layer on packed weights, shared by the standalone
layer (``dense.pyx``) and the dense layers a chain of convs runs after its convs in
the same parallel region (``direct.Chain.set_dense``)."""

cdef extern from "fastdl_dense.h":
    enum:
        PANEL_ROWS "FASTDL_DENSE_ROWS"      # rows of x per register block
        PANEL "FASTDL_DENSE_PANEL"          # output features per packed panel
    void _dense_block_float "fastdl_dense_block_float"(
        const float* x, Py_ssize_t x_stride, int rows, Py_ssize_t inputs, const float* panel,
        const float* bias, float* out, Py_ssize_t out_stride, int features, int activate,
        float slope) noexcept nogil


cdef inline void packed_items(const float* x, const float* panels, const float* bias,
                              float* out, int rows, int features, int inputs, bint activate,
                              float slope, Py_ssize_t first, Py_ssize_t end) noexcept nogil:
    """Register blocks [first, end), numbered panel by panel (a panel is read from
    cache for all its row blocks)."""
    cdef Py_ssize_t row_blocks = (rows + PANEL_ROWS - 1) // PANEL_ROWS, item, panel, block
    for item in range(first, end):
        panel = item // row_blocks
        block = item - panel * row_blocks
        _dense_block_float(x + block * PANEL_ROWS * inputs, inputs,
                           min(<int>PANEL_ROWS, rows - <int>block * PANEL_ROWS), inputs,
                           panels + panel * inputs * PANEL,
                           NULL if bias == NULL else bias + panel * PANEL,
                           out + block * PANEL_ROWS * features + panel * PANEL, features,
                           min(<int>PANEL, features - <int>panel * PANEL), activate, slope)
