"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling."""
from fastdl import nn
from fastdl.shapes import conv_output_size


def lenet5(num_classes=10, in_channels=1, input_size=28):
    """LeNet-5: conv5(6)-pool-conv5(16)-pool-fc120-fc84-fc(num_classes).

    The first convolution pads by 2 (as for 28×28 MNIST), so inputs down to
    8×8 (scikit-learn's digits) work; the flatten size is computed from
    ``input_size``.

    Parameters
    ----------
    num_classes, in_channels : int
    input_size : int
        Height (= width) of the input images, at least 8.

    Returns
    -------
    nn.Sequential mapping ``(N, in_channels, input_size, input_size)`` to ``(N, num_classes)``.
    """
    if input_size < 8:
        raise ValueError("lenet5: input_size must be >= 8, got %r" % (input_size,))
    size = conv_output_size(input_size, 5, padding=2) // 2   # conv1 keeps the size, pool /2
    second_padding = 0 if size >= 9 else 2                   # small inputs keep conv2 valid
    size = conv_output_size(size, 5, padding=second_padding) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=second_padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * size * size, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes))
