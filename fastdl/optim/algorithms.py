"""torch.optim's algorithms over flat buffers, one fused kernel each: SGD, Adagrad, RMSprop,
Adadelta, Adam, AdamW, Adamax, NAdam, RAdam.

Every update rule is torch's (its single-tensor CPU path), so trajectories
match step for step. ``g`` is the gradient (negated with ``maximize``), ``θ``
the parameter, ``η`` the learning rate, ``λ`` the weight decay, ``t`` the
step count from 1. torch's implementation flags (``foreach``, ``fused``,
``capturable``) are accepted and ignored: there is one fused CPU path.
"""
import numpy as np

from fastdl.kernels import optim as kernels
from fastdl.optim.optimizer import Optimizer, check_non_negative, check_torch_flags

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Adamax", "NAdam",
           "RAdam"]


def _check_common(group, *names):
    labels = {"lr": "learning rate", "eps": "epsilon value"}
    for name in names:
        check_non_negative(name, group[name], labels.get(name, name + " value"))


def _check_betas(group):
    betas = group["betas"]
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError("Invalid beta parameters: %s (expected a pair)" % (betas,))
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError("Invalid beta parameter at index %d: %s" % (index, beta))
    group["betas"] = tuple(betas)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (torch's form).

    ``g ← g + λθ``; with momentum ``b ← μb + (1 − τ)g`` (``b = g`` at the first
    step), ``g ← g + μb`` (Nesterov) or ``g ← b``; ``θ ← θ − ηg``.
    """

    state_slots = ("momentum_buffer",)
    hyper_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        check_torch_flags(differentiable)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _validate(self, group):
        _check_common(group, "lr", "momentum", "weight_decay")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, active, hyper):
        kernels.sgd_update(self.flat_params, self.flat_grads,
                           self.state_buffers["momentum_buffer"], *self._chunks, active,
                           self._steps, hyper)


class Adagrad(Optimizer):
    """Adagrad: ``s ← s + g²``; ``θ ← θ − η/(1 + (t−1)·decay) · g/(√s + ε)``."""

    state_slots = ("sum",)
    hyper_names = ("lr", "lr_decay", "weight_decay", "eps", "maximize")
    slot_initial = {"sum": "initial_accumulator_value"}   # per group, as torch

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        check_torch_flags(differentiable)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))

    def _validate(self, group):
        _check_common(group, "lr", "lr_decay", "weight_decay", "initial_accumulator_value",
                      "eps")

    def _update(self, active, hyper):
        kernels.adagrad_update(self.flat_params, self.flat_grads, self.state_buffers["sum"],
                               *self._chunks, active, self._steps, hyper)


class RMSprop(Optimizer):
    """RMSprop: ``v ← αv + (1−α)g²``; ``θ ← θ − η g/(√v + ε)``.

    ``centered`` subtracts the squared running mean of ``g`` from ``v``;
    ``momentum`` accumulates ``b ← μb + g/(√v + ε)`` and steps ``θ ← θ − ηb``.
    """

    state_slots = ("square_avg", "grad_avg", "momentum_buffer")
    hyper_names = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        check_torch_flags(differentiable)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _validate(self, group):
        _check_common(group, "lr", "eps", "momentum", "weight_decay", "alpha")

    def _update(self, active, hyper):
        kernels.rmsprop_update(self.flat_params, self.flat_grads,
                               self.state_buffers["square_avg"], self.state_buffers["grad_avg"],
                               self.state_buffers["momentum_buffer"], *self._chunks, active,
                               self._steps, hyper)


class Adadelta(Optimizer):
    """Adadelta: ``v ← ρv + (1−ρ)g²``; ``Δ ← √(u + ε)/√(v + ε) · g``;
    ``u ← ρu + (1−ρ)Δ²``; ``θ ← θ − ηΔ`` (``λθ`` added to ``g``)."""

    state_slots = ("square_avg", "acc_delta")
    hyper_names = ("lr", "rho", "eps", "weight_decay", "maximize")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        check_torch_flags(differentiable)
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def _validate(self, group):
        _check_common(group, "lr", "eps", "weight_decay")
        if not 0.0 <= group["rho"] <= 1.0:
            raise ValueError("Invalid rho value: %s" % (group["rho"],))

    def _update(self, active, hyper):
        kernels.adadelta_update(self.flat_params, self.flat_grads,
                                self.state_buffers["square_avg"],
                                self.state_buffers["acc_delta"], *self._chunks, active,
                                self._steps, self._hyper(np.float64))


class Adam(Optimizer):
    """Adam with bias correction: ``m̂ = m/(1−β₁ᵗ)``, ``v̂ = v/(1−β₂ᵗ)`` (``amsgrad``: the
    running maximum of ``v``), ``θ ← θ − η m̂/(√v̂ + ε)``. ``weight_decay`` adds ``λθ`` to
    the gradient, or with ``decoupled_weight_decay`` scales ``θ ← θ(1 − ηλ)`` (AdamW)."""

    state_slots = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    hyper_names = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                   "decoupled_weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        check_torch_flags(differentiable)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _validate(self, group):
        _check_common(group, "lr", "eps", "weight_decay")
        _check_betas(group)

    def _update(self, active, hyper):
        kernels.adam_update(self.flat_params, self.flat_grads, self.state_buffers["exp_avg"],
                            self.state_buffers["exp_avg_sq"],
                            self.state_buffers["max_exp_avg_sq"], *self._chunks, active,
                            self._steps, hyper)


class AdamW(Adam):
    """Adam with decoupled weight decay: ``θ ← θ(1 − ηλ)`` before the Adam step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         differentiable=differentiable, decoupled_weight_decay=True)


