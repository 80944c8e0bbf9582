"""Batch normalisation whose statistics are taken over the whole global batch.

Forward reduces per-channel (sum, sum of squares, count) across ranks in
float64; backward reduces (sum g, sum g·x̂). With one rank it is BatchNorm2d.
"""
import numpy as np

from fastdl.autograd import Function
from fastdl.distributed.comm import get_group
from fastdl.functional._util import as_tensor, contiguous
from fastdl.nn import BatchNorm2d


def _channel_sums(*arrays):
    return [a.sum(axis=(0, 2, 3), dtype=np.float64) for a in arrays]


class _SyncBatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, module, group):
        x = contiguous(x)
        channels = x.shape[1]
        local_count = x.shape[0] * x.shape[2] * x.shape[3]
        total, squares = _channel_sums(x, x.astype(np.float64) ** 2)
        stats = group.allreduce_(np.concatenate([total, squares, [local_count]]))
        count = stats[-1]
        if count <= 1:
            raise ValueError("SyncBatchNorm: Expected more than 1 value per channel when "
                             "training, got %d in the global batch" % count)
        mean = stats[:channels] / count
        var = np.maximum(stats[channels:2 * channels] / count - mean * mean, 0.0)
        inv_std = 1.0 / np.sqrt(var + module.eps)
        shape = (1, channels, 1, 1)
        x_hat = ((x - mean.reshape(shape)) * inv_std.reshape(shape)).astype(x.dtype)
        y = x_hat * (1 if weight is None else weight.reshape(shape))
        if bias is not None:
            y = y + bias.reshape(shape)
        if module.track_running_stats:
            module.num_batches_tracked += 1
            factor = module.momentum if module.momentum is not None else \
                1.0 / float(module.num_batches_tracked)
            module.running_mean[...] = (1 - factor) * module.running_mean + factor * mean
            module.running_var[...] = ((1 - factor) * module.running_var
                                       + factor * var * count / (count - 1))
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.group, ctx.count = group, count
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        x_hat, inv_std, weight = ctx.saved_tensors
        channels = x_hat.shape[1]
        shape = (1, channels, 1, 1)
        grad_bias, grad_weight = _channel_sums(grad, grad * x_hat)
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = ctx.group.allreduce_(np.concatenate([grad_bias, grad_weight]))
            mean_g, mean_gx = sums[:channels] / ctx.count, sums[channels:] / ctx.count
            scale = inv_std * (1.0 if weight is None else weight)
            grad_x = (scale.reshape(shape) * (grad - mean_g.reshape(shape)
                                              - x_hat * mean_gx.reshape(shape)))
            grad_x = grad_x.astype(grad.dtype, copy=False)
        dtype = grad.dtype
        return (grad_x,
                grad_weight.astype(dtype) if ctx.needs_input_grad[1] else None,
                grad_bias.astype(dtype) if ctx.needs_input_grad[2] else None)


class SyncBatchNorm(BatchNorm2d):
    """BatchNorm2d with statistics over all ranks' batches while training."""

    def forward(self, x):
        group = get_group()
        if not self.training or group.size == 1:
            return super().forward(x)
        return _SyncBatchNorm.apply(as_tensor(x), self.weight, self.bias, self, group)

    @classmethod
    def convert_sync_batchnorm(cls, module):
        """Replace every BatchNorm2d in ``module`` by a SyncBatchNorm with the same state."""
        for name, child in list(module.named_children()):
            if type(child) is BatchNorm2d:
                replacement = cls(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
                replacement.load_state_dict(child.state_dict())
                setattr(module, name, replacement)
            else:
                cls.convert_sync_batchnorm(child)
        return module
