"""Deferred epilogues: a conv's eval-mode batch norm, residual add and ReLU as one pass.

In inference a conv is mostly followed by an eval-mode batch norm, often by a residual
add and a ReLU: each a whole pass over the conv's output when run as written. A
compiled plan folds them into the conv (``deploy``); this module does it for eager code,
under the same conditions a plan has (nothing recorded for autograd) and within one
model call:

* Inside a module's forward (``scope.depth > 0``), with nothing to record, ``conv2d``
  returns a :class:`DeferredTensor`: the conv's operands, not yet its values.
* An eval-mode batch norm of it folds into the conv (``w * scale``, ``(b - mean) *
  scale + beta``, as ``deploy.fusion``; where the weights outnumber the outputs, as in
  ResNet-18's last stages at batch 1, a pass over the output in place instead, with the
  residual and activation, costs less than rewriting them); an add of a tensor of its
  shape and dtype becomes the conv's residual; a ReLU its activation, in that order
  (the conv's epilogue order). Each gives a new deferred tensor (``relu_`` and ``+=``
  update the tensor itself), so the tensor they took keeps its own value.
* A pointwise or depthwise conv of such a tensor may keep it as the link before it
  (``functional._deferred_conv``): the links then run as one chain. An add of two
  deferred tensors keeps the other's epilogue as the residual, so a block's input
  added back does not end the chain.
* Anything else that reads the values (``_data``, ``.array``, ``.numpy()``, any other
  op) runs the conv once, epilogue fused, and the tensor becomes a plain ``Tensor``.
* Nothing deferred outlives the outermost module call: when it returns, every tensor
  deferred during it is computed. An in-place update of any tensor (``update_in_place``,
  ``.data =``) first computes every deferred tensor of the thread, so no conv reads an
  operand written after it was called.

Values equal the separate ops' to rounding (the folded weights round once more);
``enabled = False`` turns deferral off (tests compare both).
"""
import threading
import weakref

import numpy as np

from fastdl import autograd   # by module: autograd imports this one (through tensor_ops)
from fastdl.autograd import Tensor, _grad_mode

__all__ = ["DeferredTensor", "Epilogue", "scope", "active", "defer", "foldable", "pending",
           "materialize_all", "value", "with_affine", "with_residual", "with_relu",
           "enabled"]

#: Whether ops defer (module-level switch; the plain path is always correct).
enabled = True

_SLOT = Tensor.__dict__["_data"]   # the slot under Tensor's ``_data`` (and ``array``)


class _Scope(threading.local):
    """Per thread: module-call depth and (weak references to) the tensors deferred in
    the current call: one that nothing holds any more is never computed."""

    def __init__(self):
        self.depth = 0
        self.live = []


scope = _Scope()


class Epilogue:
    """What a deferred tensor will compute: ``compute(epilogue)`` -> ndarray.

    Attributes
    ----------
    compute : callable
    operands : tuple
        For ``compute`` (a conv's input, weight, bias and hyper-parameters).
    shape : tuple
    dtype : numpy.dtype
    scale, shift : ndarray (C,) or None
        An eval-mode batch norm folded in: ``y = z * scale + shift`` per channel (axis 1)
        of the conv's output ``z`` (its bias included), float64.
    residual : ndarray, Epilogue or None
        Added after the conv (and the folded norm), C-contiguous, ``shape`` and ``dtype``;
        an epilogue: a deferred tensor's values (``value``), read when this computes.
    slope : float or None
        The activation last: 0.0 ReLU.
    result : ndarray or None
        The values, once computed (by this epilogue's tensor or by a later conv that
        took it as its input and computed both in one chain): computed once however
        many read them. Every deferred tensor is computed before any in-place write,
        so a result is never read after its array was written.
    owner : weakref to the DeferredTensor made with this epilogue (None before)
    """

    __slots__ = ("compute", "operands", "shape", "dtype", "scale", "shift", "residual",
                 "slope", "result", "owner")
    _FIELDS = __slots__[:-2]   # what ``replace`` copies

    def __init__(self, compute, operands, shape, dtype, scale=None, shift=None,
                 residual=None, slope=None):
        self.compute, self.operands = compute, operands
        self.shape, self.dtype = shape, dtype
        self.scale, self.shift = scale, shift
        self.residual, self.slope = residual, slope
        self.result = self.owner = None

    def replace(self, **fields):
        """A new epilogue with ``fields`` changed (what a pending epilogue computes never
        changes; the copy has no result and no owner yet)."""
        copy = Epilogue.__new__(Epilogue)
        for name in self._FIELDS:
            setattr(copy, name, fields.get(name, getattr(self, name)))
        copy.result = copy.owner = None
        return copy

    def settle(self, array):
        """Record ``array`` as the values; the owner, if it still waits on this
        epilogue, takes them. The operands go: a computed link no longer holds the
        links before it (nor, through them, every activation of a chain)."""
        self.result = array
        self.operands = self.residual = self.scale = self.shift = None
        owner = self.owner() if self.owner is not None else None
        if type(owner) is DeferredTensor and _SLOT.__get__(owner) is self:
            _assign(owner, array)


