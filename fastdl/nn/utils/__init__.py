"""``torch.nn.utils``'s path: gradient clipping (from ``fastdl.optim``) and flat parameter
vectors."""
import numpy as np

from fastdl.autograd import Tensor
from fastdl.optim.clip import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector",
           "vector_to_parameters"]


def parameters_to_vector(parameters):
    """The parameters' values concatenated into one 1-D Tensor (a copy)."""
    return Tensor(np.concatenate([p.array.reshape(-1) for p in parameters]))


def vector_to_parameters(vec, parameters):
    """Copy consecutive slices of the 1-D ``vec`` into ``parameters`` in place.

    Raises
    ------
    ValueError
        ``vec`` is not 1-D or its length is not the parameters' total size.
    """
    values = vec.array if isinstance(vec, Tensor) else np.asarray(vec)
    parameters = list(parameters)
    total = sum(p.array.size for p in parameters)
    if values.ndim != 1 or values.size != total:
        raise ValueError("vector_to_parameters: expected a 1-D vector of %d values, got shape "
                         "%s" % (total, values.shape))
    start = 0
    for parameter in parameters:
        size = parameter.array.size
        parameter.array[...] = values[start:start + size].reshape(parameter.shape)
        start += size
