"""``DataParallel``: torch's multi-GPU wrapper, on the CPU a pass-through that keeps torch's
``module.`` prefix in state-dict keys (so its checkpoints load either way)."""
from fastdl.nn.module import Module

__all__ = ["DataParallel"]


class DataParallel(Module):
    """Runs ``module`` as is (fastdl parallelises inside each kernel, over CPU threads).

    Parameters
    ----------
    module : Module
    device_ids, output_device : None or CPU devices
        Accepted for torch's signature; there is one device.
    dim : int
        Accepted for torch's signature.
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError("DataParallel: module must be a Module, got %s"
                            % type(module).__name__)
        self.module = module
        self.device_ids = [] if device_ids is None else list(device_ids)
        self.output_device = output_device
        self.dim = dim

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)
