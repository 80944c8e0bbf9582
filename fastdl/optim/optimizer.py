"""The optimizer base: parameter groups over flat buffers, one fused kernel per step.

At construction every parameter's ``.data`` is moved into one contiguous
buffer and re-pointed to a view of it; ``p._grad_storage`` is set to a view of
one flat gradient buffer, into which the autograd accumulates. State slots
(``exp_avg``, ``momentum_buffer`` …) are flat buffers too. ``step()`` builds
two small per-parameter arrays (active this step? its step count) and the
per-parameter hyper-parameters from the groups, then makes one kernel call.

Assigning ``p.data = value`` later is safe: a value of the same shape and dtype
is copied into the flat buffer by the Tensor's ``data`` setter; a value of
another shape or dtype rebinds ``p.data``, and the next ``step()`` (or
``zero_grad``/``state_dict``) notices and re-packs the buffers, keeping each
parameter's state (step count, momentum …) when its size is unchanged and
starting it afresh when its size changed.
"""
import numbers

import numpy as np

from fastdl.autograd import Tensor
from fastdl.kernels.optim import make_chunks

__all__ = ["Optimizer"]


def _touched_zeros(size, dtype):
    """Zeros whose pages are really allocated.

    ``np.zeros`` maps large arrays to the kernel's shared zero page until first
    written; a fused update over such a buffer (e.g. Adam's unused amsgrad slot)
    ran 14x slower (89 ms instead of 6 ms for 10M parameters).
    """
    array = np.empty(size, dtype=dtype)
    array.fill(0)
    return array


