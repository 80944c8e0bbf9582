"""Batch normalisation whose statistics are taken over the whole global batch.

The batch-norm kernels, split where the ranks must meet. Forward: each rank's
per-channel mean and variance (``batch_norm_statistics``), one Allreduce of the
stacked float64 sums ``n·mean``, ``n·(var + mean²)`` and ``n``, then the kernels'
normalisation with the global statistics (``batch_norm_forward(statistics=...)``,
which updates the running ones as BatchNorm2d's). Backward: each rank's per-channel
sums of ``g`` and ``g·x_hat`` (``batch_norm_backward_reduce``: its bias and weight
gradients, averaged later with the others), one Allreduce of them, then the input
gradient from the global sums (``batch_norm_backward_input``). With one rank it is
BatchNorm2d.
"""
import numpy as np

from fastdl._checks import check_ndim
from fastdl.autograd import Function, Tensor
from fastdl.distributed.comm import get_group
from fastdl.kernels import norm as kernels
from fastdl.nn import BatchNorm2d


def _global_statistics(x, group):
    """Per-channel mean and biased variance (float64) over every rank's ``x``, and the
    number of values each was taken over.

    The ranks' means and variances are combined from the sums of ``n·mean`` and
    ``n·(var + mean²)``: the variance loses about ``1e-16·mean²/var`` of its value
    (float64), nothing at the means and spreads of activations.
    """
    channels = x.shape[1]
    mean, var = kernels.batch_norm_statistics(x)
    local = x.size // channels
    sums = group.allreduce_(np.concatenate([local * mean, local * (var + mean * mean),
                                            [local]]))
    count = int(round(sums[-1]))
    if count <= 1:
        raise ValueError("SyncBatchNorm: Expected more than 1 value per channel when "
                         "training, got %d in the global batch" % count)
    mean = sums[:channels] / count
    var = np.maximum(sums[channels:2 * channels] / count - mean * mean, 0.0)
    return mean, var, count


class _SyncBatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, batches,
                group):
        x = np.ascontiguousarray(x)   # saved for the backward as the kernels saw it
        statistics = _global_statistics(x, group)
        y, mean, inv_std = kernels.batch_norm_forward(x, weight, bias, running_mean,
                                                       running_var, True, momentum, eps,
                                                       batches, statistics=statistics)
        ctx.save_for_backward(x, mean, inv_std, weight)
        ctx.group, ctx.count = group, statistics[2]
        return y

    @staticmethod
    def backward(ctx, grad):
        x, mean, inv_std, weight = ctx.saved_tensors
        grad = np.ascontiguousarray(grad, dtype=x.dtype)
        sum_grad, sum_grad_x_hat = kernels.batch_norm_backward_reduce(grad, x, mean, inv_std)
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = ctx.group.allreduce_(np.concatenate([sum_grad, sum_grad_x_hat]))
            channels = x.shape[1]
            grad_x = kernels.batch_norm_backward_input(grad, x, mean, inv_std, weight,
                                                       sums[:channels], sums[channels:],
                                                       ctx.count)
        needs_weight = ctx.needs_input_grad[1] and weight is not None
        return (grad_x,
                sum_grad_x_hat.astype(weight.dtype) if needs_weight else None,
                sum_grad.astype(grad.dtype) if ctx.needs_input_grad[2] else None)


class SyncBatchNorm(BatchNorm2d):
    """BatchNorm2d with statistics over all ranks' batches while training.

    Parameters as BatchNorm2d's, and ``process_group``: the ranks to take the
    statistics over (as torch's; ``distributed.get_group()`` when None).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)
        self.process_group = process_group

    def forward(self, input):
        group = self.process_group or get_group()
        if not self.training or group.size == 1:
            return super().forward(input)
        x = input if isinstance(input, Tensor) else Tensor(np.asarray(input))
        check_ndim("SyncBatchNorm", x, (4,))
        if x.shape[1] != self.num_features:
            raise ValueError("SyncBatchNorm: expected %d channels, input has shape %s"
                             % (self.num_features, x.shape))
        batches = None
        if self.track_running_stats:
            self.num_batches_tracked += 1
            batches = int(self.num_batches_tracked)
        running = (self.running_mean, self.running_var) if self.track_running_stats \
            else (None, None)
        return _SyncBatchNorm.apply(x, self.weight, self.bias, *running, self.momentum,
                                    self.eps, batches, group)

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
