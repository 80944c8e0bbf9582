"""Optimizers over flat buffers with one fused update kernel each; clipping; schedules.

The optimizers are torch.optim's, with its arguments, update rules,
``param_groups`` (edit ``group["lr"]`` or ``group["betas"]``: the next step
uses it; ``add_param_group``), ``state`` and ``state_dict`` layout.

Writing an optimizer
--------------------
Subclass :class:`Optimizer` and give it

- ``state_slots``: the names of its per-element state buffers (zeros at the
  start, or a group option named in ``slot_initial``);
- ``hyper_names``: the group options its kernel reads, one column each of the
  per-parameter table ``hyper`` (a tuple option such as ``betas`` takes one
  column per entry; booleans are 0/1);
- ``_validate(group)``: raise torch's ``ValueError("Invalid learning rate: -1")``
  for a bad option (``check_non_negative`` helps);
- ``_update(active, hyper)``: one call of one Numba kernel over the flat
  buffers ``self.flat_params``, ``self.flat_grads`` and
  ``self.state_buffers[name]``, looping over ``self.chunks`` in parallel.
  ``active[segment]`` says whether a parameter has a gradient this step,
  ``self.steps[segment]`` its step count (from 1) and ``hyper[segment, j]``
  its group's options::

      def _sign_sgd(params, grads, chunk_start, chunk_end, chunk_segment, active, hyper):
          for chunk in prange(chunk_start.shape[0]):
              segment = chunk_segment[chunk]
              if active[segment]:
                  lr = hyper[segment, 0]
                  for i in range(chunk_start[chunk], chunk_end[chunk]):
                      params[i] -= lr * np.sign(grads[i])

      sign_sgd = jit(_sign_sgd, parallel=True)     # fastdl.kernels._jit.jit

      class SignSGD(Optimizer):
          hyper_names = ("lr",)

          def __init__(self, params, lr=1e-2):
              super().__init__(params, dict(lr=lr))

          def _validate(self, group):
              check_non_negative("lr", group["lr"], "learning rate")

          def _update(self, active, hyper):
              sign_sgd(self.flat_params, self.flat_grads, *self.chunks, active, hyper)

Step counts, state slots and options are saved by ``state_dict()`` and
restored by ``load_state_dict()`` with no more code. An optimizer written for
torch — overriding ``step()``, looping over ``self.param_groups`` and keeping
its state in ``self.state[p]`` — runs unchanged too (one Python pass per
parameter instead of one kernel).
"""
from fastdl.optim import lr_scheduler
from fastdl.optim.algorithms import (SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, RAdam,
                                     RMSprop)
from fastdl.optim.clip import clip_grad_norm_, clip_grad_value_
from fastdl.optim.optimizer import Optimizer, check_non_negative
from fastdl.optim.proximal import ProximalL1

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "NAdam", "Optimizer",
           "RAdam", "RMSprop", "check_non_negative", "clip_grad_norm_", "clip_grad_value_",
           "lr_scheduler", "ProximalL1"]