class Optimizer:
    """Base class. Subclasses set ``defaults``, ``state_slots``, ``hyper_names`` and ``_update``.

    Parameters
    ----------
    params : iterable of Tensor, or of dicts ``{"params": [...], **options}``
    defaults : dict
        Default hyper-parameters of every group.
    """

    state_slots = ()
    hyper_names = ()
    # slot name -> the group option holding a new parameter's initial value (zeros
    # otherwise), e.g. Adagrad's {"sum": "initial_accumulator_value"}
    slot_initial = {}

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        groups = list(params) if not isinstance(params, Tensor) else [params]
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = []
        for group in groups:
            self.add_param_group(group)
        self._build_buffers()

    def add_param_group(self, group):
        """Add a group (before the first step); its missing options come from the defaults."""
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, got %s" % type(p).__name__)
            if p.data.dtype.kind != "f":
                raise TypeError("optimizer: parameters must be floating point, got %s"
                                % p.data.dtype)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        full = dict(self.defaults)
        full.update({k: v for k, v in group.items() if k != "params"})
        self._validate(full)
        full["params"] = params
        self.param_groups.append(full)
        if hasattr(self, "flat_params"):
            self._build_buffers()

    def _validate(self, group):
        """Subclasses raise torch's messages for invalid hyper-parameters."""

    # ----------------------------------------------------------------- buffers
    @property
    def params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def _packed_state(self):
        """``{id(p): (size, step, {slot: values})}`` of the parameters packed so far."""
        if not hasattr(self, "_views"):
            return {}
        return {id(p): (int(size), int(step),
                        {name: buffer[start:start + size].copy()
                         for name, buffer in self.state_buffers.items()})
                for p, start, size, step in zip(self._packed, self._starts, self._sizes,
                                                self._steps)}

    def _build_buffers(self):
        """Pack every parameter (its data, gradient and state) into flat buffers."""
        params = self.params
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        dtypes = {p._data.dtype for p in params}
        if len(dtypes) != 1:
            raise TypeError("optimizer: all parameters must share one dtype, got %s"
                            % sorted(str(d) for d in dtypes))
        for p in params:
            if p.grad is not None and np.shape(p.grad) != p._data.shape:
                raise RuntimeError("optimizer: a parameter's gradient has shape %s but its "
                                   "data has shape %s (was .data given a new shape after "
                                   "backward?)" % (np.shape(p.grad), p._data.shape))
        dtype = dtypes.pop()
        sizes = [p._data.size for p in params]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sum(sizes))
        old_state = self._packed_state()
        self.flat_params = np.empty(total, dtype=dtype)
        self.flat_grads = _touched_zeros(total, dtype)
        slots = {name: _touched_zeros(total, dtype) for name in self.state_slots}
        steps = np.zeros(len(params), dtype=np.int64)
        group_of = [i for i, g in enumerate(self.param_groups) for _ in g["params"]]
        views = []
        for index, (p, start, size) in enumerate(zip(params, starts, sizes)):
            shape = p._data.shape
            view = self.flat_params[start:start + size]
            view[...] = p._data.reshape(-1)
            grad_view = self.flat_grads[start:start + size].reshape(shape)
            if p.grad is not None:
                grad_view[...] = p.grad
                p.grad = grad_view
            p._data = view.reshape(shape)   # not the setter: it would copy into the old buffer
            p._grad_storage = grad_view
            views.append(p._data)
            old = old_state.get(id(p))
            if old is not None and old[0] == size:   # a new size starts its state afresh
                steps[index] = old[1]
                for name, values in old[2].items():
                    slots[name][start:start + size] = values
            else:
                for name, option in self.slot_initial.items():
                    slots[name][start:start + size] = self.param_groups[group_of[index]][option]
        self.state_buffers = slots
        self._packed, self._views = list(params), views
        self._starts, self._sizes = starts, np.array(sizes, dtype=np.int64)
        self._chunks = make_chunks(starts.tolist(), sizes)
        self._steps = steps
        self._group_of = np.array(group_of, dtype=np.int64)

    def _sync(self):
        """Re-pack when some parameter's ``.data`` no longer is its view of the flat buffer
        (given a new shape or dtype since packing)."""
        for p, view in zip(self._packed, self._views):
            if p._data is not view:
                self._build_buffers()
                return

    def _slot(self, name, index):
        start, size = self._starts[index], self._sizes[index]
        return self.state_buffers[name][start:start + size].reshape(self.params[index].shape)

    # -------------------------------------------------------------------- step
    def zero_grad(self, set_to_none=True):
        """Clear gradients: ``None`` (default, as torch) or zeros in the flat buffer."""
        for p in self.params:
            p.grad = None
        self._sync()
        if not set_to_none:
            self.flat_grads.fill(0)
            for p in self.params:
                p.grad = p._grad_storage

    def _hyper(self):
        table = np.array([[float(group[name]) for name in self.hyper_names]
                          for group in self.param_groups], dtype=np.float64)
        # in the parameters' dtype: float32 updates then run in float32 SIMD, as torch's
        return np.ascontiguousarray(table[self._group_of], dtype=self.flat_params.dtype)

    def step(self, closure=None):
        """Update every parameter that has a gradient, in one fused kernel call.

        Returns
        -------
        The closure's loss, when a closure is given.
        """
        loss = closure() if closure is not None else None
        self._sync()
        active = np.fromiter((p.grad is not None and p.requires_grad for p in self.params),
                             dtype=np.bool_, count=len(self._steps))
        for p in self.params:
            if p.grad is not None and p.grad is not p._grad_storage:
                p._grad_storage[...] = p.grad  # a grad assigned by hand
        self._steps += active
        self._update(active, self._hyper())
        return loss

    def _update(self, active, hyper):
        raise NotImplementedError("optimizer subclasses define _update")  # abstract

    # ------------------------------------------------------------------- state
    def state_dict(self):
        """``{"state": {index: {"step", slots…}}, "param_groups": [...]}`` as torch.

        Arrays are copies; a parameter that never stepped has no state entry.
        """
        self._sync()
        state = {}
        for index in range(len(self._steps)):
            if self._steps[index] == 0:
                continue
            entry = {"step": int(self._steps[index])}
            for name in self.state_slots:
                entry[name] = self._slot(name, index).copy()
            state[index] = entry
        groups = []
        offset = 0
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = list(range(offset, offset + len(group["params"])))
            offset += len(group["params"])
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters, step counts and state slots saved by :meth:`state_dict`.

        Raises
        ------
        ValueError
            If the groups or parameter shapes do not match this optimizer's.
        """
        self._sync()
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(saved["params"]) != len(own["params"])
                for saved, own in zip(groups, self.param_groups)):
            raise ValueError("load_state_dict: the saved optimizer has a different number of "
                             "groups or parameters per group")
        for saved, own in zip(groups, self.param_groups):
            own.update({k: v for k, v in saved.items() if k != "params"})
        self._steps[:] = 0
        for name in self.state_slots:
            self.state_buffers[name].fill(0)
        for name, option in self.slot_initial.items():   # parameters without saved state
            for index, group in enumerate(self._group_of):
                start, size = self._starts[index], self._sizes[index]
                self.state_buffers[name][start:start + size] = self.param_groups[group][option]
        for key, entry in state_dict["state"].items():
            index = int(key)
            self._steps[index] = int(entry["step"])
            for name in self.state_slots:
                values = np.asarray(entry[name])
                target = self._slot(name, index)
                if values.shape != target.shape:
                    raise ValueError("load_state_dict: state %r of parameter %d has shape %s, "
                                     "expected %s" % (name, index, values.shape, target.shape))
                target[...] = values


def check_non_negative(name, value, label=None):
    """torch-style validation: ``ValueError("Invalid learning rate: -1")``."""
    if not isinstance(value, numbers.Real) or value < 0:
        raise ValueError("Invalid %s: %s" % (label or name, value))
