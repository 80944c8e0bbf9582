"""Eval-mode batch norm as a per-channel affine map, what conv-BN fusion folds into a conv
(``deploy.fusion`` for plans, ``functional._deferred_conv`` for eager deferred convs).
NumPy only: a service that loads plans imports it without Numba."""
import numpy as np

__all__ = ["batch_norm_eval_scale"]


def batch_norm_eval_scale(running_mean, running_var, eps, gamma=None, beta=None):
    """Eval-mode batch norm as ``(z - mean) * scale + beta``.

    Parameters
    ----------
    running_mean, running_var : array_like (C,)
    eps : float
    gamma, beta : array_like (C,) or None
        None for a non-affine norm (1 and 0).

    Returns
    -------
    scale, mean, beta : ndarray (C,), float64
        ``scale = gamma / sqrt(var + eps)``.
    """
    mean = np.asarray(running_mean, dtype=np.float64)
    var = np.asarray(running_var, dtype=np.float64)
    gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma, dtype=np.float64)
    beta = np.zeros_like(mean) if beta is None else np.asarray(beta, dtype=np.float64)
    return gamma / np.sqrt(var + eps), mean, beta
