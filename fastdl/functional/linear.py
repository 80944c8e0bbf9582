"""Differentiable affine map ``y = x W^T + b``."""
import numpy as np

from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, data_of


class Linear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        out = np.matmul(x, weight.T)
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x = np.matmul(grad, weight) if needs[0] else None
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_weight = (np.matmul(grad_rows.T, x.reshape(-1, x.shape[-1]))
                       if needs[1] else None)
        grad_bias = grad_rows.sum(axis=0) if needs[2] else None
        return grad_x, grad_weight, grad_bias


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``, as ``torch.nn.functional.linear``.

    Parameters
    ----------
    input : Tensor (*, in_features)
    weight : Tensor (out_features, in_features)
    bias : Tensor (out_features,) or None

    Returns
    -------
    Tensor (*, out_features)
    """
    x, w = check_float("linear", "input", input), check_float("linear", "weight", weight)
    if w.ndim != 2:
        raise ValueError("linear: weight must be 2-D (out, in), got shape %s" % (w.shape,))
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError("linear: input has %s features (shape %s) but weight expects %d"
                         % (x.shape[-1] if x.ndim else None, x.shape, w.shape[1]))
    if x.dtype != w.dtype:
        raise TypeError("linear: input %s and weight %s dtypes differ" % (x.dtype, w.dtype))
    b = data_of(bias)
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError("linear: bias must have shape (%d,), got %s" % (w.shape[0], b.shape))
    return Linear.apply(as_tensor(input), as_tensor(weight), as_tensor(bias))