def value(epilogue):
    """An epilogue's values: its result, or computed now (and settled)."""
    if epilogue.result is None:
        epilogue.settle(epilogue.compute(epilogue))
    return epilogue.result


def _materialize(tensor):
    current = _SLOT.__get__(tensor)
    if not isinstance(current, Epilogue):
        return current
    array = value(current)
    if type(tensor) is DeferredTensor:   # not settled (another epilogue's owner now)
        _assign(tensor, array)
    return array


def _assign(tensor, value):
    _SLOT.__set__(tensor, value)
    tensor.__class__ = Tensor


class DeferredTensor(Tensor):
    """A Tensor whose values a conv will compute when first read (see the module)."""

    __slots__ = ()

    _data = property(_materialize, _assign)
    array = property(_materialize)

    @property
    def epilogue(self):
        """The pending :class:`Epilogue`, or None once computed."""
        value = _SLOT.__get__(self)
        return value if isinstance(value, Epilogue) else None

    @property
    def shape(self):
        epilogue = self.epilogue
        return epilogue.shape if epilogue is not None else _materialize(self).shape

    @property
    def dtype(self):
        epilogue = self.epilogue
        return epilogue.dtype if epilogue is not None else _materialize(self).dtype

    @property
    def ndim(self):
        return len(self.shape)

    def dim(self):
        return len(self.shape)


def active(*tensors):
    """Whether an op on ``tensors`` may defer: inside a module call, enabled, nothing to
    record for autograd, no trace running."""
    if not enabled or scope.depth == 0:
        return False
    if _grad_mode.enabled:
        for tensor in tensors:
            if isinstance(tensor, Tensor) and tensor.requires_grad:
                return False
    return autograd._tracer is None


def defer(epilogue):
    """A new :class:`DeferredTensor` of ``epilogue``, computed at the latest when the
    outermost module call returns."""
    tensor = Tensor.__new__(DeferredTensor)
    _SLOT.__set__(tensor, epilogue)
    tensor._grad = None
    tensor.requires_grad = False
    tensor._ctx = None
    tensor._out_index = 0
    tensor._grad_storage = None
    tensor._versions = None
    epilogue.owner = weakref.ref(tensor)
    scope.live.append(epilogue.owner)
    return tensor


def pending(value):
    """``value``'s pending epilogue if it is a deferred tensor not yet computed, else None."""
    return value.epilogue if type(value) is DeferredTensor else None


def materialize_all():
    """Compute every tensor deferred in this thread's current module call (the latest
    first: a conv chained to the convs before it computes them too)."""
    live, scope.live = scope.live, []
    for reference in reversed(live):
        tensor = reference()
        if type(tensor) is DeferredTensor:
            _materialize(tensor)


def _update(tensor, epilogue, in_place):
    if in_place:
        _SLOT.__set__(tensor, epilogue)
        epilogue.owner = weakref.ref(tensor)
        return tensor
    return defer(epilogue)


def with_residual(tensor, other, in_place=False):
    """``tensor + other`` as the conv's residual, or None where it cannot be (an
    activation already applied, a residual already taken, ``other`` not a tensor of the
    same shape and dtype, or one that autograd must record)."""
    epilogue = pending(tensor)
    if (epilogue is None or epilogue.residual is not None or epilogue.slope is not None
            or not isinstance(other, Tensor) or other is tensor
            or not active(other)):
        return None
    # a deferred ``other`` stays deferred: its epilogue is the residual (a conv chained
    # to it reads it from the chain)
    residual = pending(other)
    if residual is None:
        residual = other._data
    if residual.shape != epilogue.shape or residual.dtype != epilogue.dtype:
        return None
    if not isinstance(residual, Epilogue):
        residual = np.ascontiguousarray(residual)
    return _update(tensor, epilogue.replace(residual=residual), in_place)


def with_relu(tensor, in_place=False, slope=0.0):
    """``relu(tensor)`` (``slope`` 0) or ``leaky_relu(tensor, slope)`` as the conv's
    activation, or None where it cannot be."""
    epilogue = pending(tensor)
    if epilogue is None or epilogue.slope is not None or not active():
        return None
    return _update(tensor, epilogue.replace(slope=slope), in_place)


def foldable(tensor, channels):
    """The epilogue into which a per-channel affine map of ``tensor`` (``channels`` of
    them, axis 1) can fold, before its residual and activation; None where it cannot."""
    epilogue = pending(tensor)
    if (epilogue is None or epilogue.residual is not None or epilogue.slope is not None
            or epilogue.scale is not None or len(epilogue.shape) < 2
            or epilogue.shape[1] != channels or not active()):
        return None
    return epilogue


def with_affine(epilogue, scale, shift):
    """A deferred tensor of ``epilogue`` (from ``foldable``) with ``y = z * scale + shift``
    per channel (float64 ``(C,)``) folded in."""
    return defer(epilogue.replace(scale=scale, shift=shift))
