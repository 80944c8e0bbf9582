"""``Embedding``: a lookup table of learnt vectors, as ``torch.nn.Embedding``."""
import numpy as np

from fastdl import functional as F
from fastdl._checks import positive_int
from fastdl.nn import init
from fastdl.nn._factory import empty_parameter, parameter_dtype
from fastdl.nn.module import Module
from fastdl.nn.parameter import Parameter
from fastdl.tensor_convert import data_of

__all__ = ["Embedding"]


class Embedding(Module):
    """Rows of ``weight (num_embeddings, embedding_dim)`` at integer indices.

    ``weight`` starts N(0, 1), with the ``padding_idx`` row (if any) zero; that
    row gets no gradient.

    Shape: ``(*) → (*, embedding_dim)``.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False, device=None, dtype=None):
        super().__init__()
        self.num_embeddings = positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError("Embedding: Padding_idx must be within num_embeddings")
            padding_idx = padding_idx % num_embeddings
        self.padding_idx = padding_idx
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        dtype = parameter_dtype("Embedding", device, dtype)
        if _weight is None:
            self.weight = empty_parameter((num_embeddings, embedding_dim), dtype)
            self.reset_parameters()
        else:
            weight = np.array(data_of(_weight), dtype=dtype)
            if weight.shape != (num_embeddings, embedding_dim):
                raise ValueError("Embedding: Shape of weight does not match num_embeddings "
                                 "and embedding_dim, got %s" % (weight.shape,))
            self.weight = Parameter(weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.array[self.padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm,
                           self.norm_type, self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        text = "{}, {}".format(self.num_embeddings, self.embedding_dim)
        if self.padding_idx is not None:
            text += ", padding_idx={}".format(self.padding_idx)
        if self.max_norm is not None:
            text += ", max_norm={}".format(self.max_norm)
        if self.norm_type != 2:
            text += ", norm_type={}".format(self.norm_type)
        if self.scale_grad_by_freq:
            text += ", scale_grad_by_freq=True"
        if self.sparse:
            text += ", sparse=True"
        return text

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None,
                        norm_type=2.0, scale_grad_by_freq=False, sparse=False):
        """An Embedding holding a copy of ``embeddings (num, dim)``; frozen by default."""
        table = data_of(embeddings)
        if table.ndim != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional, got shape "
                             "%s" % (table.shape,))
        return cls(table.shape[0], table.shape[1], padding_idx, max_norm, norm_type,
                   scale_grad_by_freq, sparse, _weight=table, _freeze=freeze,
                   dtype=table.dtype if table.dtype in (np.float32, np.float64) else None)
