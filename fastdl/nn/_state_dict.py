"""State dicts as torch's: ``Module.state_dict`` and ``Module.load_state_dict``.

``state_dict`` names entries as torch does (``layer1.0.bn1.running_mean``:
each module's parameters, then its persistent buffers, then its children's),
so a torch checkpoint of the same architecture loads strictly; loading takes
ndarrays, fastdl Tensors or torch tensors and copies them in place.
"""
from collections import OrderedDict, namedtuple
from collections.abc import Mapping

import numpy as np

from fastdl.autograd import Tensor
from fastdl.nn.parameter import Parameter

__all__ = ["StateDictError", "StateDictMixin"]


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` returns: the model's keys it did not find, and the others."""

    __slots__ = ()

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


class StateDictError(RuntimeError, KeyError, ValueError):
    """``load_state_dict`` failed: missing or unexpected keys (strict) or a shape mismatch.

    A RuntimeError as torch's; also a KeyError and a ValueError for older callers.
    """

    __str__ = RuntimeError.__str__   # KeyError's would quote the message


def _as_array(value):
    """The ndarray behind a fastdl Tensor, a torch tensor (duck-typed) or an array-like."""
    if isinstance(value, Tensor):
        return value.array
    if not isinstance(value, np.ndarray) and hasattr(value, "detach") and hasattr(value,
                                                                                  "numpy"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class StateDictMixin:
    """``Module``'s state-dict methods (a Module's registries, read and written)."""

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name, parameter in self._parameters.items():
            if parameter is not None:
                destination[prefix + name] = parameter if keep_vars else parameter.data
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent_buffers_set:
                if keep_vars:
                    destination[prefix + name] = buffer
                elif isinstance(buffer, Tensor):
                    destination[prefix + name] = buffer.data
                else:                              # an ndarray buffer: a Tensor over it
                    destination[prefix + name] = Tensor(buffer)

    def state_dict(self, *, destination=None, prefix="", keep_vars=False):
        """Parameters and persistent buffers by dotted name, as Tensors (shared, not copied).

        As torch's: each value is a detached Tensor (``requires_grad`` False) over the
        parameter's or buffer's own array, so writing into it changes the module and
        ``{k: v.clone() for k, v in sd.items()}`` or ``copy.deepcopy(sd)`` snapshot it;
        ``np.asarray(v)`` or ``v.numpy()`` is the ndarray. Order and names as torch's: a
        module's parameters, its buffers, then each child's entries under
        ``child_name.``. A shared parameter appears under every name (over one array).
        ``keep_vars=True`` gives the Parameters and buffers themselves.
        """
        if destination is None:
            destination = OrderedDict()
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=prefix + name + ".",
                                  keep_vars=keep_vars)
        return destination

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Copy this module's own entries (under ``prefix``) from ``state_dict`` in place.

        Signature as torch's, so a subclass can override it the same way.
        """
        persistent = [(name, value) for name, value in self._buffers.items()
                      if name not in self._non_persistent_buffers_set]
        for name, target in list(self._parameters.items()) + persistent:
            key = prefix + name
            if target is None:
                continue
            if key not in state_dict:
                missing_keys.append(key)
                continue
            source = _as_array(state_dict[key])
            destination = target.array if isinstance(target, Tensor) else target
            if destination.ndim == 0 and source.shape == (1,):
                source = source.reshape(())   # torch's allowance for old 0-d checkpoints
            if source.shape != destination.shape:
                error_msgs.append("size mismatch for %s: copying a param with shape %s from "
                                  "checkpoint, the shape in current model is %s."
                                  % (key, tuple(source.shape), tuple(destination.shape)))
                continue
            if local_metadata.get("assign") and isinstance(target, Parameter):
                target.data = np.array(source, dtype=destination.dtype)
            else:
                np.copyto(destination, source, casting="unsafe")

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy ``state_dict``'s arrays (ndarrays, fastdl or torch tensors) into this module.

        Returns
        -------
        namedtuple ``(missing_keys, unexpected_keys)``

        Raises
        ------
        StateDictError
            (a RuntimeError, as torch's) listing every shape mismatch and, with
            ``strict``, the missing and unexpected keys; entries that match are
            copied first, as torch does.
        TypeError
            ``state_dict`` is not a mapping.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError("Expected state_dict to be dict-like, got %s."
                            % type(state_dict).__name__)
        state_dict = OrderedDict(state_dict)   # a module may add defaults (BatchNorm)
        missing, unexpected, errors = [], [], []
        expected = set(self.state_dict(keep_vars=True))
        for prefix, module in self._prefixed_modules():
            module._load_from_state_dict(state_dict, prefix, {"assign": assign}, strict,
                                         missing, unexpected, errors)
        unexpected.extend(key for key in state_dict if key not in expected)
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: %s. "
                              % ", ".join('"%s"' % k for k in unexpected))
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: %s. "
                              % ", ".join('"%s"' % k for k in missing))
        if errors:
            raise StateDictError("Error(s) in loading state_dict for %s:\n\t%s"
                                 % (self._get_name(), "\n\t".join(errors)))
        return _IncompatibleKeys(missing, unexpected)

    def _prefixed_modules(self):
        """``(prefix, module)`` for self and every descendant, shared ones under each name."""
        stack = [("", self)]
        while stack:
            prefix, module = stack.pop()
            yield prefix, module
            children = [(prefix + name + ".", child) for name, child in module._modules.items()
                        if child is not None]
            stack.extend(reversed(children))
