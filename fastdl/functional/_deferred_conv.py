"""conv2d as a deferred tensor (``tensor_deferred``): what it computes when first read.

A conv whose input is itself a deferred conv's output, both pointwise (1x1) or
depthwise, takes that conv as the step before it: when the last is read, the run of
them computes as one chain of ``kernels.pointwise`` (one parallel region; at large
batches each thread takes whole images through every step, so a step's output is still
in cache when the next reads it), as a compiled plan runs a MobileNet's inverted
residuals, a block's input added back read from the chain too. Each conv of the chain
settles its own tensor's values; a tensor read before a later conv ran computes alone
(the later conv then starts from its values).
"""
import math

import numpy as np

from fastdl import tensor_deferred
from fastdl.kernels import conv as kernels, depthwise, norm as norm_kernels, pointwise
from fastdl.shapes import conv_output_size
from fastdl.tensor_convert import data_of


class stand_in:
    """A deferred conv output's ``shape``, ``ndim`` and ``dtype``, what the argument checks
    read (a zero-stride array took 3 us to make, per conv)."""

    __slots__ = ("shape", "ndim", "dtype")

    def __init__(self, epilogue):
        self.shape, self.ndim, self.dtype = epilogue.shape, len(epilogue.shape), epilogue.dtype


def _chainable(weight_shape, stride, padding, dilation, groups, input_shape):
    """Whether ``kernels.pointwise.layer`` runs this conv as a chain step."""
    if (tuple(weight_shape[2:]) == (1, 1) and stride == (1, 1) and padding == (0, 0)
            and groups == 1):
        return True
    return depthwise.applies(weight_shape, stride, padding, dilation, groups, input_shape)


def _chainable_link(weight, stride, padding, dilation, groups, input_shape, output_shape):
    """Whether a conv joins a chain: a chain step whose outputs outnumber its weights (a
    chain packs every pointwise conv's weights; at batch 1 on 4x4 maps the single-conv
    loops read them as they are, and the packing cost more than the chain saved)."""
    return (weight.size <= math.prod(output_shape)
            and _chainable(weight.shape, stride, padding, dilation, groups, input_shape))


def _conv_chainable(epilogue):
    if epilogue.compute is not _run:
        return False
    x, weight, _, stride, padding, dilation, groups = epilogue.operands
    return _chainable_link(weight, stride, padding, dilation, groups, x.shape,
                           epilogue.shape)


def defer_conv2d(input, source, weight, bias, stride, padding, dilation, groups, relu):
    """The conv of ``input`` as a ``DeferredTensor`` (pairs normalised, arguments checked).

    ``source``: ``input``'s pending epilogue, or None. Where both convs are chain steps
    the epilogue keeps it (a chain link); else ``input``'s values are read now.
    """
    input_shape = source.shape if source is not None else data_of(input).shape
    shape = (input_shape[0], weight.shape[0]) + tuple(
        conv_output_size(input_shape[2 + axis], weight.shape[2 + axis], stride[axis],
                         padding[axis], dilation[axis]) for axis in (0, 1))
    if source is not None and not (
            _conv_chainable(source)
            and _chainable_link(weight, stride, padding, dilation, groups, input_shape, shape)):
        source = None
    x = source if source is not None else data_of(input)
    return tensor_deferred.defer(tensor_deferred.Epilogue(
        _run, (x, weight, bias, stride, padding, dilation, groups), shape, x.dtype,
        slope=0.0 if relu else None))


def _folded_bias(epilogue, bias, dtype):
    """The bias with the epilogue's batch norm folded in (as deploy.fusion)."""
    shift = epilogue.shift if bias is None else bias * epilogue.scale + epilogue.shift
    return shift.astype(dtype)


def _run(epilogue):
    """The values of a deferred conv (``Epilogue.compute``)."""
    x, weight, bias, stride, padding, dilation, groups = epilogue.operands
    if isinstance(x, tensor_deferred.Epilogue):
        if x.result is None:
            return _run_chain(epilogue)
        x = x.result
    scale, residual, slope = epilogue.scale, epilogue.residual, epilogue.slope
    if isinstance(residual, tensor_deferred.Epilogue):
        residual = tensor_deferred.value(residual)
    if scale is not None and weight.size * 2 > math.prod(epilogue.shape):
        # more weights than outputs (ResNet-18's last stages at batch 1): one pass over
        # the output after the conv costs less than rewriting the weights
        out = kernels.conv2d_forward_unchecked(x, weight, bias, stride, padding, dilation,
                                               groups)
        return norm_kernels.channel_affine_(out, scale, epilogue.shift, residual, slope)
    if scale is not None:   # folded into the weights and bias, as deploy.fusion does
        bias = _folded_bias(epilogue, bias, weight.dtype)
        weight = weight * scale.astype(weight.dtype).reshape(-1, 1, 1, 1)
    return kernels.conv2d_forward_unchecked(x, weight, bias, stride, padding, dilation,
                                            groups, residual=residual, negative_slope=slope)


def _links(epilogue):
    """``epilogue`` and the uncomputed chain links before it, first to last."""
    links = [epilogue]
    while True:
        source = links[-1].operands[0]
        if not isinstance(source, tensor_deferred.Epilogue) or source.result is not None:
            break
        links.append(source)
    links.reverse()
    return links


def _run_chain(epilogue):
    """``epilogue`` and the uncomputed chain links before it as one pointwise chain.

    A link's residual that is an earlier link's output is read from the chain; one
    from elsewhere (a shortcut conv of the same input) is computed first, and may
    settle links of this chain, which then starts after them.
    """
    links = _links(epilogue)
    outside = [link.residual for link in links
               if isinstance(link.residual, tensor_deferred.Epilogue)
               and not any(link.residual is other for other in links)]
    if outside:
        for residual in outside:
            tensor_deferred.value(residual)
        links = _links(epilogue)
    source = links[0].operands[0]
    first = np.ascontiguousarray(source.result if isinstance(source, tensor_deferred.Epilogue)
                                 else source)
    multiply_adds = sum(math.prod(link.shape) * math.prod(link.operands[1].shape[1:])
                        for link in links)
    threads = pointwise.threads_for(multiply_adds)
    steps, outs, x = [], [], first
    for link in links:
        _, weight, bias, stride, padding, dilation, groups = link.operands
        if link.scale is not None:   # the weights scaled as they are packed
            bias = _folded_bias(link, bias, weight.dtype)
        layer = pointwise.layer(x.shape, weight, bias, stride, padding, dilation, groups,
                                link.slope, threads, link.scale)
        out = np.empty(layer.out_shape, dtype=x.dtype)
        residual = link.residual
        if isinstance(residual, tensor_deferred.Epilogue):   # a link's output, or computed
            residual = next((earlier_out for earlier, earlier_out in zip(links, outs)
                             if earlier is residual), residual.result)
        steps.append(layer.step(x, out, residual))
        outs.append(out)
        x = out
    pointwise.prepare_chain(steps, threads).run(first)
    for link, out in zip(links[:-1], outs[:-1]):
        link.settle(out)
    return outs[-1]
