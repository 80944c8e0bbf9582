"""Constructor argument checks shared by the layers (defined in ``fastdl._checks``)."""
from fastdl._checks import check_ndim, non_negative_float, positive_int

__all__ = ["check_ndim", "non_negative_float", "positive_int"]
