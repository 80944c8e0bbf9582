"""Tensor factories as in torch: ``tensor``, ``as_tensor``, ``from_numpy``,
``zeros``/``ones``/``empty``/``full`` and their ``_like`` forms, ``arange``,
``linspace``, ``eye``, and the random ``rand``/``randn``/``randint``/``randperm``
(and ``_like``).

Every factory takes ``dtype``, ``device`` (the CPU only) and ``requires_grad``
keywords; sizes come as ``zeros(2, 3)`` or ``zeros((2, 3))``. Floating
results default to ``fastdl.get_default_dtype()`` (float32), integer ones to
int64. The random factories draw from fastdl's global generator, so
``fastdl.manual_seed`` makes them repeatable, or from ``generator=`` (a
``fastdl.Generator`` or a ``numpy.random.Generator``). ``empty`` returns zeros: never uninitialised memory.
"""
import numbers

import numpy as np

from fastdl.autograd import GradDtypeError, Tensor, tensor
from fastdl.devices import check_cpu
from fastdl.dtypes import get_default_dtype, resolve_dtype
from fastdl.random import as_numpy_generator

__all__ = ["tensor", "as_tensor", "from_numpy", "zeros", "ones", "empty", "full",
           "zeros_like", "ones_like", "empty_like", "full_like", "arange", "linspace", "eye",
           "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like"]


def _size(op, size):
    """``(2, 3)``, ``[2, 3]`` or ``2, 3`` as a tuple of non-negative ints.

    Raises
    ------
    TypeError
        For a size that is not an int.
    RuntimeError
        For a negative size.
    """
    if not size:
        raise TypeError("%s() missing 1 required positional argument: 'size'" % op)
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    result = []
    for n in size:
        if isinstance(n, Tensor) and n._data.size == 1 and n._data.dtype.kind in "iu":
            n = n.item()
        if isinstance(n, bool) or not isinstance(n, (numbers.Integral, np.integer)):
            raise TypeError("%s(): size must be a tuple of ints, but got an element of type %s"
                            % (op, type(n).__name__))
        result.append(int(n))
    if any(n < 0 for n in result):
        raise RuntimeError("Trying to create tensor with negative dimension %d: %s"
                           % (min(result), result))
    return tuple(result)


def _make(op, array, dtype, device, requires_grad):
    """``array`` as a new leaf of ``dtype`` on the CPU."""
    check_cpu(device, op)
    dtype = resolve_dtype(dtype, op)
    if requires_grad and dtype.kind != "f":
        raise GradDtypeError("%s(): only Tensors of floating point dtype can require "
                             "gradients, got %s" % (op, dtype))
    return Tensor(np.asarray(array, dtype=dtype), requires_grad=requires_grad, dtype=dtype)


def _default_float(dtype):
    return get_default_dtype() if dtype is None else dtype


def _floating_dtype(op, dtype):
    dtype = get_default_dtype() if dtype is None else resolve_dtype(dtype, op)
    if dtype.kind != "f":
        raise RuntimeError("%s(): expected a floating-point dtype, got %s" % (op, dtype))
    return dtype


def _fill_dtype(value):
    """The dtype torch gives ``full(size, value)``."""
    if isinstance(value, (bool, np.bool_)):
        return np.dtype(np.bool_)
    if isinstance(value, (numbers.Integral, np.integer)):
        return np.dtype(np.int64)
    return get_default_dtype()


# ------------------------------------------------------------ from data
def as_tensor(data, dtype=None, device=None):
    """``data`` as a Tensor, sharing memory when it can: a Tensor (of ``dtype``) is
    returned itself, an ndarray of ``dtype`` is wrapped without copying."""
    check_cpu(device, "as_tensor")
    if isinstance(data, Tensor):
        return data if dtype is None else data.to(resolve_dtype(dtype, "as_tensor"))
    if isinstance(data, np.ndarray):
        if dtype is not None:
            dtype = resolve_dtype(dtype, "as_tensor")
            data = data if data.dtype == dtype else data.astype(dtype)
        if data.dtype.kind not in "biuf":
            raise TypeError("as_tensor: cannot make a tensor of dtype %s" % data.dtype)
        return Tensor._wrap(data)
    return tensor(data, dtype=dtype)


