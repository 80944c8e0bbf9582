"""The program of an inference plan: the steps a call runs at one batch size.

``Scheduler(ops, tensors, shapes, dtype, outputs)`` turns a validated op graph (``_opgraph``)
into, for each batch size, a list of steps ``step(values, buffers)`` over one caller's
intermediate buffers (a ``BufferSet``) and the layout of those buffers:

* each op's kernel prepared once (tile, thread count, packed weights: ``_prepare``);
* consecutive direct convs as one chain run in one parallel region (``_chain``), a 2x2
  max pool after one computed in its epilogue (``_pooled``), and at batch 1 a
  classifier head (``_head``) or from ``dense.PANEL_ROWS`` rows the dense layers after
  the chain (``_dense_tail``) run by the chain too;
* the buffers the chain's convs read in place stored inside zero borders, or as phase
  planes (``_borders``), so that those convs make no padded copy;
* consecutive pointwise (1x1) and depthwise convs as one separable chain, one parallel
  region (``_separable``, ``kernels.pointwise``: a MobileNet's inverted residual blocks),
  with the classifier head after it (global average pool, flatten, linear:
  ``_separable_tail``); an average pool whose window is the whole map runs as the
  global mean.

A value the plan returns (one of its ``outputs``) counts as read by someone outside the
chain: never computed away by a fusion, and never stored with a border.
"""
import collections

import numpy as np

from fastdl import runtime
from fastdl._checks import pair
from fastdl.deploy import _graph_ops
from fastdl.kernels import conv as conv_kernels
from fastdl.kernels import dense as dense_kernels
from fastdl.kernels import direct as direct_kernels
from fastdl.kernels import pointwise as pointwise_kernels
from fastdl.kernels import pool as pool_kernels


class BufferSet(list):
    """One caller's intermediate buffers, by op index, and the conv chains prepared on
    them (by their first conv's index), which live and go with the buffers."""
    __slots__ = ("chains",)

    def __init__(self):
        super().__init__()
        self.chains = {}


