"""``Module``: the base of layers and models, with torch's registration rules.

A Module files its Parameters, buffers and sub-modules in three ordered
registries (``_parameters``, ``_buffers``, ``_modules``), as torch does:
``__setattr__`` files a value by its type and ``__delattr__`` removes it. The
registries are the truth and mirror their entries into the instance dict
(``_Registry``), so ``module.weight`` reads at plain-attribute speed and code
that edits ``model._modules`` directly is seen by traversal, ``state_dict`` and
the forward alike. Buffers are ndarrays (the layers' running statistics) or
Tensors (as a user registers them). State dicts: ``nn/_state_dict.py``.
"""
from collections import OrderedDict

import numpy as np

from fastdl.autograd import Tensor
from fastdl.devices import check_cpu, parse_to_arguments
from fastdl.dtypes import resolve_dtype
from fastdl.nn._state_dict import StateDictError, StateDictMixin  # noqa: F401
from fastdl.nn.hooks import RemovableHandle
from fastdl.nn.parameter import Parameter
from fastdl.tensor_deferred import materialize_all, scope as _deferral

__all__ = ["Module", "RemovableHandle"]


class _Registry(OrderedDict):
    """A registry (``_parameters``, ``_buffers``, ``_modules``) that mirrors its entries
    into its module's instance dict.

    Reading ``module.weight`` is then a plain attribute lookup; through
    ``__getattr__`` (torch's way) each read cost ~0.5 us, a few percent of a small
    network's forward. Every change to the registry, including direct edits such as
    ``model._modules['fc'] = layer``, is mirrored, so the registry stays the truth.
    """

    def __init__(self, owner_dict=None, items=()):
        super().__init__()
        self._owner_dict = {} if owner_dict is None else owner_dict
        for name, value in items:
            self[name] = value

    def __setitem__(self, name, value):
        super().__setitem__(name, value)
        self._owner_dict[name] = value

    def __delitem__(self, name):
        super().__delitem__(name)
        self._owner_dict.pop(name, None)

    def pop(self, name, *default):
        if name in self:
            self._owner_dict.pop(name, None)
        return super().pop(name, *default)

    def popitem(self, last=True):
        name, value = super().popitem(last)
        self._owner_dict.pop(name, None)
        return name, value

    def clear(self):
        for name in self:
            self._owner_dict.pop(name, None)
        super().clear()

    def update(self, *args, **kwargs):
        for name, value in OrderedDict(*args, **kwargs).items():
            self[name] = value

    def setdefault(self, name, default=None):
        if name not in self:
            self[name] = default
        return self[name]


_REGISTRIES = ("_parameters", "_buffers", "_modules")


