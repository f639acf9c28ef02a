"""The energy-consistent conditional interpolant of a forecast step (docs/math.md section 9).

x0 is the current state, x1 the state one step later, tau in [0, 1] the pseudo-time of the step:

    x_tau = alpha(tau) x0 + beta(tau) x1 + sigma(tau) W_tau,   sigma(tau) = eps (1 - tau),

W a Wiener process (at one tau, W_tau = sqrt(tau) z). The drift b(x, x0, tau) regresses
R_tau = alpha' x0 + beta' x1 + sigma' W_tau, and dX = b dtau + sigma dW from X_0 = x0 has the law of x_tau
at every tau, so X_1 is a draw of the next state given x0. alpha = 1 - F_alpha, beta = F_beta with
learnable monotone F (``MonotoneSchedule``) trained by the energy loss; with ``project`` the noise, the
drift and the state are Leray-projected (divergence-free).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from si_lightning.checks import is_integer
from si_lightning.forecasting.schedules import MonotoneSchedule
from si_lightning.interpolants import Interpolant
from si_lightning.interpolants.interpolant import Coefficients, broadcast_time
from si_lightning.physics import kinetic_energy, leray_projection, projection_trace

Network = Callable[[Tensor, Tensor], Tensor]  # (x (batch, 2, H, W), tau (batch,)) -> drift, x0 bound in


class EnergyConsistentInterpolant(nn.Module, Interpolant):
    """The forecasting interpolant above, with learnable (or fixed linear) alpha, beta.

    Args:
        noise: eps >= 0, the scale of sigma(tau) = eps (1 - tau).
        learnable: train alpha, beta with the energy loss; False keeps alpha = 1 - tau, beta = tau.
        degree: the Bernstein degree of each schedule.
        project: Leray-project noise, drift and state (velocity fields (batch, 2, H, W) only).
        energy_weight: the weight of the energy loss in the per-sample loss.
        energy_points: the tau midpoints the energy loss averages over.
        gaussian_base: must be False: x0 is a data state (the CLI sets it from the data's coupling).
    """

    def __init__(
        self,
        noise: float = 0.5,
        learnable: bool = True,
        degree: int = 8,
        project: bool = True,
        energy_weight: float = 1.0,
        energy_points: int = 32,
        gaussian_base: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        Interpolant.__init__(self, schedule="linear", gamma="zero", gaussian_base=False)
        if gaussian_base:
            raise ValueError(
                "gaussian_base = True: expected false; the forecasting interpolant starts from a data state "
                "(use KolmogorovFlowDataModule, whose coupling is next-state)"
            )
        if not 0 <= noise < float("inf"):
            raise ValueError(f"noise = {noise!r}: expected eps >= 0")
        if not 0 <= energy_weight < float("inf"):
            raise ValueError(f"energy_weight = {energy_weight!r}: expected a number >= 0")
        if not is_integer(energy_points) or energy_points < 1:
            raise ValueError(f"energy_points = {energy_points!r}: expected an integer >= 1")
        self.noise, self.learnable, self.project = float(noise), bool(learnable), bool(project)
        self.energy_weight, self.energy_points = float(energy_weight), energy_points
        self.alpha_schedule, self.beta_schedule = MonotoneSchedule(degree), MonotoneSchedule(degree)
        self.requires_grad_(self.learnable)

    def __repr__(self) -> str:
        return (
            f"EnergyConsistentInterpolant(noise={self.noise}, learnable={self.learnable}, "
            f"project={self.project}, energy_weight={self.energy_weight})"
        )

    # ----------------------------------------------------------------------------- coefficients
    def schedules(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(alpha, beta, alpha', beta') at tau = t (batch,), each (batch,)."""
        falling, falling_rate = self.alpha_schedule(t)
        rising, rising_rate = self.beta_schedule(t)
        return 1 - falling, rising, -falling_rate, rising_rate

    def sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(sigma, sigma') = (eps (1 - tau), -eps), each shaped like t."""
        return self.noise * (1 - t), torch.full_like(t, -self.noise)

    def coefficients(self, t: Tensor) -> Coefficients:
        """The marginal coefficients: x_tau has the law of alpha x0 + beta x1 + gamma z, gamma = sigma sqrt(tau)."""
        alpha, beta, alpha_dot, beta_dot = self.schedules(t)
        sigma, sigma_dot = self.sigma(t)
        root = t.clamp_min(0).sqrt()
        gamma = sigma * root
        gamma_gamma_dot = sigma * sigma_dot * t + 0.5 * sigma**2  # (1/2) d/dtau (sigma^2 tau)
        gamma_dot = torch.where(gamma > 0, gamma_gamma_dot / gamma.clamp_min(1e-30), torch.zeros_like(t))
        return Coefficients(alpha, beta, gamma, alpha_dot, beta_dot, gamma_dot, alpha * alpha_dot, gamma_gamma_dot)

    def projected(self, field: Tensor) -> Tensor:
        return leray_projection(field) if self.project else field

    # ---------------------------------------------------------------------------------- training
    def state_and_target(self, x0: Tensor, x1: Tensor, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(x_tau, R_tau) (batch, ...) with W_tau = sqrt(tau) P z; the schedules enter without gradient."""
        with torch.no_grad():
            alpha, beta, alpha_dot, beta_dot = (broadcast_time(value, x0) for value in self.schedules(t))
        sigma, sigma_dot = (broadcast_time(value, x0) for value in self.sigma(t))
        wiener = broadcast_time(t.clamp_min(0).sqrt(), x0) * self.projected(z)
        return alpha * x0 + beta * x1 + sigma * wiener, alpha_dot * x0 + beta_dot * x1 + sigma_dot * wiener

    def drift(self, network: Network, x: Tensor, t: Tensor) -> Tensor:
        """b(x, x0, tau) = P(network(x, tau)) (x0 reaches the network through its condition)."""
        return self.projected(network(x, t))

    def expected_energy(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """E_z K(x_tau) (batch, P) at the taus t (P,), K(u) = (1/2) mean |u|^2, in closed form.

        (1/2)(alpha^2 |x0|^2 + 2 alpha beta x0.x1 + beta^2 |x1|^2 + sigma^2 tau E|P z|^2) / (H W), where
        E|P z|^2 is the trace of the projection (2 H W without it).
        """
        alpha, beta, _, _ = self.schedules(t)
        sigma, _ = self.sigma(t)
        points = x0[0, 0].numel()
        trace = projection_trace(*x0.shape[-2:]) if self.project else x0[0].numel()
        first, second = 2 * kinetic_energy(x0)[:, None], 2 * kinetic_energy(x1)[:, None]
        cross = (x0 * x1).flatten(1).sum(1)[:, None] / points
        squared = alpha**2 * first + 2 * alpha * beta * cross + beta**2 * second + sigma**2 * t * trace / points
        return 0.5 * squared

    def energy_residual(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """(P,) relative error of the batch's mean energy path at the taus t (P,): (E K(x_tau) - E K_phys) / E K_phys.

        E averages over the pairs of the batch and z; K_phys(tau) = (1 - tau) K(x0) + tau K(x1) is the energy
        of the physical trajectory between the two states, to first order in the step.
        """
        physical = ((1 - t) * kinetic_energy(x0)[:, None] + t * kinetic_energy(x1)[:, None]).mean(0)
        return (self.expected_energy(x0, x1, t).mean(0) - physical) / physical

    def energy_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The mean over ``energy_points`` tau midpoints of the squared ``energy_residual`` (a scalar)."""
        t = (torch.arange(self.energy_points, device=x0.device, dtype=x0.dtype) + 0.5) / self.energy_points
        return self.energy_residual(x0, x1, t).pow(2).mean()

    def training_loss(self, network: Network, x0: Tensor, x1: Tensor, t: Tensor, z: Tensor | None) -> Tensor:
        """Per-sample loss (batch,): mean |b - R|^2 over the entries, plus energy_weight x the batch's energy loss.

        The drift loss does not reach the schedules and the energy loss does not reach the network: both are
        trained in every step, each by its own objective.
        """
        z = torch.randn_like(x0) if z is None else z
        x, target = self.state_and_target(x0, x1, t, z)
        loss = (self.drift(network, x, t) - target).pow(2).flatten(1).mean(1)
        if self.learnable and self.energy_weight > 0:
            loss = loss + self.energy_weight * self.energy_loss(x0.detach(), x1.detach())
        return loss

    # ---------------------------------------------------------------------------------- sampling
    def forecast(self, network: Network, x0: Tensor, steps: int, noise: Callable[[int], Tensor]) -> Tensor:
        """X_1 from X_0 = x0 (batch, ...) by ``steps`` Euler-Maruyama steps of dX = b dtau + sigma dW.

        The drift is taken at the step's start; the noise of step k is the stochastic integral of the
        deterministic sigma over the step, exactly N(0, int sigma^2 dtau), not sigma(tau_k)^2 h: with
        sigma = eps (1 - tau) the left-point variance overshoots the total eps^2 / 3 by a relative
        3 / (2 n) + 1 / (2 n^2) over n steps (20 % at 8), and white noise lands on the small scales.
        ``noise(k)`` gives the standard normal increment of step k (batch, ...); the state is projected at
        the end (its increments already are; this removes rounding).
        """
        if not is_integer(steps) or steps < 1:
            raise ValueError(f"steps = {steps!r}: expected an integer >= 1")
        h, x = 1.0 / steps, x0
        for k in range(steps):
            t = torch.full((x0.shape[0],), k * h, dtype=x0.dtype, device=x0.device)
            x = x + h * self.drift(network, x, t)
            deviation = self.step_noise(k * h, (k + 1) * h)
            if deviation > 0:
                x = x + deviation * self.projected(noise(k))
        return self.projected(x)

    def step_noise(self, start: float, end: float) -> float:
        """sqrt(int_start^end sigma(tau)^2 dtau) = eps sqrt(((1 - start)^3 - (1 - end)^3) / 3)."""
        return self.noise * max((1 - start) ** 3 - (1 - end) ** 3, 0.0) ** 0.5 / 3**0.5


class OneStepRegression(nn.Module, Interpolant):
    """The deterministic baseline: x1 = x0 + network(x0, 0), trained by mean |x0 + network(x0, 0) - x1|^2.

    The same backbone and condition as the interpolant (tau is held at 0); ``forecast`` ignores the
    step count and the noise.

    Args:
        gaussian_base: must be False (set by the CLI from the data's coupling).
    """

    def __init__(self, gaussian_base: bool = False) -> None:
        nn.Module.__init__(self)
        Interpolant.__init__(self, schedule="linear", gamma="zero", gaussian_base=False)
        if gaussian_base:
            raise ValueError("gaussian_base = True: expected false; the regression predicts from a data state")
        self.noise = 0.0

    def __repr__(self) -> str:
        return "OneStepRegression()"

    def training_loss(self, network: Network, x0: Tensor, x1: Tensor, t: Tensor, z: Tensor | None) -> Tensor:
        zero = torch.zeros_like(t)
        return (x0 + network(x0, zero) - x1).pow(2).flatten(1).mean(1)

    def forecast(self, network: Network, x0: Tensor, steps: int, noise: Callable[[int], Tensor]) -> Tensor:
        return x0 + network(x0, torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device))