class Scheduler:
    """The steps of a call at each batch size, for a validated op graph.

    Parameters
    ----------
    ops : list of dict
    tensors : dict of str to ndarray
        C-contiguous, of ``dtype``.
    shapes : dict of int to tuple
        Every value's shape at batch 1 (``_opgraph.validate``).
    dtype : numpy.dtype
    outputs : list of int, optional
        The values a call returns; None: the last op's.
    """

    def __init__(self, ops, tensors, shapes, dtype, outputs=None):
        self.ops, self.tensors, self.shapes, self.dtype = ops, tensors, shapes, dtype
        returned = [len(ops)] if outputs is None else outputs
        # value id: how many times an op reads it, plus one where the plan returns it
        self._readers = collections.Counter(
            [value for op in ops for value in op["inputs"]] + sorted(set(returned)))
        self._returned = set(returned)

    def _prepare(self, index, batch):
        """Op ``index`` as ``step(values, buffer) -> value`` for this batch size, its
        kernel's tile, thread count and packed weights prepared once; a direct conv
        comes back as its ``direct.ForwardRunner`` instead, to be chained."""
        op = self.ops[index]
        kind = op["op"]
        weights = {role: self.tensors[name] for role, name in op.get("weights", {}).items()}
        weight, bias = weights.get("weight"), weights.get("bias")
        slope = op.get("negative_slope")
        source = op["inputs"][0]
        shape = (batch,) + tuple(self.shapes[source][1:])
        if kind in _graph_ops.OPS:
            return self._graph_step(op)
        if kind == "conv2d":
            run = conv_kernels.conv2d_runner(
                shape, weight, bias, tuple(op["stride"]), tuple(op["padding"]),
                tuple(op["dilation"]), op["groups"], slope)
            if isinstance(run, direct_kernels.ForwardRunner):
                return run
            residual = op["inputs"][1] if len(op["inputs"]) > 1 else None
            return lambda values, buffer: run(values[source], buffer, None if residual is None
                                              else values[residual])
        if kind == "conv_transpose2d":
            return lambda values, buffer: conv_kernels.conv_transpose2d_forward(
                values[source], weight, bias, op["stride"], op["padding"],
                op["output_padding"], op["groups"], op["dilation"])
        if kind == "linear":
            layer = dense_kernels.LinearRunner(weight, bias, slope)
            return lambda values, buffer: layer(values[source], buffer)
        if kind in ("max_pool2d", "adaptive_avg_pool2d"):
            run = (pool_kernels.max_pool2d_runner(shape, op["kernel_size"], op["stride"],
                                                  op["padding"], op["ceil_mode"])
                   if kind == "max_pool2d" else
                   pool_kernels.adaptive_avg_pool2d_runner(shape, tuple(op["output_size"])))
            return lambda values, buffer: run(values[source], buffer)
        if kind == "avg_pool2d" and _global(op, shape):
            # a window over the whole map: the mean of each plane, in one pass
            run = pool_kernels.adaptive_avg_pool2d_runner(shape, (1, 1))
            return lambda values, buffer: run(_contiguous(values[source]), buffer)
        if kind == "avg_pool2d":
            return lambda values, buffer: pool_kernels.avg_pool2d_forward(
                values[source], op["kernel_size"], op["stride"], op["padding"],
                op["ceil_mode"], op["count_include_pad"])
        if kind == "flatten":
            return lambda values, buffer: values[source].reshape(
                values[source].shape[:op["start_dim"]] + (-1,))
        if kind == "affine_channels":
            broadcast = (1, -1) + (1,) * (len(shape) - 2)
            scale, shift = weights["scale"].reshape(broadcast), weights["shift"].reshape(
                broadcast)
            return lambda values, buffer: values[source] * scale + shift
        if kind == "pad2d":
            from fastdl.kernels import pad as pad_kernels
            top, bottom, left, right = op["padding"]
            widths, mode = ((top, bottom), (left, right)), op["mode"]
            return lambda values, buffer: pad_kernels.pad_forward(values[source], widths, mode)
        if kind == "prelu":
            from fastdl.kernels import elementwise
            return lambda values, buffer: elementwise.prelu_forward(values[source],
                                                                    weights["weight"])
        function = _activation(op)
        return lambda values, buffer: function(values[source])

    def _graph_step(self, op):
        """A graph op (``_graph_ops``) as ``step(values, buffer) -> value``."""
        function = _graph_ops.step(op, [self.shapes[i] for i in op["inputs"]], self.tensors)
        inputs = op["inputs"]
        if len(inputs) == 1:
            source, = inputs
            return lambda values, buffer: function(values[source])
        return lambda values, buffer: function(*[values[i] for i in inputs])

    def _head(self, runs, batch):
        """The ops of a classifier head right after the chain ``runs`` — a global average
        pool of its last output (``_global_pool``), a flatten and a linear layer, none
        read by anything else — as (pool, flatten, linear) op indices; None where there
        is none, or the batch is large enough for the dense kernels
        (``dense.PANEL_ROWS``) to pay."""
        pool = runs[-1][2] + 1
        if batch >= dense_kernels.PANEL_ROWS or len(runs) < 2:
            return None
        ops = self.ops[pool:pool + 3]
        if len(ops) < 3 or [op["op"] for op in ops[1:]] != ["flatten", "linear"]:
            return None
        if (not self._global_pool(pool, batch) or ops[1]["start_dim"] != 1
                or [op["inputs"] for op in ops] != [[pool], [pool + 1], [pool + 2]]):
            return None
        if any(self._readers[value] != 1 for value in (pool, pool + 1, pool + 2)):
            return None
        return pool, pool + 1, pool + 2

    def _global_pool(self, index, batch):
        """Whether op ``index`` is a global average pool: adaptive to 1x1, or an average
        pool whose window is its whole input (``_global``)."""
        op = self.ops[index]
        if op["op"] == "adaptive_avg_pool2d":
            return list(op["output_size"]) == [1, 1]
        return op["op"] == "avg_pool2d" and _global(
            op, (batch,) + tuple(self.shapes[op["inputs"][0]][1:]))

    def _dense_tail(self, runs, batch):
        """The ops after the chain ``runs`` that it can run as dense layers in its own
        parallel region: a flatten of its last output, then consecutive linear layers
        each reading the one before (a LeNet's classifier), as (flatten, [(linear,
        LinearRunner)]); None where there are none, or the packed float32 kernel does
        not apply (fewer than ``dense.PANEL_ROWS`` rows: the head's case, or GEMVs)."""
        flatten = runs[-1][2] + 1
        if batch < dense_kernels.PANEL_ROWS or self.dtype != np.float32 or flatten >= len(
                self.ops):
            return None
        op = self.ops[flatten]
        if op["op"] != "flatten" or op["start_dim"] != 1 or op["inputs"] != [flatten]:
            return None
        linears, source = [], flatten + 1
        for index in range(flatten + 1, len(self.ops)):
            op = self.ops[index]
            if op["op"] != "linear" or op["inputs"] != [source]:
                break
            weights = op["weights"]
            linears.append((index, dense_kernels.LinearRunner(
                self.tensors[weights["weight"]],
                self.tensors[weights["bias"]] if "bias" in weights else None,
                op.get("negative_slope"))))
            source = index + 1
        return (flatten, linears) if linears else None

    def _chain(self, runs, borders, head=None, tail=None):
        """One step for consecutive direct convs ``[(index, runner, output)]``: one
        parallel region for all of them (one wake-up of the team instead of one per
        conv). ``output`` is the op whose output the conv writes: its own, or that of
        the max pool it computes in its epilogue (``_pooled``). ``borders``: the zero
        border each buffer stored with one has (``_borders``); ``head`` and ``tail``: the
        ops of a classifier head (``_head``) or the dense layers (``_dense_tail``) the
        chain runs too."""
        if len(runs) == 1 and tail is None:
            index, run, output = runs[0]
            return self._single(output, lambda values, buffer: run(
                values[self.ops[index]["inputs"][0]], buffer, self._residual(index, values)))
        threads = max(run.threads for _, run, _ in runs)
        first, key = self.ops[runs[0][0]]["inputs"][0], runs[0][0]

        def step(values, buffers):
            for _, _, output in runs:   # outputs are known before the chain runs
                values[output + 1] = buffers[output]
            if head is not None:
                pool, flatten, linear = head
                values[pool + 1] = buffers[pool]
                values[flatten + 1] = buffers[pool].reshape(buffers[pool].shape[:2])
                values[linear + 1] = buffers[linear]
            if tail is not None:
                flatten, linears = tail
                values[flatten + 1] = values[flatten].reshape(len(values[flatten]), -1)
                for index, _ in linears:
                    values[index + 1] = buffers[index]
            x = values[first]
            chain = buffers.chains.get(key)
            if chain is None:
                chain = direct_kernels.prepare_chain(
                    [(run, values[self.ops[index]["inputs"][0]], buffers[output],
                      self._residual(index, values), self._chain_borders(index, output, borders))
                     for index, run, output in runs], threads)
                if head is not None:
                    weights = self.ops[head[2]]["weights"]
                    slope = self.ops[head[2]].get("negative_slope")
                    chain.set_head(values[head[1] + 1], self.tensors[weights["weight"]],
                                   self.tensors[weights["bias"]] if "bias" in weights else None,
                                   values[head[2] + 1], slope is not None,
                                   0.0 if slope is None else slope)
                if tail is not None:
                    chain.set_dense([layer.step(values[index], values[index + 1])
                                     for index, layer in tail[1]])
                # kept with the buffer set where the chain reads nothing but its first
                # input and this set's buffers (a standalone activation before it, say,
                # makes a new array every call)
                owned = {id(buffer) for buffer in buffers if buffer is not None}
                if all(array is None or array is x or id(array) in owned
                       for index, _, _ in runs for array in
                       (values[self.ops[index]["inputs"][0]], self._residual(index, values))):
                    buffers.chains[key] = chain
            chain.run(x)
        return step

    def _pooled(self, index, run):
        """``run`` with the op after it, a 2x2 max pool of its output alone, computed in
        its epilogue (``ForwardRunner.pooled``); None where that does not apply."""
        after = index + 1
        if after >= len(self.ops) or len(self.ops[index]["inputs"]) > 1:
            return None
        op = self.ops[after]
        # the pool must be the conv output's one reader (and the plan not return it)
        if op["op"] != "max_pool2d" or op["inputs"] != [index + 1] or self._readers[
                index + 1] != 1:
            return None
        window = pool_kernels.validate_pool2d_args(
            "max_pool2d", run.out_shape, op["kernel_size"], op["stride"], op["padding"],
            op["ceil_mode"])
        pooled = run.pooled() if window[:3] == ((2, 2), (2, 2), (0, 0)) else None
        if pooled is None or pooled.out_shape[1:] != tuple(self.shapes[after + 1][1:]):
            return None
        return pooled

    def _chain_borders(self, index, output, borders):
        """The borders of a chained conv's input, residual and output buffers."""
        inputs = self.ops[index]["inputs"]
        return (borders.get(inputs[0] - 1, (0, 0)),
                borders.get(inputs[1] - 1, (0, 0)) if len(inputs) > 1 else (0, 0),
                borders.get(output, (0, 0)))

    def _borders(self, runs, borders):
        """Add to ``borders`` (buffer index: layout) the outputs of the chain ``runs`` that
        the chain alone reads and that convs of it read in place, so that those need no
        padded copy per conv and thread. The kernels' rule decides which layouts a conv
        reads in place (``ForwardRunner.reads_in_place``); of those the buffer takes:

        * read only as the input of convs of one stride above 1, all reading in place
          (a ResNet stage's last output, read by the next stage's strided conv and
          shortcut): that stride's phase planes inside a zero border of the largest
          padding, ``(rows, cols, stride_h, stride_w)``, where the planes cover the
          padded image exactly (``_phase_layout``);
        * else, read in place by stride-1 convs: a zero border of their largest padding,
          ``(rows, cols)``; the chain's other readers read the interior.
        """
        members = {index: run for index, run, _ in runs}
        for index, run, output in runs:
            if output != index:   # a pooled conv writes the pool's output, unbordered
                continue
            readers = [reader for reader, op in enumerate(self.ops) if index + 1 in op["inputs"]]
            if not readers or index + 1 in self._returned or any(
                    reader not in members for reader in readers):
                continue
            # the convs that read it as their input (not as a residual)
            convs = [members[reader] for reader in readers
                     if self.ops[reader]["inputs"][0] == index + 1]
            layout = None
            if len(convs) == len(readers) and not any(
                    index + 1 in self.ops[reader]["inputs"][1:] for reader in readers):
                layout = self._phase_layout(convs, self.shapes[index + 1][2:])
            if layout is None:
                layout = self._border(convs)
            if layout is not None:
                borders[index] = layout

    @staticmethod
    def _phase_layout(convs, size):
        """The phase planes of one stride above 1, in a border of the largest padding,
        that every conv of ``convs`` reads in place and that cover a ``size`` (H, W)
        image with that border exactly; None where there are none."""
        least = [run.in_place for run in convs]   # (padding, stride), or None
        strides = {layout[1] for layout in least if layout is not None}
        if None in least or len(strides) != 1 or strides == {(1, 1)}:
            return None
        (stride_h, stride_w), = strides
        layout = (max(padding[0] for padding, _ in least),
                  max(padding[1] for padding, _ in least), stride_h, stride_w)
        if (size[0] + 2 * layout[0]) % stride_h or (size[1] + 2 * layout[1]) % stride_w:
            return None
        return layout if all(run.reads_in_place(layout) for run in convs) else None

    @staticmethod
    def _border(convs):
        """The zero border, of the largest padding, in which the stride-1 convs of
        ``convs`` that can read their input in place read it so; None where none can."""
        reading = [run for run in convs if run.in_place is not None
                   and run.in_place[1] == (1, 1)]
        paddings = [run.in_place[0] for run in reading]
        border = (max([rows for rows, _ in paddings], default=0),
                  max([cols for _, cols in paddings], default=0))
        if border == (0, 0) or not all(run.reads_in_place(border) for run in reading):
            return None
        return border

    def _residual(self, index, values):
        inputs = self.ops[index]["inputs"]
        return values[inputs[1]] if len(inputs) > 1 else None

    @staticmethod
    def _single(index, run):
        def step(values, buffers):
            values[index + 1] = run(values, buffers[index])
        return step

    def program(self, batch):
        """The steps for this batch size: consecutive direct convs as one chain, a 2x2
        max pool after one computed by it, consecutive pointwise and depthwise convs as
        one chain (``_separable``); and the borders of the buffers stored with one
        (``_borders``)."""
        program, runs, separable, pooled, borders, done = [], [], [], False, {}, set()
        for index in range(len(self.ops)):
            if pooled or index in done:      # computed by the conv (chain) before
                pooled = False
                continue
            layer = self._separable_layer(index, batch)
            if layer is not None:
                if runs:
                    self._flush(program, runs, borders, done, batch)
                    runs = []
                separable.append((index, layer))
                continue
            if separable:
                tail = self._separable_tail(separable[-1][0], batch)
                program.append(self._separable(separable, tail))
                separable = []
                if tail is not None:
                    done.update(tail[1:3])
                    continue
            prepared = self._prepare(index, batch)
            if isinstance(prepared, direct_kernels.ForwardRunner):
                fused = self._pooled(index, prepared)
                pooled = fused is not None
                runs.append((index, fused, index + 1) if pooled else (index, prepared, index))
                continue
            if runs:
                consumed = self._flush(program, runs, borders, done, batch)
                runs = []
                if consumed:
                    continue
            program.append(self._single(index, prepared))
        if runs:
            self._flush(program, runs, borders, done, batch)
        if separable:
            program.append(self._separable(separable))
        return program, borders

    def _flush(self, program, runs, borders, done, batch):
        """Append the chain of direct convs ``runs`` to ``program``, with the classifier
        head or dense layers after it that it runs too (their ops added to ``done``);
        whether it took those."""
        self._borders(runs, borders)
        head = self._head(runs, batch)
        tail = None if head is not None else self._dense_tail(runs, batch)
        program.append(self._chain(runs, borders, head, tail))
        if head is not None:
            done.update(head[1:])
        elif tail is not None:
            done.update(index for index, _ in tail[1])
        return head is not None or tail is not None

    def _separable_layer(self, index, batch):
        """Op ``index`` as a ``pointwise.PointwiseLayer`` or ``DepthwiseLayer`` (a conv the
        separable chain runs), or None."""
        op = self.ops[index]
        if op["op"] != "conv2d":
            return None
        weights = op["weights"]
        shape = (batch,) + tuple(self.shapes[op["inputs"][0]][1:])
        return pointwise_kernels.layer(
            shape, self.tensors[weights["weight"]],
            self.tensors[weights["bias"]] if "bias" in weights else None,
            tuple(op["stride"]), tuple(op["padding"]), tuple(op["dilation"]), op["groups"],
            op.get("negative_slope"))

    def _separable_tail(self, last, batch):
        """The classifier head after the separable chain whose last conv is op ``last`` —
        a global average pool of its output, a flatten and a linear layer, none read by
        anything else — as (pool, flatten, linear, linear's PointwiseLayer) for the
        chain to run too; None where there is none."""
        ops = self.ops[last + 1:last + 4]
        if (len(ops) < 3 or [op["op"] for op in ops[1:]] != ["flatten", "linear"]
                or not self._global_pool(last + 1, batch)):
            return None
        indices = (last + 1, last + 2, last + 3)
        if ops[1]["start_dim"] != 1 or [op["inputs"] for op in ops] != [
                [index] for index in indices] or any(
                self._readers[index + 1] != 1 or index + 1 in self._returned
                for index in indices[:2]):
            return None
        weights = ops[2]["weights"]
        return indices + (pointwise_kernels.linear_layer(
            batch, self.tensors[weights["weight"]],
            self.tensors[weights["bias"]] if "bias" in weights else None,
            ops[2].get("negative_slope"), runtime.get_num_threads()),)

    def _separable(self, layers, tail=None):
        """One step for consecutive pointwise and depthwise convs ``[(index, layer)]``: one
        parallel region for all of them (``pointwise.prepare_chain``), kept with the
        buffer set where it reads nothing but its first input and the set's buffers.
        ``tail``: the classifier head it runs too (``_separable_tail``)."""
        threads = max(pointwise_kernels.threads_for(layer.multiply_adds)
                      for _, layer in layers)
        first = self.ops[layers[0][0]]["inputs"][0]
        key = ("separable", layers[0][0])

        def step(values, buffers):
            for index, _ in layers:   # outputs are known before the chain runs
                values[index + 1] = buffers[index]
            if tail is not None:
                pool, flatten, linear, _ = tail
                values[pool + 1] = buffers[pool]
                values[flatten + 1] = buffers[pool].reshape(buffers[pool].shape[:2])
                values[linear + 1] = buffers[linear]
            x = _contiguous(values[first])
            chain = buffers.chains.get(key)
            if chain is None:
                owned = {id(buffer) for buffer in buffers if buffer is not None}
                reads, steps = [], []
                for index, layer in layers:
                    inputs = [x if value == first else _contiguous(values[value])
                              for value in self.ops[index]["inputs"]]
                    reads.extend(inputs)
                    steps.append(layer.step(inputs[0], buffers[index],
                                            inputs[1] if len(inputs) > 1 else None))
                if tail is not None:
                    pool, _, linear, layer = tail
                    steps.append(pointwise_kernels.mean_step(values[pool], buffers[pool]))
                    steps.append(layer.step(buffers[pool], buffers[linear].reshape(
                        buffers[linear].shape + (1, 1))))
                chain = pointwise_kernels.prepare_chain(steps, threads)
                if all(array is x or id(array) in owned for array in reads):
                    buffers.chains[key] = chain
            chain.run(x)
        return step

    def buffers(self, batch, borders):
        """A new set of intermediate buffers for this batch size; those with a border
        are zeroed, which the convs writing their interiors keep."""
        buffers = BufferSet()
        for index, op in enumerate(self.ops):
            shape = (batch,) + self.shapes[index + 1][1:]
            if op["op"] in ("conv2d", "linear", "max_pool2d", "adaptive_avg_pool2d") or (
                    op["op"] == "avg_pool2d" and _global(op, self.shapes[op["inputs"][0]])):
                if index in borders:
                    rows, cols, stride_h, stride_w = (borders[index] + (1, 1))[:4]
                    buffers.append(np.zeros(
                        (batch, stride_h * stride_w * shape[1],
                         (shape[2] + 2 * rows) // stride_h, (shape[3] + 2 * cols) // stride_w),
                        self.dtype))
                else:
                    buffers.append(np.empty(shape, dtype=self.dtype))
            else:
                buffers.append(None)
        return buffers


# the activations of kernels.elementwise: plan kind -> (kernel name, its constants a, b)
_ELEMENTWISE = {"relu6": ("hardtanh", (0.0, 6.0)), "hardsigmoid": ("hardsigmoid", ()),
                "hardswish": ("hardswish", ()), "silu": ("silu", ()), "mish": ("mish", ()),
                "gelu": ("gelu", ()), "gelu_tanh": ("gelu_tanh", ()),
                "hardtanh": ("hardtanh", None), "elu": ("elu", None),
                "softplus": ("softplus", None)}


def _activation(op):
    """A standalone activation (one not fused into a conv or dense layer) as a function
    of an ndarray: the Numba kernels the layers run, imported here, so that plans
    without one never load Numba."""
    kind = op["kind"]
    if kind in _ELEMENTWISE:
        from fastdl.kernels import elementwise
        name, constants = _ELEMENTWISE[kind]
        constants = op["parameters"] if constants is None else constants
        return lambda x: elementwise.activation_forward(x, name, *constants)
    from fastdl.kernels import activation as act_kernels
    return {"relu": act_kernels.relu_forward, "sigmoid": act_kernels.sigmoid_forward,
            "tanh": act_kernels.tanh_forward, "identity": lambda x: x,
            "leaky_relu": lambda x: act_kernels.leaky_relu_forward(
                x, op["negative_slope"])}[kind]


def _contiguous(array):
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _global(op, shape):
    """Whether the average pool ``op`` on input ``shape`` takes one window, the whole
    map, unpadded (its output is the global average pool's)."""
    return (pair(op["kernel_size"], "kernel_size", "avg_pool2d") == tuple(shape[2:])
            and pair(op["padding"], "padding", "avg_pool2d") == (0, 0))
