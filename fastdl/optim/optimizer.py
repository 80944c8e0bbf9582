"""The optimizer base: parameter groups over flat buffers, one fused kernel per step.

At construction the optimizer allocates one contiguous parameter buffer and one
flat gradient buffer and packs its parameters into them (``tensor_buffers.FlatBuffers``):
every ``.data`` becomes a view of the first, and the autograd accumulates every
gradient into a view of the second. State slots (``exp_avg``,
``momentum_buffer`` …) are flat buffers too. ``step()`` builds two small
per-parameter arrays (active this step? its step count) and the per-parameter
hyper-parameters from the groups, then makes one kernel call.

Assigning ``p.data = value`` later is safe: a value of the same shape and dtype
is copied into the flat buffer by the Tensor's ``data`` setter; a value of
another shape or dtype rebinds ``p.data``, and the next ``step()`` (or
``zero_grad``, ``state_dict``, ``gradient_buffer``) notices and re-packs the
buffers, keeping each parameter's state (step count, momentum …) when its size
is unchanged and starting it afresh when its size changed.

``param_groups`` are plain dicts, read at every step: editing ``group["lr"]``
or ``group["betas"]`` takes effect at the next ``step()``. ``optimizer.state``
maps each parameter to its state as torch's does (the fused slots are views
into the flat buffers).
"""
import collections
import numbers

import numpy as np

from fastdl.autograd import Tensor
from fastdl.tensor_buffers import FlatBuffers
from fastdl.kernels.optim import make_chunks

__all__ = ["Optimizer", "check_non_negative", "grad_array"]


