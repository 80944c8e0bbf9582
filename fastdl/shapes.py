"""Shape arithmetic of convolutional networks: output lengths of windows and transposed convs.

The one home of these formulas: the kernels, the layers and the plan loader all
call them. Plain Python on ints, below the kernels; what needs a model (its
receptive field) is ``fastdl.models.receptive_field``.
"""
from fastdl._checks import is_int  # noqa: F401  (re-exported: callers still import it here)


def conv_output_size(n, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution or pooling window along one axis.

    ``floor((n + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1`` (the seed's
    formula lacked the ``+ 1`` and the dilation).

    Parameters
    ----------
    n, kernel, stride, padding, dilation : int

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For non-positive ``n``/``kernel``/``stride``/``dilation``, negative
        padding, or a (dilated) kernel larger than the padded input.
    """
    for name, value, low in (("n", n, 1), ("kernel", kernel, 1), ("stride", stride, 1),
                             ("padding", padding, 0), ("dilation", dilation, 1)):
        if not is_int(value) or value < low:
            raise ValueError("conv_output_size: %s must be an int >= %d, got %r"
                             % (name, low, value))
    span = dilation * (kernel - 1) + 1
    if n + 2 * padding < span:
        raise ValueError("conv_output_size: kernel span %d exceeds padded input %d"
                         % (span, n + 2 * padding))
    return (n + 2 * padding - span) // stride + 1


def conv_transpose_output_size(n, kernel, stride=1, padding=0, output_padding=0, dilation=1):
    """Output length of a transposed convolution along one axis.

    ``(n - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1``: the
    input length of the convolution whose gradient it is, ``output_padding`` choosing
    among the lengths that convolution maps to ``n``.

    Plain arithmetic on checked ints (``F.conv_transpose2d`` and the plan loader check
    the arguments): unlike :func:`conv_output_size` it raises nothing, and a padding
    wider than the kernel's span gives a length below 1.

    Parameters
    ----------
    n, kernel, stride, padding, output_padding, dilation : int

    Returns
    -------
    int
    """
    return (n - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def __getattr__(name):
    if name == "receptive_field":   # it needs the layers, which this module sits below
        raise AttributeError("fastdl.shapes.receptive_field moved to the model layer: use "
                             "fastdl.models.receptive_field(model, input_size)")
    raise AttributeError("module 'fastdl.shapes' has no attribute %r" % (name,))
