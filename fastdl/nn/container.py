"""Containers, as torch's: ``Sequential``, ``ModuleList``, ``ModuleDict``,
``ParameterList``, ``ParameterDict``.

Children are named ``'0'``, ``'1'``, ... (or by the keys given), so state-dict
keys read ``features.0.weight`` exactly as in torch.
"""
import numbers
from collections import OrderedDict
from collections.abc import Mapping

from fastdl.nn.module import Module, add_indent
from fastdl.nn.parameter import Parameter

__all__ = ["Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"]


def _index(container, index):
    """``index`` (an int, negative allowed) as a position in ``container``."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError("%s indices must be integers or slices, not %s"
                        % (type(container).__name__, type(index).__name__))
    size = len(container)
    if not -size <= index < size:
        raise IndexError("index %d is out of range" % index)
    return int(index) % size


class _Indexed(Module):
    """What Sequential and ModuleList share: integer-named children in order."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._slice(index)
        return list(self._modules.values())[_index(self, index)]

    def __setitem__(self, index, module):
        name = list(self._modules)[_index(self, index)]
        setattr(self, name, module)

    def __delitem__(self, index):
        names = list(self._modules)
        if isinstance(index, slice):
            for name in names[index]:
                del self._modules[name]
        else:
            del self._modules[names[_index(self, index)]]
        self._renumber()

    def _renumber(self):
        modules = list(self._modules.values())
        self._modules.clear()
        for position, module in enumerate(modules):
            self._modules[str(position)] = module

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        """Append every module of an iterable; returns self."""
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        """Insert ``module`` before position ``index``."""
        if not isinstance(module, Module):
            raise TypeError("%s is not a Module subclass" % type(module).__name__)
        modules = list(self._modules.values())
        size = len(modules)
        position = index if index >= 0 else index + size
        if isinstance(self, Sequential) and not 0 <= position <= size:
            raise IndexError("Index out of range: %d" % index)
        modules.insert(max(0, min(position, size)), module)
        self._modules.clear()
        for number, child in enumerate(modules):
            self._modules[str(number)] = child

    def pop(self, index=-1):
        """Remove and return the module at ``index``."""
        module = self[index]
        del self[index]
        return module

    def __dir__(self):
        return [key for key in super().__dir__() if not key.isdigit()]


class Sequential(_Indexed):
    """Modules applied in order: ``Sequential(*modules)`` or ``Sequential(OrderedDict)``.

    Indexing, slicing (a Sequential keeping the names), ``len``, iteration,
    ``append``, ``extend``, ``insert``, ``pop``, ``del`` and ``+`` as in torch.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for position, module in enumerate(args):
                self.add_module(str(position), module)

    def _slice(self, index):
        return type(self)(OrderedDict(list(self._modules.items())[index]))

    def __add__(self, other):
        if not isinstance(other, Sequential):
            raise ValueError("add operator supports only objects of Sequential class, but %s "
                             "is given." % type(other).__name__)
        return Sequential(*self, *other)

    def __iadd__(self, other):
        if not isinstance(other, Sequential):
            raise ValueError("add operator supports only objects of Sequential class, but %s "
                             "is given." % type(other).__name__)
        return self.extend(list(other))

    def forward(self, input):
        modules = tuple(self._modules.values())
        x = input
        index = 0
        while index < len(modules):
            module = modules[index]
            # a layer that can run a following ReLU in its own epilogue does (same
            # values and gradients, one pass over the output fewer); never past a hook
            if index + 1 < len(modules) and getattr(modules[index + 1], "_plain_relu", False) \
                    and not module._has_hooks() and not modules[index + 1]._has_hooks():
                fused = module._forward_then_relu()
                if fused is not None:
                    x = fused(x)
                    index += 2
                    continue
            x = module(x)
            index += 1
        return x


class ModuleList(_Indexed):
    """A list of registered modules (no forward of its own)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _slice(self, index):
        return type(self)(list(self._modules.values())[index])

    def __add__(self, other):
        return ModuleList(list(self) + list(other))

    def __iadd__(self, other):
        return self.extend(other)

    def __repr__(self):
        # torch's: runs of identical children shown once, as "(0-2): 3 x Linear(...)"
        texts = [repr(module) for module in self]
        if not texts:
            return self._get_name() + "()"
        runs = [[0, 0, texts[0]]]
        for position, text in enumerate(texts[1:], 1):
            if text == runs[-1][2]:
                runs[-1][1] = position
            else:
                runs.append([position, position, text])
        lines = []
        for start, end, text in runs:
            if start == end:
                lines.append(add_indent("(%d): %s" % (start, text), 2))
            else:
                lines.append(add_indent("(%d-%d): %d x %s" % (start, end, end - start + 1,
                                                               text), 2))
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward; iterate over it instead")


class ModuleDict(Module):
    """An ordered dict of registered modules, indexed by name."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def clear(self):
        self._modules.clear()

    def update(self, modules):
        """Add ``(name, module)`` pairs from a mapping or an iterable of pairs."""
        items = modules.items() if isinstance(modules, (Mapping, ModuleDict)) else modules
        for position, item in enumerate(items):
            if isinstance(item, (str, bytes)) or len(item) != 2:
                raise ValueError("ModuleDict update sequence element #%d should be a pair "
                                 "(name, module), got %r" % (position, item))
            self[item[0]] = item[1]

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward; index it instead")


class ParameterList(Module):
    """A list of registered Parameters, named ``'0'``, ``'1'``, ..."""

    def __init__(self, values=None):
        super().__init__()
        for value in values or ():
            self.append(value)

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ParameterList(list(self._parameters.values())[index])
        return list(self._parameters.values())[_index(self, index)]

    def __setitem__(self, index, value):
        setattr(self, str(_index(self, index)), _parameter(value))

    def append(self, value):
        setattr(self, str(len(self)), _parameter(value))
        return self

    def extend(self, values):
        for value in values:
            self.append(value)
        return self

    def extra_repr(self):
        return "\n".join("(%s): Parameter containing: [%s of size %s]"
                         % (name, p.dtype, "x".join(str(n) for n in p.shape))
                         for name, p in self._parameters.items())


class ParameterDict(Module):
    """An ordered dict of registered Parameters."""

    def __init__(self, parameters=None):
        super().__init__()
        items = parameters.items() if isinstance(parameters, Mapping) else parameters or ()
        for key, value in items:
            self[key] = value

    def __getitem__(self, key):
        return self._parameters[key]

    def __setitem__(self, key, value):
        self.register_parameter(key, _parameter(value))

    def __delitem__(self, key):
        del self._parameters[key]

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters)

    def __contains__(self, key):
        return key in self._parameters

    def keys(self):
        return self._parameters.keys()

    def items(self):
        return self._parameters.items()

    def values(self):
        return self._parameters.values()


def _parameter(value):
    return value if isinstance(value, Parameter) or value is None else Parameter(value)
