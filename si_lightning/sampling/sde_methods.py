"""One step of a generative SDE (docs/math.md section 4): exponential Euler-Maruyama, Euler-Maruyama, stochastic Heun.

Each method first makes a ``StepPlan`` from the time grid (everything that depends on t alone, computed once
per solve, so the steps need no host sync), then steps with it. The drift is b + w s for a score weight w:
w = eps for the forward SDE (b_F), w = -eps for the backward one (b_B).

**Exponential Euler-Maruyama** (the default). Write x_t = m_t + alpha_bar_t zeta, zeta ~ N(0, I) the Gaussian
part of x_t (alpha_bar^2 = alpha^2 + gamma^2 with a Gaussian base, gamma^2 with a data-dependent one) and m_t the
rest (beta x1, or alpha x0 + beta x1). Tweedie gives E[m_t | x] = x + alpha_bar^2 s and, since
b = E[m_t' | x] + (alpha_bar' / alpha_bar) E[alpha_bar zeta | x], E[m_t' | x] = b + alpha_bar alpha_bar' s. Holding
that posterior fixed over a step, the SDE is linear in y = x - m (both directions):

    dy = (alpha_bar' / alpha_bar -+ eps / alpha_bar^2) y dt + sqrt(2 eps) dW,

solved exactly: y_{t'} = Phi y_t + N(0, Sigma), with E = |int_t^{t'} eps / alpha_bar^2 du| and

    Phi = (alpha_bar_{t'} / alpha_bar_t) exp(-E),    Sigma = alpha_bar_{t'}^2 (1 - exp(-2 E))

(the variance alpha_bar^2 of the Gaussian part is carried exactly). Moving m by one Euler step,
m_{t'} = m_t + h E[m' | x], the whole step is

    x_{t'} = x + h b + c s + sqrt(Sigma) xi,    c = alpha_bar_t^2 (1 - Phi) + h alpha_bar_t alpha_bar_t':

an Euler-Maruyama step whose score weight is c / h instead of +-eps, with the exact noise variance. The part
of the state linear in x is multiplied by Phi, in (0, alpha_bar_{t'} / alpha_bar_t] at any step size, where
Euler-Maruyama multiplies it by 1 + h (alpha_bar' / alpha_bar - eps / alpha_bar^2): below -1 once
h eps / alpha_bar^2 > 2 + h alpha_bar' / alpha_bar (the sbdm eps grows like 1 / t near t = 0). As h -> 0,
c / h -> +-eps and Sigma -> 2 eps |h|, so both are first order; with eps = 0 the step is DDIM's. It needs the
fields' interpolant (alpha_bar and int eps / alpha_bar^2, closed form for sbdm).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from si_lightning.interpolants import Interpolant
from si_lightning.sampling.diffusion import Diffusion

Drift = Callable[[Tensor, Tensor, Tensor], Tensor]  # (t 0-d, x (batch, ...), w 0-d) -> b + w s, shaped like x


@dataclass(frozen=True)
class StepPlan:
    """What the steps read, on the state's device and dtype.

    times (steps + 1,): the grid; eps (steps + 1,): eps(t) on it; score_weight (steps,): the w of the drift
    b + w s on each step; noise_scale (steps,): the factor of xi ~ N(0, I) added on each step;
    direction: +1 for the forward SDE, -1 for the backward one.
    """

    times: Tensor
    eps: Tensor
    score_weight: Tensor
    noise_scale: Tensor
    direction: float


class SDEMethod(ABC):
    """A plan from the grid, then one step from times[index] to times[index + 1] with noise ~ N(0, I)."""

    def plan(
        self, grid: Tensor, diffusion: Diffusion, interpolant: Interpolant | None, direction: float, what: str
    ) -> StepPlan:
        """Explicit weights: w = direction * eps(t_k), noise sqrt(2 eps(t_k) |h_k|)."""
        eps = diffusion.on_grid(grid, interpolant)
        step = grid[1:] - grid[:-1]
        return StepPlan(grid, eps, direction * eps[:-1], torch.sqrt(2 * eps[:-1] * step.abs()), direction)

    @abstractmethod
    def step(self, drift: Drift, plan: StepPlan, index: int, x: Tensor, noise: Tensor) -> Tensor: ...


class EulerMaruyama(SDEMethod):
    """x + h (b + w s) + sqrt(2 eps(t) |h|) xi with w = +-eps(t): one evaluation per step."""

    def step(self, drift: Drift, plan: StepPlan, index: int, x: Tensor, noise: Tensor) -> Tensor:
        t = plan.times[index]
        step = plan.times[index + 1] - t
        return x + step * drift(t, x, plan.score_weight[index]) + plan.noise_scale[index] * noise


class ExponentialEulerMaruyama(EulerMaruyama):
    """The Euler-Maruyama step with the exponential plan of the module docstring: one evaluation per step."""

    def plan(
        self, grid: Tensor, diffusion: Diffusion, interpolant: Interpolant | None, direction: float, what: str
    ) -> StepPlan:
        if interpolant is None:
            raise ValueError(
                f"{what}: SDE method 'exponential-euler' needs fields that carry their interpolant "
                "(alpha_bar and eps / alpha_bar^2 on each step); method='euler-maruyama' does not"
            )
        eps = diffusion.on_grid(grid, interpolant)
        times = grid.to(torch.float64)
        start, end = times[:-1], times[1:]
        gaussian = interpolant.gaussian_base
        here = interpolant.coefficients(start)
        variance, rate = here.noise_variance(gaussian), here.noise_variance_rate(gaussian)
        variance_next = interpolant.coefficients(end).noise_variance(gaussian)
        exponent = diffusion.noise_integral(start, end, interpolant).abs()  # E >= 0
        log_decay = 0.5 * (torch.log(variance_next) - torch.log(variance)) - exponent  # log Phi
        step = end - start
        # c = alpha_bar^2 (1 - Phi) + h alpha_bar alpha_bar'; expm1 keeps 1 - Phi exact for a small step.
        score_coefficient = -variance * torch.expm1(log_decay) + step * rate
        noise_variance = -variance_next * torch.expm1(-2 * exponent)
        return StepPlan(
            grid, eps, (score_coefficient / step).to(grid.dtype), noise_variance.sqrt().to(grid.dtype), direction
        )


class StochasticHeun(SDEMethod):
    """Heun for additive noise: predictor x + h f + sigma dW, corrector with averaged f and sigma.

    sigma = sqrt(2 eps); strong order 1 for noise that does not depend on x. Two evaluations per step.
    """

    def step(self, drift: Drift, plan: StepPlan, index: int, x: Tensor, noise: Tensor) -> Tensor:
        t, t_next = plan.times[index], plan.times[index + 1]
        eps, eps_next = plan.eps[index], plan.eps[index + 1]
        step = t_next - t
        increment = torch.sqrt(step.abs()) * noise
        sigma, sigma_next = torch.sqrt(2 * eps), torch.sqrt(2 * eps_next)
        slope = drift(t, x, plan.direction * eps)
        predicted = x + step * slope + sigma * increment
        corrected_slope = drift(t_next, predicted, plan.direction * eps_next)
        return x + 0.5 * step * (slope + corrected_slope) + 0.5 * (sigma + sigma_next) * increment


SDE_METHODS: dict[str, type[SDEMethod]] = {
    "exponential-euler": ExponentialEulerMaruyama,
    "euler-maruyama": EulerMaruyama,
    "heun": StochasticHeun,
}