def from_numpy(ndarray):
    """A Tensor sharing ``ndarray``'s memory and dtype (writes show in both).

    Raises
    ------
    TypeError
        If ``ndarray`` is not an ndarray of bool, integer or floating type.
    """
    if not isinstance(ndarray, np.ndarray):
        raise TypeError("expected np.ndarray (got %s)" % type(ndarray).__name__)
    if ndarray.dtype.kind not in "biuf":
        raise TypeError("can't convert np.ndarray of type %s. The only supported types are: "
                        "float64, float32, float16, int64, int32, int16, int8, uint8, and "
                        "bool." % ndarray.dtype)
    return Tensor._wrap(ndarray)


# ------------------------------------------------------------ constant fills
def zeros(*size, dtype=None, device=None, requires_grad=False, out=None, layout=None):
    """A tensor of zeros of shape ``size`` (default dtype float32)."""
    shape = _size("zeros", size)
    return _make("zeros", np.zeros(shape), _default_float(dtype), device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False, out=None, layout=None):
    """A tensor of ones of shape ``size``."""
    shape = _size("ones", size)
    return _make("ones", np.ones(shape), _default_float(dtype), device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False, out=None, layout=None,
          memory_format=None):
    """As :func:`zeros` (fastdl never hands out uninitialised memory)."""
    shape = _size("empty", size)
    return _make("empty", np.zeros(shape), _default_float(dtype), device, requires_grad)


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False, out=None,
         layout=None):
    """A tensor of shape ``size`` filled with ``fill_value`` (its dtype: bool, int64
    or the default float dtype, unless ``dtype`` is given)."""
    shape = _size("full", (size,) if isinstance(size, (tuple, list)) else (size,))
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    dtype = _fill_dtype(fill_value) if dtype is None else dtype
    return _make("full", np.full(shape, fill_value), dtype, device, requires_grad)


def _like(op, input, dtype):   # noqa: A002 (torch's argument name)
    if not isinstance(input, (Tensor, np.ndarray)):
        raise TypeError("%s(): argument 'input' must be a Tensor, not %s"
                        % (op, type(input).__name__))
    return np.shape(input), (input.dtype if dtype is None else dtype)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False, layout=None,   # noqa
               memory_format=None):
    """Zeros of ``input``'s shape and dtype."""
    shape, dtype = _like("zeros_like", input, dtype)
    return _make("zeros_like", np.zeros(shape), dtype, device, requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad=False, layout=None,   # noqa
              memory_format=None):
    """Ones of ``input``'s shape and dtype."""
    shape, dtype = _like("ones_like", input, dtype)
    return _make("ones_like", np.ones(shape), dtype, device, requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad=False, layout=None,   # noqa
               memory_format=None):
    """As :func:`zeros_like`."""
    shape, dtype = _like("empty_like", input, dtype)
    return _make("empty_like", np.zeros(shape), dtype, device, requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False,   # noqa
              layout=None, memory_format=None):
    """``fill_value`` in ``input``'s shape and dtype."""
    shape, dtype = _like("full_like", input, dtype)
    return _make("full_like", np.full(shape, fill_value), dtype, device, requires_grad)