def add_indent(text, spaces):
    """``text`` with every line after the first indented by ``spaces`` (nested reprs)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _check_name(kind, name):
    if not isinstance(name, str):
        raise TypeError("%s name should be a string, got %s" % (kind, type(name).__name__))
    if "." in name:
        raise KeyError('%s name can\'t contain ".", got: %s' % (kind, name))
    if name == "":
        raise KeyError('%s name can\'t be empty string ""' % kind)


class Module(StateDictMixin):
    """Base class of layers: registers Parameters, sub-modules and buffers by attribute.

    Subclasses call ``super().__init__()`` first and define ``forward``.
    """

    _version = 1

    def __init__(self):
        for registry in _REGISTRIES:
            object.__setattr__(self, registry, _Registry(self.__dict__))
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----------------------------------------------------------- registration
    def _require_init(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign %s before Module.__init__() call" % what)

    def _forget(self, name, keep):
        """Remove ``name`` from the instance dict and every registry but ``keep`` (where a
        reassigned name keeps its place, as in torch)."""
        self.__dict__.pop(name, None)
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def _replace_registry(self, name, values):
        """``module._modules = OrderedDict(...)`` (as torch's own code does): the new
        entries are mirrored and the old ones' attributes dropped."""
        self.__dict__[name].clear()
        object.__setattr__(self, name, _Registry(self.__dict__, values.items()))

    def __setstate__(self, state):
        # a copy (copy.deepcopy) gets new registries bound to its own instance dict
        self.__dict__.update(state)
        for registry in _REGISTRIES:
            object.__setattr__(self, registry, _Registry(self.__dict__,
                                                         list(state[registry].items())))

    def __setattr__(self, name, value):
        registries = self.__dict__
        if name in _REGISTRIES and name in registries:
            self._replace_registry(name, value)
        elif isinstance(value, Parameter):
            self._require_init("parameters")
            self._forget(name, self._parameters)
            self.register_parameter(name, value)
        elif "_parameters" in registries and name in self._parameters:
            if value is not None:
                raise TypeError("cannot assign '%s' as parameter '%s' (fastdl.nn.Parameter "
                                "or None expected)" % (type(value).__name__, name))
            self._parameters[name] = None
        elif isinstance(value, Module):
            self._require_init("module")
            self._forget(name, self._modules)
            self._modules[name] = value
        elif "_modules" in registries and name in self._modules:
            if value is not None:
                raise TypeError("cannot assign '%s' as child module '%s' (fastdl.nn.Module "
                                "or None expected)" % (type(value).__name__, name))
            self._modules[name] = None
        elif "_buffers" in registries and name in self._buffers:
            if value is not None and not isinstance(value, (Tensor, np.ndarray)):
                raise TypeError("cannot assign '%s' as buffer '%s' (Tensor, ndarray or None "
                                "expected)" % (type(value).__name__, name))
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # called only when normal lookup fails: registered names (each forward reads
        # its parameters here, so no loop and no method calls)
        registries = self.__dict__
        if "_parameters" in registries:
            parameters = registries["_parameters"]
            if name in parameters:
                return parameters[name]
            buffers = registries["_buffers"]
            if name in buffers:
                return buffers[name]
            modules = registries["_modules"]
            if name in modules:
                return modules[name]
        raise AttributeError("'%s' object has no attribute '%s'" % (type(self).__name__, name))

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._buffers:
            del self._buffers[name]
            self._non_persistent_buffers_set.discard(name)
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    def _taken(self, name, registry):
        """Whether ``name`` is an attribute other than an entry of ``registry`` (torch's
        ``hasattr(self, name) and name not in registry``)."""
        return name not in registry and (name in self.__dict__ or hasattr(type(self), name))

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter or None) under ``name``.

        Raises
        ------
        KeyError
            ``name`` is empty, dotted, or already an attribute that is no parameter.
        TypeError
            ``param`` is neither a Parameter nor None.
        """
        self._require_init("parameters")
        _check_name("parameter", name)
        if self._taken(name, self._parameters):
            raise KeyError("attribute '%s' already exists" % name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError("cannot assign '%s' object to parameter '%s' (fastdl.nn.Parameter "
                            "or None required)" % (type(param).__name__, name))
        if param is not None and not param.is_leaf:
            raise ValueError("Cannot assign non-leaf Tensor to parameter '%s'" % name)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Register a non-trainable Tensor or ndarray (e.g. running statistics).

        Persistent buffers are saved in ``state_dict``; ``persistent=False`` ones are not.
        """
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        _check_name("buffer", name)
        if self._taken(name, self._buffers):
            raise KeyError("attribute '%s' already exists" % name)
        if tensor is not None and not isinstance(tensor, (Tensor, np.ndarray)):
            raise TypeError("cannot assign '%s' object to buffer '%s' (Tensor, ndarray or None "
                            "required)" % (type(tensor).__name__, name))
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def _set_buffer(self, name, array):
        self._buffers[name] = array

    def add_module(self, name, module):
        """Register ``module`` (a Module or None) as a child called ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError("%s is not a Module subclass" % type(module).__name__)
        _check_name("module", name)
        if self._taken(name, self._modules):
            raise KeyError("attribute '%s' already exists" % name)
        self._modules[name] = module

    register_module = add_module

    def _get_by_path(self, target, kind):
        module = self
        parts = target.split(".") if target else []
        for index, part in enumerate(parts):
            if not hasattr(module, part):
                raise AttributeError("%s has no attribute `%s`" % (module._get_name(), part))
            value = getattr(module, part)
            if index < len(parts) - (kind != "module") and not isinstance(value, Module):
                raise AttributeError("`%s` is not an nn.Module" % part)
            module = value
        return module

    def get_submodule(self, target):
        """The sub-module at dotted path ``target`` (``''``: self); AttributeError if none."""
        return self._get_by_path(target, "module")

    def get_parameter(self, target):
        """The Parameter at dotted path ``target`` (``'layer1.0.conv1.weight'``)."""
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._parameters:
            raise AttributeError("`%s` is not an nn.Parameter" % name)
        return module._parameters[name]

    def get_buffer(self, target):
        """The buffer at dotted path ``target`` (``'bn1.running_mean'``)."""
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._buffers:
            raise AttributeError("`%s` is not a buffer" % name)
        return module._buffers[name]

    # -------------------------------------------------------------- traversal
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """Yield ``(dotted name, module)`` for self and every descendant, each once."""
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        if remove_duplicate:
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, prefix + ("." if prefix else "") + name,
                                                remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry, prefix, recurse, remove_duplicate):
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                   if recurse else [(prefix, self)])
        seen = set()
        for module_name, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield module_name + ("." if module_name else "") + name, value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """Yield ``(dotted name, Parameter)``, a shared parameter once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, parameter in self.named_parameters(recurse=recurse):
            yield parameter

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        """Yield ``(dotted name, buffer)`` (persistent or not)."""
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        """Set training mode (True) or evaluation mode (False), self and children."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's gradient (None, or zeros in place)."""
        for parameter in self.parameters():
            if set_to_none:
                parameter.grad = None
            elif parameter.grad is not None:
                parameter.grad.zero_()

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter."""
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant and then self; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def _cast(self, dtype):
        for parameter in self.parameters():
            parameter.data = parameter.array.astype(dtype)
            parameter.grad = None
        for module in self.modules():
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and buffer.dtype.kind == "f":
                    module._set_buffer(name, buffer.astype(dtype))
        return self

    def to(self, *args, **kwargs):
        """Cast floating parameters and buffers to a dtype, as ``torch.nn.Module.to``.

        ``to(dtype)``, ``to(device, dtype=None)`` or ``to(tensor)`` (its dtype);
        the device can only be the CPU. Nothing changes (gradients are kept)
        when every floating parameter and buffer already has the dtype.

        Returns
        -------
        Module
            self.

        Raises
        ------
        RuntimeError
            For a device other than the CPU ("cuda", "mps", ...).
        TypeError
            For a dtype that is not float32 or float64.
        """
        dtype, _, _ = parse_to_arguments("Module.to", args, kwargs)
        if dtype is None:
            return self
        if dtype.kind != "f":
            raise TypeError("nn.Module.to only accepts floating point dtypes, but got desired "
                            "dtype=%s" % dtype)
        if dtype == np.float16:
            return self.half()
        arrays = list(self.parameters()) + [b for _, b in self.named_buffers() if b is not None]
        if all(a.dtype == dtype for a in arrays if a.dtype.kind == "f"):
            return self
        return self._cast(dtype)

    def cpu(self):
        """Self: parameters always live on the CPU."""
        return self

    def cuda(self, device=None):
        """Raises RuntimeError, as ``Tensor.cuda``: fastdl has no CUDA devices."""
        check_cpu("cuda" if device is None else device, "cuda")
        return self

    def mps(self):
        """Raises RuntimeError, as ``Tensor.to("mps")``: fastdl runs on the CPU only."""
        check_cpu("mps", "mps")
        return self

    def type(self, dst_type):
        """Cast floating parameters and buffers to ``dst_type`` (a float dtype, or its
        name as torch's ``"torch.float64"``), as :meth:`to`; returns self."""
        return self.to(resolve_dtype(dst_type, "Module.type"))

    def share_memory(self):
        """Self: parameters are ordinary process memory, shared with forked workers."""
        return self

    def float(self):
        """Cast floating parameters and buffers to float32 (in place on the Parameters)."""
        return self._cast(np.float32)

    def double(self):
        """Cast floating parameters and buffers to float64."""
        return self._cast(np.float64)

    def half(self):
        """Raises TypeError: fastdl's kernels compute in float32 and float64 only."""
        raise TypeError("%s.half(): float16 parameters are not supported (fastdl computes in "
                        "float32 and float64); keep the model in float32"
                        % type(self).__name__)

    # ------------------------------------------------------------------- call
    def forward(self, *args, **kwargs):
        raise NotImplementedError("Module [%s] is missing the required \"forward\" function"
                                  % type(self).__name__)  # abstract

    def __call__(self, *args, **kwargs):
        # ops inside a forward may defer a conv's epilogue (tensor_deferred); nothing
        # deferred outlives the outermost call
        depth = _deferral.depth
        _deferral.depth = depth + 1
        try:
            if self._forward_pre_hooks or self._forward_hooks:
                return self._call_with_hooks(args, kwargs)
            return self.forward(*args, **kwargs)
        finally:
            _deferral.depth = depth
            if depth == 0 and _deferral.live:
                materialize_all()

    def _call_with_hooks(self, args, kwargs):
        for hook, with_kwargs in tuple(self._forward_pre_hooks.values()):
            if with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    args, kwargs = result
                continue
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook, with_kwargs in tuple(self._forward_hooks.values()):
            result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args,
                                                                                output)
            if result is not None:
                output = result
        return output

    def _add_hook(self, hooks, hook, prepend, with_kwargs):
        handle = RemovableHandle(hooks)
        hooks[handle.id] = (hook, bool(with_kwargs))
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(module, args)`` before each forward; a non-None result replaces
        ``args`` (a single value is wrapped in a tuple). With ``with_kwargs`` it is
        ``hook(module, args, kwargs) -> None or (args, kwargs)``.

        Returns
        -------
        RemovableHandle
        """
        return self._add_hook(self._forward_pre_hooks, hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(module, args, output)`` (``with_kwargs``: ``hook(module, args,
        kwargs, output)``) after each forward; a non-None result replaces the output.

        Returns
        -------
        RemovableHandle
        """
        return self._add_hook(self._forward_hooks, hook, prepend, with_kwargs)

    def has_forward_hooks(self):
        """Whether a forward hook or forward pre-hook is registered on this module
        itself (not on its children): one may change what a call returns."""
        return bool(self._forward_pre_hooks or self._forward_hooks)

    _has_hooks = has_forward_hooks

    def _forward_then_relu(self):
        """A callable computing ``relu(self(x))`` in one pass, or None (the default).

        ``Sequential`` calls it for this module followed by a plain ReLU.
        """
        return None

    # ------------------------------------------------------------------- repr
    def _get_name(self):
        return type(self).__name__

    def extra_repr(self):
        """The layer's settings, shown inside its ``repr`` (override in layers)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = ["(%s): %s" % (name, add_indent(repr(module), 2))
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"
