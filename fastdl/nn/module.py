"""``Module``: the base of layers and models; ``Sequential`` and ``ModuleList``."""
from collections import OrderedDict

import numpy as np

from fastdl.autograd import Tensor
from fastdl.nn.parameter import Parameter

__all__ = ["Module", "Sequential", "ModuleList"]


class Module:
    """Base class of layers: registers Parameters, sub-modules and buffers by attribute.

    Subclasses call ``super().__init__()`` first and define ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("%s: call Module.__init__() before assigning attributes"
                                 % type(self).__name__)
        if name in self._buffers and (value is None or isinstance(value, np.ndarray)):
            self._buffers[name] = value
        elif name in self._parameters and value is None:
            self._parameters[name] = None
        else:
            for registry in (self._parameters, self._buffers, self._modules):
                registry.pop(name, None)
            if isinstance(value, Parameter):
                self._parameters[name] = value
            elif isinstance(value, Module):
                self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name, parameter):
        """Register ``parameter`` (a Parameter or None) under ``name``."""
        if parameter is not None and not isinstance(parameter, Parameter):
            raise TypeError("register_parameter: %r must be a Parameter or None, got %s"
                            % (name, type(parameter).__name__))
        object.__setattr__(self, name, parameter)
        self._parameters[name] = parameter

    def register_buffer(self, name, array):
        """Register a non-trainable ndarray (e.g. running statistics) saved in state_dict."""
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError("register_buffer: %r must be an ndarray or None" % name)
        object.__setattr__(self, name, array)
        self._buffers[name] = array

    def _set_buffer(self, name, array):
        object.__setattr__(self, name, array)
        self._buffers[name] = array

    def add_module(self, name, module):
        """Register ``module`` as a child called ``name``."""
        setattr(self, name, module)

    # -------------------------------------------------------------- traversal
    def named_modules(self, prefix=""):
        """Yield ``(dotted name, module)`` for self and every descendant."""
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(prefix + ("." if prefix else "") + name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_parameters(self, prefix=""):
        """Yield ``(dotted name, Parameter)``, each parameter once."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, parameter in module._parameters.items():
                if parameter is not None and id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield module_name + ("." if module_name else "") + name, parameter

    def parameters(self):
        for _, parameter in self.named_parameters():
            yield parameter

    def named_buffers(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield module_name + ("." if module_name else "") + name, buffer

    def buffers(self):
        for _, buffer in self.named_buffers():
            yield buffer

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """Parameters and buffers by dotted name, as ndarrays (shared, not copied)."""
        state = OrderedDict()
        for name, parameter in self.named_parameters():
            state[name] = parameter.data
        for name, buffer in self.named_buffers():
            state[name] = buffer
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into this module's parameters and buffers in place.

        Raises
        ------
        KeyError
            With ``strict``: lists the missing and unexpected keys.
        ValueError
            A key whose shape differs, naming the key and both shapes.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError("load_state_dict: missing keys %s, unexpected keys %s"
                           % (missing, unexpected))
        for name, target in own.items():
            if name not in state_dict:
                continue
            source = np.asarray(state_dict[name].data if isinstance(state_dict[name], Tensor)
                                else state_dict[name])
            if source.shape != target.shape:
                raise ValueError("load_state_dict: %r has shape %s in the checkpoint but %s in "
                                 "the model" % (name, source.shape, target.shape))
            np.copyto(target, source.astype(target.dtype, copy=False))
        return missing, unexpected

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        """Set training mode (True) or evaluation mode (False) recursively."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's gradient (None, or zeros in place)."""
        for parameter in self.parameters():
            if set_to_none:
                parameter.grad = None
            elif parameter.grad is not None:
                parameter.grad.fill(0)

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter."""
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def _cast(self, dtype):
        for parameter in self.parameters():
            parameter.data = parameter.data.astype(dtype)
            parameter.grad = None
        for module in self.modules():
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and buffer.dtype.kind == "f":
                    module._set_buffer(name, buffer.astype(dtype))
        return self

    def float(self):
        """Cast floating parameters and buffers to float32 (in place on the Parameters)."""
        return self._cast(np.float32)

    def double(self):
        """Cast floating parameters and buffers to float64."""
        return self._cast(np.float64)

    def apply(self, function):
        """Call ``function(module)`` on every descendant and self (children first)."""
        for module in self.children():
            module.apply(function)
        function(self)
        return self

    # ------------------------------------------------------------------- call
    def forward(self, *args, **kwargs):
        raise NotImplementedError("%s must define forward" % type(self).__name__)  # abstract

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _forward_then_relu(self):
        """A callable computing ``relu(self(x))`` in one pass, or None (the default).

        ``Sequential`` calls it for this module followed by a plain ReLU.
        """
        return None

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append("(%s): %s" % (name, child))
        head = type(self).__name__ + "(" + self.extra_repr()
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; indexable and iterable."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            modules = modules[0].items()
        else:
            modules = ((str(i), m) for i, m in enumerate(modules))
        for name, module in modules:
            if not isinstance(module, Module):
                raise TypeError("Sequential: %s is not a Module" % type(module).__name__)
            self.add_module(name, module)

    def forward(self, x):
        modules = tuple(self._modules.values())
        index = 0
        while index < len(modules):
            module = modules[index]
            # a layer that can run a following ReLU in its own epilogue does (same
            # values and gradients, one pass over the output fewer)
            if index + 1 < len(modules) and getattr(modules[index + 1], "_plain_relu", False):
                fused = module._forward_then_relu()
                if fused is not None:
                    x = fused(x)
                    index += 2
                    continue
            x = module(x)
            index += 1
        return x

    def __getitem__(self, index):
        values = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*values[index])
        return values[index]

    def __setitem__(self, index, module):
        name = list(self._modules)[index]
        setattr(self, name, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of registered modules."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