# ------------------------------------------------------------------ ranges
def arange(start=0, end=None, step=1, *, dtype=None, device=None, requires_grad=False,
           out=None, layout=None):
    """``start, start + step, ...`` up to (not including) ``end``; ``arange(n)`` is
    ``0 .. n-1``. int64 when every bound is an int, else the default float dtype.

    Raises
    ------
    RuntimeError
        A zero step, or a step whose sign cannot reach ``end``.
    """
    if end is None:
        start, end = 0, start
    bounds = [b.item() if isinstance(b, Tensor) else b for b in (start, end, step)]
    for bound in bounds:
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            raise TypeError("arange(): bounds and step must be numbers, got %r" % (bound,))
    start, end, step = bounds
    if step == 0:
        raise RuntimeError("arange(): step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError("arange(): upper bound and larger bound inconsistent with step sign")
    integral = all(isinstance(b, (numbers.Integral, np.integer)) for b in bounds)
    if dtype is None:
        dtype = np.int64 if integral else get_default_dtype()
    count = int(np.ceil((end - start) / step))
    values = np.arange(count, dtype=np.float64) * step + start if not integral else \
        np.arange(start, end, step, dtype=np.int64)
    return _make("arange", values, dtype, device, requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False, out=None,
             layout=None):
    """``steps`` evenly spaced values from ``start`` to ``end`` (both included)."""
    if isinstance(steps, bool) or not isinstance(steps, (numbers.Integral, np.integer)):
        raise TypeError("linspace(): steps must be an int, got %r" % (steps,))
    if steps < 0:
        raise RuntimeError("linspace(): number of steps must be non-negative")
    values = np.linspace(float(start), float(end), int(steps))
    return _make("linspace", values, _default_float(dtype), device, requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False, out=None, layout=None):
    """The ``n`` x ``m`` identity matrix (``m`` = ``n`` by default)."""
    rows, columns = _size("eye", (n, n if m is None else m))
    return _make("eye", np.eye(rows, columns), _default_float(dtype), device,
                 requires_grad)


# ------------------------------------------------------------------ random
def _draw(op, size, dtype, device, requires_grad, generator, draw):
    shape = _size(op, size)
    dtype = _floating_dtype(op, dtype)
    generator = as_numpy_generator(generator)
    working = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)
    return _make(op, draw(generator, shape, working), dtype, device, requires_grad)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False, out=None,
         layout=None):
    """Uniform draws from [0, 1) of shape ``size``."""
    return _draw("rand", size, dtype, device, requires_grad, generator,
                 lambda g, shape, dtype: g.random(shape, dtype=dtype))


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False, out=None,
          layout=None):
    """Standard normal draws of shape ``size``."""
    return _draw("randn", size, dtype, device, requires_grad, generator,
                 lambda g, shape, dtype: g.standard_normal(shape, dtype=dtype))


def rand_like(input, *, dtype=None, device=None, requires_grad=False, generator=None,   # noqa
              layout=None, memory_format=None):
    shape, dtype = _like("rand_like", input, dtype)
    return rand(shape, generator=generator, dtype=dtype, device=device,
                requires_grad=requires_grad)


def randn_like(input, *, dtype=None, device=None, requires_grad=False, generator=None,   # noqa
               layout=None, memory_format=None):
    shape, dtype = _like("randn_like", input, dtype)
    return randn(shape, generator=generator, dtype=dtype, device=device,
                 requires_grad=requires_grad)


def _integers(op, low, high, shape, generator, dtype, device, requires_grad):
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (numbers.Integral, np.integer)):
            raise TypeError("%s(): low and high must be ints, got %r" % (op, bound))
    if low >= high:
        raise RuntimeError("random_ expects 'from' to be less than 'to', but got from=%d >= "
                           "to=%d" % (low, high))
    generator = as_numpy_generator(generator)
    values = generator.integers(low, high, size=shape, dtype=np.int64)
    return _make(op, values, np.int64 if dtype is None else dtype, device, requires_grad)


def randint(*args, size=None, generator=None, dtype=None, device=None, requires_grad=False,
            out=None, layout=None):
    """Integers drawn uniformly from [low, high): ``randint(high, size)`` or
    ``randint(low, high, size)`` (int64 unless ``dtype`` is given)."""
    args = list(args)
    if size is None:
        if not args:
            raise TypeError("randint() missing required argument 'size'")
        size = args.pop()
    if len(args) == 1:
        low, high = 0, args[0]
    elif len(args) == 2:
        low, high = args
    else:
        raise TypeError("randint() takes (high, size) or (low, high, size), got %d positional "
                        "arguments" % (len(args) + 1))
    shape = _size("randint", (size,) if isinstance(size, (tuple, list)) else (size,))
    return _integers("randint", low, high, shape, generator, dtype, device, requires_grad)


def randint_like(input, low=0, high=None, *, dtype=None, device=None,   # noqa: A002
                 requires_grad=False, generator=None, layout=None, memory_format=None):
    """``randint`` in ``input``'s shape and dtype: ``randint_like(x, high)`` or
    ``randint_like(x, low, high)``."""
    if high is None:
        low, high = 0, low
    shape, dtype = _like("randint_like", input, dtype)
    return _integers("randint_like", low, high, shape, generator, dtype, device, requires_grad)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False, out=None,
             layout=None):
    """A random permutation of ``0 .. n-1`` (int64)."""
    (n,) = _size("randperm", (n,))
    generator = as_numpy_generator(generator)
    return _make("randperm", generator.permutation(n).astype(np.int64),
                 np.int64 if dtype is None else dtype, device, requires_grad)
