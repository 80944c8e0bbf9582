"""The compiled loops behind ``fastdl.kernels.norm`` (see its design notes).

Plain-Python kernels on the ``(A, K, S, B)`` view, bound through ``jit``.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange

# elements per statistics block: 16 KiB of float32, resident in L1 for the second pass
_BLOCK = 4096
# fixed number of chunks for the parameter-gradient sums (independent of threads)
_GRAD_CHUNKS = 64


# ---------------------------------------------------------------------------
# Numba kernels on the (A, K, S, B) layout
# ---------------------------------------------------------------------------

def _block_moments(block):
    """Mean and sum of squared deviations of a 1-D ``block`` (two passes, in cache)."""
    # loops index from 0 over slices throughout this module: Numba then knows
    # the index is non-negative, drops its wraparound check, and LLVM vectorises
    # (accumulators are np.float64: uncompiled, under NEP 50, a Python float
    # plus a float32 is float32)
    total = np.float64(0.0)
    for i in range(block.shape[0]):
        total += block[i]
    mean = total / block.shape[0]
    squares = np.float64(0.0)
    for i in range(block.shape[0]):
        deviation = block[i] - mean
        squares += deviation * deviation
    return mean, squares


# reassociation lets LLVM vectorise the float64 sums; the order is fixed at
# compile time, so results still do not depend on the thread count
_block_moments_kernel = jit(_block_moments, fastmath={"reassoc", "contract"})


def _moments_of(x, k):
    """Mean and biased variance of ``x[:, k]`` (all ``a`` and all of each run)."""
    count, mean, squares = 0, 0.0, 0.0
    for a in range(x.shape[0]):
        run = x[a, k]
        for start in range(0, run.shape[0], _BLOCK):
            block = run[start:start + _BLOCK]
            block_mean, block_squares = _block_moments_kernel(block)
            # Chan et al.'s pairwise update of (count, mean, M2)
            block_count = block.shape[0]
            merged = count + block_count
            delta = block_mean - mean
            mean += delta * block_count / merged
            squares += block_squares + delta * delta * count * block_count / merged
            count = merged
    return mean, squares / count


_moments_of_kernel = jit(_moments_of)


def _normalize_runs(x, k, n_sub, param_base, weight_along_run, weight, bias, shift, scale,
                    y, x_hat):
    """``x_hat = (x - shift) * scale``, ``y = x_hat * w + b`` over ``x[:, k]``."""
    n_inner = x.shape[2] // n_sub
    for a in range(x.shape[0]):
        for s in range(n_sub):
            x_run = x[a, k, s * n_inner:(s + 1) * n_inner]
            x_hat_run = x_hat[a, k, s * n_inner:(s + 1) * n_inner]
            y_run = y[a, k, s * n_inner:(s + 1) * n_inner]
            if weight_along_run:
                for i in range(n_inner):
                    normalized = (x_run[i] - shift) * scale
                    x_hat_run[i] = normalized
                    y_run[i] = normalized * weight[i] + bias[i]
            else:
                w = weight[param_base + s]
                b = bias[param_base + s]
                for i in range(n_inner):
                    normalized = (x_run[i] - shift) * scale
                    x_hat_run[i] = normalized
                    y_run[i] = normalized * w + b


_normalize_runs_kernel = jit(_normalize_runs, fastmath={"contract"})


def _normalize_forward(x, weight, bias, n_params, n_sub, weight_along_run, eps,
                       use_input_stats, mean, var, inv_std, y, x_hat):
    # x, y, x_hat: (A, K, S * B); weight, bias: (P * S,) in x's dtype, or
    # (B,) when weight_along_run (layer norm: P = S = 1); mean,
    # var, inv_std: (K,) float64, outputs when use_input_stats (var is then
    # the biased variance), else mean and inv_std are inputs
    for k in prange(x.shape[1]):
        if use_input_stats:
            mean_k, var_k = _moments_of_kernel(x, k)
            mean[k] = mean_k
            var[k] = var_k
            inv_std[k] = 1.0 / np.sqrt(var_k + eps)
        # the elementwise pass runs in x's dtype (as torch): float32 SIMD is
        # twice as wide, and the statistics are already exact
        shift_scale = np.empty(2, dtype=x.dtype)
        shift_scale[0] = mean[k]
        shift_scale[1] = inv_std[k]
        _normalize_runs_kernel(x, k, n_sub, (k % n_params) * n_sub, weight_along_run,
                               weight, bias, shift_scale[0], shift_scale[1], y, x_hat)


normalize_forward_kernel = jit(_normalize_forward, parallel=True)


def _reduce_runs(grad_out, x_hat, k, n_sub, param_base, weight_along_run, weight,
                 grad_weight_part, grad_bias_part):
    """Per-``k`` sums of ``w·g`` and ``w·g·x_hat``; per-parameter sums into the parts."""
    n_inner = x_hat.shape[2] // n_sub
    sum_grad = np.float64(0.0)
    sum_grad_x_hat = np.float64(0.0)
    for a in range(x_hat.shape[0]):
        for s in range(n_sub):
            grad_run = grad_out[a, k, s * n_inner:(s + 1) * n_inner]
            x_hat_run = x_hat[a, k, s * n_inner:(s + 1) * n_inner]
            if weight_along_run:
                for i in range(n_inner):
                    g = grad_run[i]
                    g_x_hat = g * x_hat_run[i]
                    grad_bias_part[i] += g
                    grad_weight_part[i] += g_x_hat
                    sum_grad += weight[i] * g
                    sum_grad_x_hat += weight[i] * g_x_hat
                continue
            run_grad = np.float64(0.0)
            run_grad_x_hat = np.float64(0.0)
            for i in range(n_inner):
                run_grad += grad_run[i]
                run_grad_x_hat += grad_run[i] * x_hat_run[i]
            w = weight[param_base + s]
            sum_grad += w * run_grad
            sum_grad_x_hat += w * run_grad_x_hat
            grad_bias_part[param_base + s] += run_grad
            grad_weight_part[param_base + s] += run_grad_x_hat
    return sum_grad, sum_grad_x_hat


def _input_grad_runs(grad_out, x_hat, k, n_sub, param_base, weight_along_run, weight, scale,
                     mean_grad, mean_grad_x_hat, grad_x):
    """``dx = scale · (w·g − mean_grad − x_hat · mean_grad_x_hat)`` over ``[:, k]``."""
    n_inner = x_hat.shape[2] // n_sub
    for a in range(x_hat.shape[0]):
        for s in range(n_sub):
            grad_run = grad_out[a, k, s * n_inner:(s + 1) * n_inner]
            x_hat_run = x_hat[a, k, s * n_inner:(s + 1) * n_inner]
            grad_x_run = grad_x[a, k, s * n_inner:(s + 1) * n_inner]
            if weight_along_run:
                for i in range(n_inner):
                    grad_x_run[i] = scale * (weight[i] * grad_run[i] - mean_grad
                                             - x_hat_run[i] * mean_grad_x_hat)
                continue
            w = weight[param_base + s]
            for i in range(n_inner):
                grad_x_run[i] = scale * (w * grad_run[i] - mean_grad
                                         - x_hat_run[i] * mean_grad_x_hat)


# reassoc: vectorised float64 sums in a compile-time order (thread-count
# independent); contract: FMA. Both change results by rounding only; no
# nnan/ninf, so NaN and inf propagate.
_reduce_runs_kernel = jit(_reduce_runs, fastmath={"reassoc", "contract"})
_input_grad_runs_kernel = jit(_input_grad_runs, fastmath={"contract"})


def _normalize_backward(grad_out, x_hat, weight, n_params, n_sub, weight_along_run, inv_std,
                        use_input_stats, needs_grad_x, grad_x, grad_weight_parts,
                        grad_bias_parts):
    # grad_out, x_hat, grad_x: (A, K, S * B); weight as in _normalize_forward;
    # grad_*_parts: (chunks, P * S) float64, one row per fixed chunk of k
    count = x_hat.shape[0] * x_hat.shape[2]
    n_kept, n_chunks = x_hat.shape[1], grad_weight_parts.shape[0]
    per_chunk = (n_kept + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        for k in range(chunk * per_chunk, min((chunk + 1) * per_chunk, n_kept)):
            param_base = (k % n_params) * n_sub
            sum_grad, sum_grad_x_hat = _reduce_runs_kernel(
                grad_out, x_hat, k, n_sub, param_base, weight_along_run, weight,
                grad_weight_parts[chunk], grad_bias_parts[chunk])
            if not needs_grad_x:
                continue
            coefficients = np.zeros(3, dtype=x_hat.dtype)
            coefficients[0] = inv_std[k]
            # with fixed (running) statistics x_hat does not depend on the batch
            if use_input_stats:
                coefficients[1] = sum_grad / count
                coefficients[2] = sum_grad_x_hat / count
            _input_grad_runs_kernel(grad_out, x_hat, k, n_sub, param_base, weight_along_run,
                                    weight, coefficients[0], coefficients[1], coefficients[2],
                                    grad_x)


normalize_backward_kernel = jit(_normalize_backward, parallel=True)
