"""InferencePlan: a validated op graph over NumPy buffers, safe to call from many threads.

Construction checks every op against the plan's input shape (``_opgraph.validate``), so
a plan loaded from a file (``planfile``) can never drive a kernel out of bounds. Each
call runs the program for its batch size (``_schedule.Scheduler``) on a set of
intermediate buffers taken from a pool (or made), so concurrent callers never share
buffers; the pool keeps at most ``max_shapes`` batch sizes (least recently used go),
so memory stays flat when the batch size varies.
"""
import collections
import threading

import numpy as np

from fastdl.deploy._opgraph import ACTIVATIONS, MAX_INT, OPS, check_outputs, fail, validate
from fastdl.deploy._schedule import Scheduler
from fastdl.deploy.planfile import (FORMAT_VERSION, MAX_OPS, MAX_PLAN_BYTES,
                                    MAX_PLAN_HEADER_BYTES, read_plan, write_plan)

__all__ = ["InferencePlan", "ACTIVATIONS", "FORMAT_VERSION", "MAX_INT", "MAX_OPS",
           "MAX_PLAN_BYTES", "MAX_PLAN_HEADER_BYTES", "OPS"]

# the free buffer sets kept for one batch size (callers beyond them make new ones)
_FREE_SETS = 16


class InferencePlan:
    """A compiled, eval-only model: ``plan(x)`` returns its output (the logits) as an
    ndarray, or with ``outputs`` a tuple of ndarrays.

    Parameters
    ----------
    ops : list of dict
        From ``fastdl.deploy.compile`` or a plan file.
    tensors : dict of str to ndarray
    input_shape : tuple (C, H, W)
        The batch size may vary from call to call; the rest is fixed.
    max_shapes : int
        Input shapes whose buffers are kept.
    max_bytes : int, optional
        Refuse (ValueError) a plan whose call at batch 1 would hold more bytes than
        this (``call_bytes``); None: no limit. ``load`` gives ``MAX_PLAN_BYTES``.
    dtype : {None, 'float32', 'float64'}
        The dtype of a plan without tensors (default float32); one with tensors has
        theirs, and a different ``dtype`` is refused.
    outputs : list of int, optional
        The values a call returns, as a tuple in this order (value ``i + 1`` is op
        ``i``'s output; an id may repeat; a 1-element list still returns a tuple).
        None: the last op's value alone, as an ndarray.

    Attributes
    ----------
    outputs : list of int or None
    call_bytes : int
        An upper estimate of the bytes one call at batch 1 holds: its input, every
        intermediate and output value, the copies its kernels make and the prepared
        weights (the values scale with the batch size; the weights, too, are extra).
    """

    def __init__(self, ops, tensors, input_shape, max_shapes=4, max_bytes=None, dtype=None,
                 outputs=None):
        self.input_shape = tuple(int(n) for n in input_shape)
        floats = {np.dtype(np.float32), np.dtype(np.float64)}
        if dtype is not None and dtype not in ("float32", "float64") and dtype not in floats:
            fail("dtype must be float32 or float64, got %r" % (dtype,))
        dtypes = {a.dtype for a in tensors.values()} or {np.dtype(dtype or np.float32)}
        if len(dtypes) != 1 or dtypes & floats != dtypes or dtype is not None and (
                dtypes != {np.dtype(dtype)}):
            fail("tensors must share one float dtype%s, got %s" % (
                "" if dtype is None else " (%s)" % np.dtype(dtype), sorted(map(str, dtypes))))
        self.dtype = dtypes.pop()
        self.shapes, self.call_bytes = validate(ops, tensors, self.input_shape, self.dtype,
                                                max_bytes, outputs)
        self.ops = ops
        self.outputs = check_outputs(outputs, len(ops))
        self.tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        self._scheduler = Scheduler(self.ops, self.tensors, self.shapes, self.dtype,
                                    self.outputs)
        self._shapes = collections.OrderedDict()   # batch size: (program, free buffer sets)
        self._lock = threading.Lock()
        self.max_shapes = int(max_shapes)

    # ---------------------------------------------------------------- running
    def _program(self, batch):
        """The steps for this batch size and the borders of the buffers stored with one
        (``Scheduler.program``)."""
        return self._scheduler.program(batch)

    def _take(self, batch):
        """The program and a free buffer set for this batch size, made on first use.

        Both are kept for the ``max_shapes`` most recently used batch sizes, under
        one lock taken once per call.
        """
        with self._lock:
            entry = self._shapes.get(batch)
            if entry is not None:
                self._shapes.move_to_end(batch)
                (program, borders), free = entry
                return program, free.pop() if free else self._scheduler.buffers(batch,
                                                                                borders)
        program = self._program(batch)
        with self._lock:
            program, borders = self._shapes.setdefault(batch, (program, []))[0]
            while len(self._shapes) > self.max_shapes:
                self._shapes.popitem(last=False)
        return program, self._scheduler.buffers(batch, borders)

    def _release(self, batch, buffers):
        with self._lock:
            entry = self._shapes.get(batch)
            if entry is not None and len(entry[1]) < _FREE_SETS:
                entry[1].append(buffers)

    def run(self, x):
        """Run the plan on ``x (N, C, H, W)``; returns a new ndarray, or where the plan
        has ``outputs`` a tuple of new ndarrays, one per entry."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(getattr(x, "array", x))
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError("InferencePlan: expected input (N, %d, %d, %d), got shape %s"
                             % (self.input_shape + (x.shape,)))
        x = np.ascontiguousarray(x, dtype=self.dtype)
        batch = x.shape[0]
        program, buffers = self._take(batch)
        try:
            values = [x] + [None] * len(self.ops)
            for step in program:
                step(values, buffers)
            if self.outputs is None:
                return np.array(values[-1], copy=True)
            return tuple(np.array(values[value], copy=True) for value in self.outputs)
        finally:
            self._release(batch, buffers)

    __call__ = run

    def warmup(self):
        """Run once at batch 1 so every kernel is compiled/loaded before the first request."""
        self.run(np.zeros((1,) + self.input_shape, dtype=self.dtype))
        return self

    # ------------------------------------------------------------------- files
    def save(self, path):
        """Write the plan (weights + JSON op list) to one safetensors file, atomically."""
        write_plan(path, self.ops, self.tensors, self.input_shape, self.dtype, self.outputs)

    @classmethod
    def load(cls, path, warmup=False, max_bytes=MAX_PLAN_BYTES):
        """Read and validate a plan file; nothing in it is executed or unpickled.

        Every size the file declares is checked before anything is allocated: its
        header (``MAX_PLAN_HEADER_BYTES``), op count (``MAX_OPS``), every int in it
        (``MAX_INT``), the weights against the file's own bytes, and the memory a call
        at batch 1, ``warmup``'s, holds (``call_bytes``) against ``max_bytes``.

        Parameters
        ----------
        path : str or os.PathLike
        warmup : bool
            Run the plan once at batch 1 before returning it.
        max_bytes : int or None
            Refuse a plan whose call at batch 1 would hold more bytes than this
            (default ``MAX_PLAN_BYTES``, 256 MiB); raise it for a trusted larger plan.
            None: no limit.

        Raises
        ------
        ValueError
            A truncated, corrupted or hostile file, an unknown op, tensors whose
            shapes or dtype disagree with the plan, or a plan above the limits.
        """
        plan = read_plan(path, cls, max_bytes)
        return plan.warmup() if warmup else plan
