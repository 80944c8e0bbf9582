"""Parameters: leaf Tensors that a Module registers and an optimizer updates."""
import numpy as np

from fastdl.autograd import Tensor


class Parameter(Tensor):
    """A Tensor that requires a gradient by default and is registered by ``Module``.

    Parameters
    ----------
    data : ndarray (float32 or float64)
    requires_grad : bool
    """

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        data = data.array if isinstance(data, Tensor) else data
        super().__init__(np.asarray(data), requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
