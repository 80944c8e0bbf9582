"""``Linear``, as ``torch.nn.Linear``; the convolutions live in ``nn.conv`` (re-exported
here, where they were first)."""
from fastdl import functional as F
from fastdl._checks import positive_int
from fastdl.nn import init
from fastdl.nn._factory import empty_parameter, parameter_dtype
from fastdl.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d  # noqa: F401
from fastdl.nn.module import Module

__all__ = ["Linear"]


class Linear(Module):
    """``y = x W^T + b`` with ``W (out_features, in_features)``; torch's default init.

    Shape: ``(*, in_features) → (*, out_features)``.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        dtype = parameter_dtype("Linear", device, dtype)
        self.weight = empty_parameter((self.out_features, self.in_features), dtype)
        self.register_parameter("bias", empty_parameter((self.out_features,), dtype)
                                if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        """torch's default: kaiming_uniform_(a=sqrt(5)) weight, U(±1/sqrt(in)) bias."""
        init.default_layer_init(self.weight, self.bias)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return "in_features=%d, out_features=%d, bias=%s" % (
            self.in_features, self.out_features, self.bias is not None)
