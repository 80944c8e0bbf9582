"""The compiled loops behind ``fastdl.kernels.pool`` (see its design notes).

Plain-Python kernels over planes ``(N*C, H, W)``, bound through ``jit``.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange

# planes per parallel task: scratch rows are allocated once per task
_PLANES_PER_TASK = 8


def _max_pool2d_plane(x, h_starts, h_stops, w_starts, w_stops, row_best, row_argmax, out,
                      indices):
    # Separable: the max of a window is the max over its rows of each row's
    # max. Pass 1 takes, for every input row, the max of each column window;
    # pass 2 the max of those over each row window, with the inner loop over
    # independent outputs (one loop per window would be one long compare-select
    # dependency chain). Scanning rows, then columns, in order
    # with a strict '>' keeps torch's first-maximum rule.
    height, width = x.shape
    out_h, out_w = out.shape
    for h in range(height):
        row = x[h]
        for ow in range(out_w):
            best = row[w_starts[ow]]
            best_w = w_starts[ow]
            for w in range(w_starts[ow] + 1, w_stops[ow]):
                value = row[w]
                # NaN wins, as in torch
                take = (value > best) | (value != value)
                best = value if take else best
                best_w = w if take else best_w
            row_best[h, ow] = best
            row_argmax[h, ow] = best_w
    for oh in range(out_h):
        out_row = out[oh]
        index_row = indices[oh]
        first = h_starts[oh]
        for ow in range(out_w):
            out_row[ow] = row_best[first, ow]
            index_row[ow] = first * width + row_argmax[first, ow]
        for h in range(first + 1, h_stops[oh]):
            for ow in range(out_w):
                value = row_best[h, ow]
                take = (value > out_row[ow]) | (value != value)
                out_row[ow] = value if take else out_row[ow]
                index_row[ow] = h * width + row_argmax[h, ow] if take else index_row[ow]


_max_pool2d_plane_kernel = jit(_max_pool2d_plane)


def _max_pool2d_forward(x, h_starts, h_stops, w_starts, w_stops, out, indices):
    planes, height = x.shape[0], x.shape[1]
    out_w = out.shape[2]
    for task in prange((planes + _PLANES_PER_TASK - 1) // _PLANES_PER_TASK):
        row_best = np.empty((height, out_w), dtype=x.dtype)
        row_argmax = np.empty((height, out_w), dtype=np.int64)
        for plane in range(task * _PLANES_PER_TASK,
                           min((task + 1) * _PLANES_PER_TASK, planes)):
            _max_pool2d_plane_kernel(x[plane], h_starts, h_stops, w_starts, w_stops, row_best,
                                     row_argmax, out[plane], indices[plane])


def _max_pool2d_forward_2x2(x, out, indices):
    # The common 2x2 / stride 2 / no padding case with every window full:
    # straight-line compares that LLVM turns into selects and vectorises (a
    # window loop with run-time bounds is several times slower here).
    planes, width = x.shape[0], x.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    for plane in prange(planes):
        for oh in range(out_h):
            top, bottom = 2 * oh, 2 * oh + 1
            for ow in range(out_w):
                left, right = 2 * ow, 2 * ow + 1
                best = x[plane, top, left]
                best_index = top * width + left
                value = x[plane, top, right]
                if value > best or value != value:
                    best = value
                    best_index = top * width + right
                value = x[plane, bottom, left]
                if value > best or value != value:
                    best = value
                    best_index = bottom * width + left
                value = x[plane, bottom, right]
                if value > best or value != value:
                    best = value
                    best_index = bottom * width + right
                out[plane, oh, ow] = best
                indices[plane, oh, ow] = best_index


def _max_pool2d_backward(grad_out, indices, grad_x, out_of_range):
    # grad_x is (planes, H * W): the flat index needs no division. Each plane
    # is zeroed right before its scatter, while it is in cache. Indices not
    # made by the forward are never followed out of the plane: they are
    # counted in out_of_range (a well-predicted branch, no measurable cost).
    planes, out_h, out_w = grad_out.shape
    plane_size = grad_x.shape[1]
    for plane in prange(planes):
        grad_x[plane, :] = 0
        for oh in range(out_h):
            for ow in range(out_w):
                index = indices[plane, oh, ow]
                if 0 <= index < plane_size:
                    grad_x[plane, index] += grad_out[plane, oh, ow]
                else:
                    out_of_range[plane] += 1


max_pool2d_forward_kernel = jit(_max_pool2d_forward, parallel=True)
max_pool2d_forward_2x2_kernel = jit(_max_pool2d_forward_2x2, parallel=True)
# Serial twins for small inputs (batch-1 inference): waking the thread pool costs
# tens of µs, more than pooling a LeNet-sized map.
_max_pool2d_forward_serial = jit(_max_pool2d_forward)
_max_pool2d_forward_2x2_serial = jit(_max_pool2d_forward_2x2)
max_pool2d_backward_kernel = jit(_max_pool2d_backward, parallel=True)


def _window_mean_plane(x, h_starts, h_stops, h_counts, w_starts, w_stops, w_counts,
                       row_sums, window_sums, out):
    # Separable, as max pooling: column-window sums of every input row
    # (float64), then row-window sums of those, divided by the window count.
    out_h, out_w = out.shape
    for h in range(x.shape[0]):
        row = x[h]
        for ow in range(out_w):
            # a slice indexed from 0: no wraparound checks, so the sum vectorises
            window = row[w_starts[ow]:w_stops[ow]]
            total = np.float64(0.0)
            for i in range(window.shape[0]):
                total += window[i]
            row_sums[h, ow] = total
    for oh in range(out_h):
        window_sums[:] = 0.0
        for h in range(h_starts[oh], h_stops[oh]):
            for ow in range(out_w):
                window_sums[ow] += row_sums[h, ow]
        for ow in range(out_w):
            out[oh, ow] = window_sums[ow] / (h_counts[oh] * w_counts[ow])


def _window_mean_plane_backward(grad_out, h_starts, h_stops, h_counts, w_starts, w_stops,
                                w_counts, row_grads, grad_x):
    # The transpose of the forward: each output's share goes to its row
    # window (per output column), then from there to its column window.
    out_h, out_w = grad_out.shape
    row_grads[:] = 0.0
    for oh in range(out_h):
        for h in range(h_starts[oh], h_stops[oh]):
            for ow in range(out_w):
                row_grads[h, ow] += grad_out[oh, ow] / (h_counts[oh] * w_counts[ow])
    grad_x[:] = 0
    for h in range(grad_x.shape[0]):
        grad_x_row = grad_x[h]
        for ow in range(out_w):
            for w in range(w_starts[ow], w_stops[ow]):
                grad_x_row[w] += row_grads[h, ow]


# reassociation vectorises the float64 window sums (rounding-level change only;
# the order is fixed at compile time, so results do not depend on threads)
_window_mean_plane_kernel = jit(_window_mean_plane, fastmath={"reassoc"})
_window_mean_plane_backward_kernel = jit(_window_mean_plane_backward)


def _window_mean_forward(x, h_starts, h_stops, h_counts, w_starts, w_stops, w_counts, out):
    planes, height = x.shape[0], x.shape[1]
    out_w = out.shape[2]
    for task in prange((planes + _PLANES_PER_TASK - 1) // _PLANES_PER_TASK):
        row_sums = np.empty((height, out_w))
        window_sums = np.empty(out_w)
        for plane in range(task * _PLANES_PER_TASK,
                           min((task + 1) * _PLANES_PER_TASK, planes)):
            _window_mean_plane_kernel(x[plane], h_starts, h_stops, h_counts, w_starts, w_stops,
                                      w_counts, row_sums, window_sums, out[plane])


def _window_mean_backward(grad_out, h_starts, h_stops, h_counts, w_starts, w_stops, w_counts,
                          grad_x):
    planes, out_w = grad_out.shape[0], grad_out.shape[2]
    height = grad_x.shape[1]
    for task in prange((planes + _PLANES_PER_TASK - 1) // _PLANES_PER_TASK):
        row_grads = np.empty((height, out_w))
        for plane in range(task * _PLANES_PER_TASK,
                           min((task + 1) * _PLANES_PER_TASK, planes)):
            _window_mean_plane_backward_kernel(grad_out[plane], h_starts, h_stops, h_counts,
                                               w_starts, w_stops, w_counts, row_grads,
                                               grad_x[plane])


def _avg_pool2d_forward_2x2(x, out):
    # 2x2 windows tiling the input (as max pooling's fast path)
    for plane in prange(x.shape[0]):
        for oh in range(out.shape[1]):
            top = x[plane, 2 * oh]
            bottom = x[plane, 2 * oh + 1]
            out_row = out[plane, oh]
            for ow in range(out.shape[2]):
                total = (np.float64(top[2 * ow]) + top[2 * ow + 1]
                         + bottom[2 * ow] + bottom[2 * ow + 1])
                out_row[ow] = 0.25 * total


def _avg_pool2d_backward_2x2(grad_out, grad_x):
    out_h, out_w = grad_out.shape[1], grad_out.shape[2]
    for plane in prange(grad_x.shape[0]):
        # rows and columns past the last full window (odd H or W) get nothing
        grad_x[plane, 2 * out_h:, :] = 0
        grad_x[plane, :, 2 * out_w:] = 0
        for oh in range(out_h):
            grad_row = grad_out[plane, oh]
            for h in range(2 * oh, 2 * oh + 2):
                grad_x_row = grad_x[plane, h]
                for w in range(2 * out_w):
                    grad_x_row[w] = 0.25 * grad_row[w // 2]


avg_pool2d_forward_2x2_kernel = jit(_avg_pool2d_forward_2x2, parallel=True)
avg_pool2d_backward_2x2_kernel = jit(_avg_pool2d_backward_2x2, parallel=True)
window_mean_forward_kernel = jit(_window_mean_forward, parallel=True)
window_mean_backward_kernel = jit(_window_mean_backward, parallel=True)


def _global_mean_backward(grad_out, grad_x):
    for plane in prange(grad_x.shape[0]):
        grad_x[plane, :] = grad_out[plane] / grad_x.shape[1]


global_mean_backward_kernel = jit(_global_mean_backward, parallel=True)
