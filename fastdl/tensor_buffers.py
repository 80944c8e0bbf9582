"""Flat parameter and gradient buffers for an optimizer: leaf tensors packed into them.

Autograd owns where a tensor's array and gradient live; an optimizer owns the two
flat buffers it updates in one fused pass. :class:`FlatBuffers` is the one place
where the two meet: it points tensors at the owner's buffers, and tells the owner
when a tensor left them (its ``.data`` was given another shape or dtype).
"""
from fastdl.autograd import Tensor

__all__ = ["FlatBuffers"]


class FlatBuffers:
    """Leaf tensors packed into two flat buffers that their owner allocates (an optimizer's
    parameter and gradient buffers): in order, each tensor's ``.data`` becomes a view of
    its segment of ``params``, and its gradient accumulates into its segment of ``grads``.

    The owner reads and writes the buffers' values (one fused update over all of them);
    autograd alone points tensors at the buffers. Packing copies each tensor's data and
    gradient (if any) into its segments. Then ``backward`` writes a tensor's first
    gradient into its segment and adds later ones in place; assigning ``.data`` a value
    of the same shape and dtype copies it into the segment, and one of another shape or
    dtype unpacks that tensor (:meth:`intact` is then False: the owner packs anew).

    Parameters
    ----------
    tensors : sequence of Tensor
    params, grads : ndarray, 1-D, C-contiguous
        As many elements as the tensors hold together; ``grads`` may be zeros.
    """

    def __init__(self, tensors, params, grads):
        self.tensors = list(tensors)
        self.params, self.grads = params, grads
        self._data_views, self._grad_views = [], []
        start = 0
        for tensor in self.tensors:
            shape, size = tensor._data.shape, tensor._data.size
            view = params[start:start + size]
            view[...] = tensor._data.reshape(-1)
            grad_view = grads[start:start + size].reshape(shape)
            if tensor._grad is not None:
                grad_view[...] = tensor._grad._data
                tensor._grad = Tensor._wrap(grad_view)
            tensor._data = view.reshape(shape)   # not the setter: it copies into packed data
            tensor._grad_storage = grad_view
            self._data_views.append(tensor._data)
            self._grad_views.append(grad_view)
            start += size

    def intact(self):
        """Whether every tensor's ``.data`` still is its segment of ``params``."""
        for tensor, view in zip(self.tensors, self._data_views):
            if tensor._data is not view:
                return False
        return True

    def store_assigned_grads(self):
        """Copy into ``grads`` the gradients assigned by hand (``p.grad = g``), which
        live outside it; ``.grad`` stays the assigned tensor."""
        for tensor, grad_view in zip(self.tensors, self._grad_views):
            grad = tensor._grad
            if grad is not None and grad._data is not grad_view:
                grad_view[...] = grad._data

    def gather_grads(self):
        """Make ``grads`` hold every tensor's gradient, to be reduced in place: a gradient
        assigned by hand is copied in and ``.grad`` then views its segment; a tensor
        without a gradient has zeros there (and its ``.grad`` stays None)."""
        for tensor, grad_view in zip(self.tensors, self._grad_views):
            grad = tensor._grad
            if grad is None:
                grad_view.fill(0)
            elif grad._data is not grad_view:
                grad_view[...] = grad._data
                tensor._grad = Tensor._wrap(grad_view)

    def zero_grads(self):
        """Zero ``grads`` and make every tensor's ``.grad`` its (zero) segment."""
        self.grads.fill(0)
        for tensor, grad_view in zip(self.tensors, self._grad_views):
            tensor._grad = Tensor._wrap(grad_view)