def grad_array(p):
    """The ndarray of ``p.grad`` (a Tensor, or an ndarray), or None."""
    grad = p.grad
    return np.asarray(grad) if isinstance(grad, Tensor) else grad


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
    """Base class of the optimizers; see the :mod:`fastdl.optim` docstring to write one.

    A fused subclass names its per-element state buffers (``state_slots``), the
    group options its kernel reads (``hyper_names``) and implements
    ``_validate(group)`` and ``_update(active, hyper)``. A subclass may instead
    override ``step()`` and loop over ``param_groups`` and ``state[p]`` as in torch.

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
    # per-parameter scalars kept across steps -> their initial value (NAdam's mu_product)
    scalar_state = {}

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        groups = list(params) if not isinstance(params, Tensor) else [params]
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = []
        self._user_state = collections.defaultdict(dict)
        for group in groups:
            self.add_param_group(group)
        self._build_buffers()

    def add_param_group(self, group):
        """Add a group (at any time); its missing options come from the defaults.

        ``group["params"]`` holds Tensors, or ``(name, Tensor)`` pairs as
        ``named_parameters()`` yields (the names go to ``group["param_names"]``).
        """
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        names = None
        if params and all(isinstance(p, tuple) and len(p) == 2 for p in params):
            names, params = [name for name, _ in params], [p for _, p in params]
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, got %s" % type(p).__name__)
            if p.dtype.kind != "f":
                raise TypeError("optimizer: parameters must be floating point, got %s"
                                % p.dtype)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        full = dict(self.defaults)
        full.update({k: v for k, v in group.items() if k != "params"})
        self._validate(full)
        full["params"] = params
        if names is not None:
            full["param_names"] = names
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
        if not hasattr(self, "_buffers"):
            return {}
        return {id(p): (int(size), int(step),
                        {name: buffer[start:start + size].copy()
                         for name, buffer in self.state_buffers.items()},
                        {name: values[index] for name, values in self._scalars.items()})
                for index, (p, start, size, step) in enumerate(zip(
                    self._packed, self._starts, self._sizes, self._steps))}

    def _build_buffers(self):
        """Pack every parameter (its data, gradient and state) into flat buffers."""
        params = self.params
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise TypeError("optimizer: all parameters must share one dtype, got %s"
                            % sorted(str(d) for d in dtypes))
        for p in params:
            if p.grad is not None and np.shape(grad_array(p)) != p.shape:
                raise RuntimeError("optimizer: a parameter's gradient has shape %s but its "
                                   "data has shape %s (was .data given a new shape after "
                                   "backward?)" % (np.shape(grad_array(p)), p.shape))
        dtype = dtypes.pop()
        sizes = [p.numel() for p in params]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sum(sizes))
        old_state = self._packed_state()
        self.flat_params = np.empty(total, dtype=dtype)
        self.flat_grads = _touched_zeros(total, dtype)
        slots = {name: _touched_zeros(total, dtype) for name in self.state_slots}
        steps = np.zeros(len(params), dtype=np.int64)
        scalars = {name: np.full(len(params), value, dtype=np.float64)
                   for name, value in self.scalar_state.items()}
        group_of = [i for i, g in enumerate(self.param_groups) for _ in g["params"]]
        self._buffers = FlatBuffers(params, self.flat_params, self.flat_grads)
        for index, (p, start, size) in enumerate(zip(params, starts, sizes)):
            old = old_state.get(id(p))
            if old is not None and old[0] == size:   # a new size starts its state afresh
                steps[index] = old[1]
                for name, values in old[2].items():
                    slots[name][start:start + size] = values
                for name, value in old[3].items():
                    scalars[name][index] = value
            else:
                for name, option in self.slot_initial.items():
                    slots[name][start:start + size] = self.param_groups[group_of[index]][option]
        self.state_buffers = slots
        self._scalars = scalars
        self._packed = list(params)
        self._starts, self._sizes = starts, np.array(sizes, dtype=np.int64)
        self._chunks = make_chunks(starts.tolist(), sizes)
        self._steps = steps
        self._group_of = np.array(group_of, dtype=np.int64)

    def _sync(self):
        """Re-pack when some parameter's ``.data`` no longer is its view of the flat buffer
        (given a new shape or dtype since packing)."""
        if not self._buffers.intact():
            self._build_buffers()

    def gradient_buffer(self):
        """The flat gradient buffer holding every parameter's current gradient, to be
        reduced in place (``distributed.average_gradients``): the buffers are re-packed
        first if a parameter's ``.data`` was given a new shape or dtype, a gradient
        assigned by hand is copied in (``.grad`` then views it), and a parameter without
        a gradient has zeros in its segment (its ``.grad`` stays None).

        Returns
        -------
        ndarray, 1-D, the parameters' dtype
            Writing into it writes the parameters' gradients.
        """
        self._sync()
        self._buffers.gather_grads()
        return self.flat_grads

    def _slot(self, name, index):
        start, size = self._starts[index], self._sizes[index]
        return self.state_buffers[name][start:start + size].reshape(self._packed[index].shape)

    @property
    def chunks(self):
        """``(chunk_start, chunk_end, chunk_segment)``: the flat buffer cut into chunks, each
        inside one parameter's segment (the loop a fused kernel runs in parallel)."""
        return self._chunks

    @property
    def steps(self):
        """Per-parameter step counts (int64, one per segment), already advanced for this step."""
        return self._steps

    # -------------------------------------------------------------------- step
    def zero_grad(self, set_to_none=True):
        """Clear gradients: ``None`` (default, as torch) or zeros in the flat buffer."""
        for p in self.params:
            p.grad = None
        self._sync()
        if not set_to_none:
            self._buffers.zero_grads()

    def _hyper_table(self):
        """float64 ``(groups, columns)``: ``hyper_names`` read from each group now; a tuple
        option (``betas``) takes one column per entry, booleans are 0/1."""
        rows = []
        for group in self.param_groups:
            row = []
            for name in self.hyper_names:
                value = group[name]
                row.extend(float(v) for v in value) if isinstance(value, (tuple, list)) \
                    else row.append(float(value))
            rows.append(row)
        return np.array(rows, dtype=np.float64)

    def _hyper(self, dtype=None):
        """Per-parameter rows of :meth:`_hyper_table`, in ``dtype`` (the parameters' by
        default: float32 updates then run in float32 SIMD, as torch's)."""
        table = self._hyper_table()
        return np.ascontiguousarray(table[self._group_of], dtype=dtype or self.flat_params.dtype)

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
        self._buffers.store_assigned_grads()
        self._steps += active
        self._update(active, self._hyper())
        return loss

    def _update(self, active, hyper):
        raise NotImplementedError("optimizer subclasses define _update or override step()")

    # ------------------------------------------------------------------- state
    def _fused_names(self):
        return {"step", *self.state_slots, *self.scalar_state}

    def _fused_entry(self, index, copy):
        entry = {"step": int(self._steps[index])}
        for name in self.state_slots:
            view = self._slot(name, index)
            entry[name] = view.copy() if copy else view
        for name, values in self._scalars.items():
            entry[name] = float(values[index])
        return entry

    @property
    def state(self):
        """``{parameter: {name: value}}`` as torch's ``optimizer.state``.

        A parameter that has stepped shows ``step``, its scalar state and its
        slots as views into the flat buffers (edit them in place); other keys
        belong to the caller (an optimizer that overrides ``step()`` keeps its
        own state here) and persist.
        """
        self._sync()
        for index, p in enumerate(self._packed):
            if self._steps[index] > 0:
                self._user_state[p].update(self._fused_entry(index, copy=False))
        return self._user_state

    def state_dict(self):
        """``{"state": {index: {"step", slots…}}, "param_groups": [...]}`` as torch.

        Parameters are numbered in group order; arrays are copies; a parameter
        with no state has no entry.
        """
        self._sync()
        state = {}
        fused = self._fused_names()
        for index, p in enumerate(self._packed):
            entry = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                     for k, v in self._user_state.get(p, {}).items()
                     if self._steps[index] == 0 or k not in fused}
            if self._steps[index] > 0:
                entry.update(self._fused_entry(index, copy=True))
            if entry:
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
        """Restore hyper-parameters and state saved by :meth:`state_dict` (or by torch's
        optimizer of the same kind, with its tensors as arrays).

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
        self._reset_state()
        for key, entry in state_dict["state"].items():
            self._load_entry(int(key), entry)

    def _reset_state(self):
        self._steps[:] = 0
        self._user_state.clear()
        for name in self.state_slots:
            self.state_buffers[name].fill(0)
        for name, value in self.scalar_state.items():
            self._scalars[name].fill(value)
        for name, option in self.slot_initial.items():   # parameters without saved state
            for index, group in enumerate(self._group_of):
                start, size = self._starts[index], self._sizes[index]
                self.state_buffers[name][start:start + size] = self.param_groups[group][option]

    def _load_entry(self, index, entry):
        fused = self._update.__func__ is not Optimizer._update
        slots = [name for name in self.state_slots if entry.get(name) is not None]
        if fused:
            # torch's SGD keeps no step: a momentum buffer means it has stepped
            self._steps[index] = int(float(np.asarray(entry.get("step", 1 if slots else 0))))
        for name in slots if fused else ():
            values = np.asarray(entry[name])
            target = self._slot(name, index)
            if values.shape != target.shape:
                raise ValueError("load_state_dict: state %r of parameter %d has shape %s, "
                                 "expected %s" % (name, index, values.shape, target.shape))
            target[...] = values
        for name in self.scalar_state if fused else ():
            value = entry.get(name)
            self._scalars[name][index] = float(np.asarray(value)) if value is not None else \
                self._recompute_scalar(name, index)
        own = {k: v for k, v in entry.items() if not fused or k not in self._fused_names()}
        if own:
            self._user_state[self._packed[index]].update(own)

    def _recompute_scalar(self, name, index):
        """A scalar state missing from a loaded state dict (subclasses rebuild it from the
        step count); the initial value by default."""
        return self.scalar_state[name]


def check_torch_flags(differentiable=False, **ignored):
    """Accept torch's implementation flags (``foreach``, ``fused``, ``capturable``): fastdl
    has one fused CPU path. ``differentiable=True`` is refused."""
    if differentiable:
        raise ValueError("differentiable=True is not supported: fastdl's optimizer steps are "
                         "not recorded by the autograd")


def check_non_negative(name, value, label=None):
    """torch-style validation: ``ValueError("Invalid learning rate: -1")``."""
    if not isinstance(value, numbers.Real) or value < 0:
        raise ValueError("Invalid %s: %s" % (label or name, value))
