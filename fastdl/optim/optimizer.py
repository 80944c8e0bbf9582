"""The optimizer base: parameter groups over flat buffers, one fused kernel per step.

At construction every parameter's ``.data`` is moved into one contiguous
buffer and re-pointed to a view of it; ``p._grad_storage`` is set to a view of
one flat gradient buffer, into which the autograd accumulates. State slots
(``exp_avg``, ``momentum_buffer`` …) are flat buffers too. ``step()`` builds
two small per-parameter arrays (active this step? its step count) and the
per-parameter hyper-parameters from the groups, then makes one kernel call.
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

    def _build_buffers(self):
        params = self.params
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) != 1:
            raise TypeError("optimizer: all parameters must share one dtype, got %s"
                            % sorted(str(d) for d in dtypes))
        dtype = dtypes.pop()
        sizes = [p.data.size for p in params]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sum(sizes))
        old_state = getattr(self, "_slot_values", None)
        self.flat_params = np.empty(total, dtype=dtype)
        self.flat_grads = _touched_zeros(total, dtype)
        slots = {name: _touched_zeros(total, dtype) for name in self.state_slots}
        for p, start, size in zip(params, starts, sizes):
            view = self.flat_params[start:start + size]
            view[...] = p.data.reshape(-1)
            grad_view = self.flat_grads[start:start + size].reshape(p.data.shape)
            if p.grad is not None:
                grad_view[...] = p.grad
                p.grad = grad_view
            p.data = view.reshape(p.data.shape)
            p._grad_storage = grad_view
            if old_state is not None and id(p) in old_state:
                for name, values in old_state[id(p)].items():
                    slots[name][start:start + size] = values
        self.state_buffers = slots
        self._starts, self._sizes = starts, np.array(sizes, dtype=np.int64)
        self._chunks = make_chunks(starts.tolist(), sizes)
        self._steps = np.zeros(len(params), dtype=np.int64)
        self._group_of = np.array([i for i, g in enumerate(self.param_groups)
                                   for _ in g["params"]], dtype=np.int64)
        self._slot_values = None

    def _slot(self, name, index):
        start, size = self._starts[index], self._sizes[index]
        return self.state_buffers[name][start:start + size].reshape(self.params[index].shape)

    # -------------------------------------------------------------------- step
    def zero_grad(self, set_to_none=True):
        """Clear gradients: ``None`` (default, as torch) or zeros in the flat buffer."""
        for p in self.params:
            p.grad = None
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
