"""SGD (with momentum/Nesterov), Adagrad, RMSprop, Adam and AdamW: torch's update rules."""
from fastdl.kernels import optim as kernels
from fastdl.optim.optimizer import Optimizer, check_non_negative

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (torch's form).

    ``g ← g + λθ``; with momentum ``b ← μb + (1 − τ)g`` (``b = g`` at the first
    step), ``g ← g + μb`` (Nesterov) or ``g ← b``; ``θ ← θ − ηg``.
    """

    state_slots = ("momentum_buffer",)
    hyper_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, nesterov=False,
                 weight_decay=0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay))

    def _validate(self, group):
        check_non_negative("lr", group["lr"], "learning rate")
        check_non_negative("momentum", group["momentum"], "momentum value")
        check_non_negative("weight_decay", group["weight_decay"], "weight_decay value")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, active, hyper):
        kernels.sgd_update(self.flat_params, self.flat_grads,
                           self.state_buffers["momentum_buffer"], *self._chunks, active,
                           self._steps, hyper)


class Adagrad(Optimizer):
    """Adagrad: ``s ← s + g²``; ``θ ← θ − η/(1 + (t−1)·decay) · g/(√s + ε)``."""

    state_slots = ("sum",)
    hyper_names = ("lr", "lr_decay", "weight_decay", "eps")
    slot_initial = {"sum": "initial_accumulator_value"}   # per group, as torch

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps))

    def _validate(self, group):
        check_non_negative("lr", group["lr"], "learning rate")
        check_non_negative("lr_decay", group["lr_decay"], "lr_decay value")
        check_non_negative("weight_decay", group["weight_decay"], "weight_decay value")
        check_non_negative("initial_accumulator_value", group["initial_accumulator_value"],
                           "initial_accumulator_value")
        check_non_negative("eps", group["eps"], "epsilon value")

    def _update(self, active, hyper):
        kernels.adagrad_update(self.flat_params, self.flat_grads, self.state_buffers["sum"],
                               *self._chunks, active, self._steps, hyper)


class RMSprop(Optimizer):
    """RMSprop: ``v ← αv + (1−α)g²``; ``θ ← θ − η g/(√v + ε)``.

    ``centered`` and ``momentum`` follow torch.
    """

    state_slots = ("square_avg", "grad_avg", "momentum_buffer")
    hyper_names = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _validate(self, group):
        check_non_negative("lr", group["lr"], "learning rate")
        check_non_negative("eps", group["eps"], "epsilon value")
        check_non_negative("momentum", group["momentum"], "momentum value")
        check_non_negative("weight_decay", group["weight_decay"], "weight_decay value")
        check_non_negative("alpha", group["alpha"], "alpha value")

    def _update(self, active, hyper):
        kernels.rmsprop_update(self.flat_params, self.flat_grads,
                               self.state_buffers["square_avg"], self.state_buffers["grad_avg"],
                               self.state_buffers["momentum_buffer"], *self._chunks, active,
                               self._steps, hyper)


def _check_betas(betas):
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2
            and all(0.0 <= b < 1.0 for b in betas)):
        raise ValueError("Invalid beta parameters: %s (each must be in [0, 1))" % (betas,))


class Adam(Optimizer):
    """Adam with bias correction: ``m̂ = m/(1−β₁ᵗ)``, ``v̂ = v/(1−β₂ᵗ)``,
    ``θ ← θ − η m̂/(√v̂ + ε)``; ``weight_decay`` adds ``λθ`` to the gradient."""

    state_slots = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    hyper_names = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def _validate(self, group):
        check_non_negative("lr", group["lr"], "learning rate")
        check_non_negative("eps", group["eps"], "epsilon value")
        check_non_negative("weight_decay", group["weight_decay"], "weight_decay value")
        _check_betas(group["betas"])
        group["betas"] = tuple(group["betas"])
        group["beta1"], group["beta2"] = group["betas"]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["beta1"], group["beta2"] = group["betas"]

    def _update(self, active, hyper):
        kernels.adam_update(self.flat_params, self.flat_grads, self.state_buffers["exp_avg"],
                            self.state_buffers["exp_avg_sq"],
                            self.state_buffers["max_exp_avg_sq"], *self._chunks, active,
                            self._steps, hyper, self._decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay: ``θ ← θ(1 − ηλ)`` before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
