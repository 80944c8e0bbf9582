"""Shape arithmetic of convolutional networks."""
import numbers


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
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError("conv_output_size: %s must be an int >= %d, got %r"
                             % (name, low, value))
    span = dilation * (kernel - 1) + 1
    if n + 2 * padding < span:
        raise ValueError("conv_output_size: kernel span %d exceeds padded input %d"
                         % (span, n + 2 * padding))
    return (n + 2 * padding - span) // stride + 1