class Adamax(Optimizer):
    """Adamax (Adam in the infinity norm): ``m ← β₁m + (1−β₁)g``;
    ``u ← max(β₂u, |g| + ε)``; ``θ ← θ − η/(1−β₁ᵗ) · m/u``."""

    state_slots = ("exp_avg", "exp_inf")
    hyper_names = ("lr", "betas", "eps", "weight_decay", "maximize")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        check_torch_flags(differentiable)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, maximize=maximize))

    def _validate(self, group):
        _check_common(group, "lr", "eps", "weight_decay")
        _check_betas(group)

    def _update(self, active, hyper):
        kernels.adamax_update(self.flat_params, self.flat_grads, self.state_buffers["exp_avg"],
                              self.state_buffers["exp_inf"], *self._chunks, active,
                              self._steps, self._hyper(np.float64))


class NAdam(Optimizer):
    """Adam with Nesterov momentum (Dozat 2016) and torch's momentum schedule.

    ``μₜ = β₁(1 − ½·0.96^(tψ))`` (ψ = ``momentum_decay``), ``Πₜ = μ₁⋯μₜ``;
    ``θ ← θ − η(1−μₜ)/(1−Πₜ) · g/d − η μₜ₊₁/(1−Πₜμₜ₊₁) · m/d`` with
    ``d = √(v/(1−β₂ᵗ)) + ε``. ``decoupled_weight_decay`` scales ``θ(1 − ηλ)``
    instead of adding ``λθ`` to ``g``.
    """

    state_slots = ("exp_avg", "exp_avg_sq")
    scalar_state = {"mu_product": 1.0}
    hyper_names = ("lr", "betas", "eps", "weight_decay", "momentum_decay",
                   "decoupled_weight_decay", "maximize")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        check_torch_flags(differentiable)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def _validate(self, group):
        _check_common(group, "lr", "eps", "weight_decay", "momentum_decay")
        _check_betas(group)

    @staticmethod
    def _mu(beta1, momentum_decay, step):
        return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))

    def _update(self, active, hyper):
        hyper = self._hyper(np.float64)
        lr, beta1, beta2, momentum_decay = hyper[:, 0], hyper[:, 1], hyper[:, 2], hyper[:, 5]
        steps = self._steps.astype(np.float64)
        mu = self._mu(beta1, momentum_decay, steps)
        mu_next = self._mu(beta1, momentum_decay, steps + 1)
        product = self._scalars["mu_product"]
        product[active] *= mu[active]
        with np.errstate(divide="ignore", invalid="ignore"):   # idle parameters: unused
            coefficients = np.stack([lr * (1.0 - mu) / (1.0 - product),
                                     lr * mu_next / (1.0 - product * mu_next),
                                     1.0 - beta2 ** steps], axis=1)
        kernels.nadam_update(self.flat_params, self.flat_grads, self.state_buffers["exp_avg"],
                             self.state_buffers["exp_avg_sq"], *self._chunks, active, hyper,
                             np.ascontiguousarray(coefficients))

    def _recompute_scalar(self, name, index):
        """``mu_product`` from the step count, for a state saved without it."""
        group = self.param_groups[self._group_of[index]]
        steps = np.arange(1, self._steps[index] + 1, dtype=np.float64)
        return float(np.prod(self._mu(group["betas"][0], group["momentum_decay"], steps)))


class RAdam(Optimizer):
    """Rectified Adam (Liu et al. 2019): with ``ρ∞ = 2/(1−β₂) − 1`` and
    ``ρₜ = ρ∞ − 2tβ₂ᵗ/(1−β₂ᵗ)``, ``θ ← θ − η m̂ · r √(1−β₂ᵗ)/(√v + ε)`` while
    ``ρₜ > 5`` (``r`` the variance rectification), else ``θ ← θ − η m̂``."""

    state_slots = ("exp_avg", "exp_avg_sq")
    hyper_names = ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "maximize")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        check_torch_flags(differentiable)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def _validate(self, group):
        _check_common(group, "lr", "eps", "weight_decay")
        _check_betas(group)

    def _update(self, active, hyper):
        kernels.radam_update(self.flat_params, self.flat_grads, self.state_buffers["exp_avg"],
                             self.state_buffers["exp_avg_sq"], *self._chunks, active,
                             self._steps, self._hyper(np.float64))
