"""Receptive fields (fastdl.models.receptive_field) and the transposed-conv length formula."""
import numpy as np
import pytest

import fastdl
from fastdl import nn
from fastdl.kernels import conv as conv_kernels
from fastdl.models import lenet5, receptive_field, resnet8
from fastdl.shapes import conv_transpose_output_size


def _extent_read(model, size, axis):
    """The most input rows (axis 0) or columns (1) one output row/column reads, found by
    back-propagating ones through all-ones weights from interior outputs."""
    model = model.double()
    for parameter in model.parameters():
        parameter.array[...] = 1.0
    widest = 0
    with_grad = fastdl.Tensor(np.zeros((1, 1, size, size)), requires_grad=True)
    out_length = model(with_grad).shape[2 + axis]
    for position in range(out_length // 3, min(out_length // 3 + 8, out_length - 1)):
        x = fastdl.Tensor(np.zeros((1, 1, size, size)), requires_grad=True)
        out = model(x)
        grad = np.zeros(out.shape)
        grad[(0, 0) + ((position, slice(None)) if axis == 0 else (slice(None), position))] = 1
        out.backward(fastdl.Tensor(grad))
        touched = np.nonzero(np.abs(x.grad[0, 0]).sum(axis=1 - axis))[0]
        if len(touched):
            widest = max(widest, touched[-1] - touched[0] + 1)
    return widest


@pytest.mark.parametrize("layers", [
    [nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3)],
    # average pools: a max pool's gradient reaches only the argmax
    [nn.Conv2d(1, 1, 3, dilation=2), nn.AvgPool2d(2), nn.Conv2d(1, 1, 5, stride=2, padding=2)],
    [nn.AvgPool2d(3, stride=2, padding=1), nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(2)],
    [nn.Conv2d(1, 1, (3, 5), stride=(2, 1)), nn.Conv2d(1, 1, (1, 3), dilation=(1, 2))],
])
def test_fields_of_windows_are_the_extent_one_output_reads(layers):
    model = nn.Sequential(*layers)
    fields = receptive_field(model, (64, 64))
    assert len(fields) == len(layers)
    assert fields[-1] == (_extent_read(model, 64, 0), _extent_read(model, 64, 1))


@pytest.mark.parametrize("layers, expected", [
    # stride-1 conv over the input spread 2 apart: (2 - 1) / 2 of an input pixel
    ([nn.ConvTranspose2d(1, 1, 2, stride=2)], 1.5),
    ([nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1), nn.Conv2d(1, 1, 3, padding=1)], 3.5),
    # the jump (4) halves twice back to 1: 7 + 3*4/2 + 2*2/2 + 4*1
    ([nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, stride=2),
      nn.ConvTranspose2d(1, 1, 4, stride=2), nn.ConvTranspose2d(1, 1, 3, stride=2),
      nn.Conv2d(1, 1, 5)], 19),
    ([nn.MaxPool2d(2), nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3)], 4),
    ([nn.AvgPool2d(2), nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(1, 1, 3)], 6),
])
def test_upsampling_layers_divide_the_jump_and_bound_the_extent(layers, expected):
    model = nn.Sequential(*layers)
    field = receptive_field(model, 48)[-1]
    assert field == expected
    assert field >= _extent_read(model, 48, 0)


def test_input_size_int_or_pair():
    model = nn.Sequential(nn.Conv2d(1, 1, (3, 7)), nn.MaxPool2d((2, 1)), nn.Conv2d(1, 1, 3))
    assert receptive_field(model, 32) == [3, 4, 8]                 # along the height
    assert receptive_field(model, (32, 20)) == [(3, 7), (4, 7), (8, 9)]
    assert receptive_field(resnet8(), (32, 32))[-1] == (receptive_field(resnet8(), 32)[-1],) * 2
    assert receptive_field(lenet5(), 28) == [5, 6, 14, 16]
    for bad in (0, -1, 2.5, True, (3,), (3, 0), "32"):
        with pytest.raises(ValueError, match="input_size"):
            receptive_field(lenet5(), bad)


def test_old_shapes_location_says_where_it_moved():
    with pytest.raises(AttributeError, match="fastdl.models.receptive_field"):
        fastdl.shapes.receptive_field


@pytest.mark.parametrize("n, kernel, stride, padding, output_padding, dilation", [
    (5, 3, 1, 0, 0, 1), (5, 3, 2, 1, 1, 1), (7, 4, 3, 2, 2, 1), (4, 3, 2, 0, 1, 2),
    (1, 1, 1, 0, 0, 1), (6, 2, 2, 0, 0, 3)])
def test_conv_transpose_output_size_is_the_kernels(n, kernel, stride, padding,
                                                   output_padding, dilation):
    x = np.ones((1, 2, n, n), np.float32)
    weight = np.ones((2, 3, kernel, kernel), np.float32)
    out = conv_kernels.conv_transpose2d_forward(x, weight, None, stride, padding,
                                                output_padding, 1, dilation)
    length = conv_transpose_output_size(n, kernel, stride, padding, output_padding, dilation)
    assert out.shape == (1, 3, length, length)
    # it inverts conv_output_size up to output_padding
    assert fastdl.shapes.conv_output_size(length, kernel, stride, padding, dilation) == n
