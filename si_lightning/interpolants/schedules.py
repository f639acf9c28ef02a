"""The (alpha, beta) schedules of docs/math.md section 1, each with closed-form derivatives.

Convention (docs/math.md section 0): x_t = alpha x0 + beta x1 + gamma z, t = 0 base, t = 1 data,
alpha(0) = beta(1) = 1, alpha(1) = beta(0) = 0. A schedule may depend on gamma (vp-trig) and
declares which gamma families it accepts, whether x0 must be a standard Gaussian (one-sided),
and where its own derivatives are singular. Where alpha' is singular at an end (sbdm, vp at t = 1)
the schedule also gives alpha alpha' in closed form, finite there, so that the variance rate of
x_t's Gaussian part never multiplies 0 by infinity.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

from si_lightning.interpolants.gamma import GOUB_RATE


class AlphaBeta(NamedTuple):
    """alpha, beta, their derivatives and alpha alpha', each shaped like t."""

    alpha: Tensor
    beta: Tensor
    alpha_dot: Tensor
    beta_dot: Tensor
    alpha_alpha_dot: Tensor | None = None  # None: alpha * alpha_dot (finite wherever alpha' is)


class Schedule(ABC):
    """alpha(t), beta(t) and their derivatives; gamma and gamma gamma' are passed in for vp-trig."""

    one_sided: bool = False  # x0 ~ N(0, I) is the noise and gamma must be zero
    base_absent: bool = False  # alpha == 0: x0 never enters x_t (mirror)
    default_gamma: str = "zero"
    allowed_gammas: tuple[str, ...] | None = None  # None: any family
    singular_at_start: bool = False  # alpha' or beta' infinite at t = 0
    singular_at_end: bool = False  # alpha' or beta' infinite at t = 1
    signal_at_base: float = 0.0  # beta(0): the data's share of x_0, 0 except for vp (whose base is not pure noise)

    @abstractmethod
    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta: ...

    def check_gamma(self, name: str, maximum: float) -> None:
        """Raise a ValueError when the gamma family ``name`` with max value ``maximum`` is not allowed."""
        if self.allowed_gammas is not None and name not in self.allowed_gammas:
            raise ValueError(f"schedule {self.name!r} needs gamma in {list(self.allowed_gammas)}, got gamma={name!r}")

    @property
    def name(self) -> str:
        return next(key for key, value in SCHEDULES.items() if value is type(self))


class Linear(Schedule):
    """alpha = 1 - t, beta = t ([U] Table 4; not the "alpha = t" typo of [U] eq 4.9)."""

    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta:
        return AlphaBeta(1 - t, t, -torch.ones_like(t), torch.ones_like(t))


class Trig(Schedule):
    """alpha = cos(pi t / 2), beta = sin(pi t / 2) (GVP in [SiT] when gamma = 0)."""

    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta:
        angle = math.pi * t / 2
        return AlphaBeta(
            torch.cos(angle), torch.sin(angle), -math.pi / 2 * torch.sin(angle), math.pi / 2 * torch.cos(angle)
        )


class VPTrig(Schedule):
    """alpha = sqrt(1 - gamma^2) cos(pi t/2), beta = sqrt(1 - gamma^2) sin(pi t/2).

    alpha^2 + beta^2 + gamma^2 = 1; d/dt sqrt(1 - gamma^2) = -gamma gamma' / sqrt(1 - gamma^2), finite
    even at the ends for the Brownian gamma (gamma' infinite there) since gamma gamma' = a (1 - 2t) / 2.
    """

    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta:
        root = torch.sqrt(1 - gamma**2)
        root_dot = -gamma_gamma_dot / root
        angle = math.pi * t / 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        return AlphaBeta(
            root * cos,
            root * sin,
            root_dot * cos - root * math.pi / 2 * sin,
            root_dot * sin + root * math.pi / 2 * cos,
        )

    def check_gamma(self, name: str, maximum: float) -> None:
        if maximum >= 1:
            raise ValueError(f"schedule 'vp-trig' needs gamma < 1 on [0, 1], got max gamma = {maximum:.4g}")


class EncoderDecoder(Schedule):
    """alpha = cos^2(pi t) on [0, 1/2), beta = cos^2(pi t) on (1/2, 1], gamma = sin^2(pi t): x_{1/2} = z."""

    default_gamma = "sine-squared"
    allowed_gammas = ("sine-squared",)

    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta:
        value = torch.cos(math.pi * t) ** 2
        slope = -math.pi * torch.sin(2 * math.pi * t)
        first_half = t < 0.5
        zero = torch.zeros_like(t)
        return AlphaBeta(
            torch.where(first_half, value, zero),
            torch.where(t > 0.5, value, zero),
            torch.where(first_half, slope, zero),
            torch.where(t > 0.5, slope, zero),
        )


class OneSidedLinear(Linear):
    """alpha = 1 - t multiplying a Gaussian x0, beta = t, gamma = 0."""

    one_sided = True
    allowed_gammas = ("zero",)


class OneSidedTrig(Trig):
    """alpha = cos(pi t / 2) multiplying a Gaussian x0, beta = sin(pi t / 2), gamma = 0."""

    one_sided = True
    allowed_gammas = ("zero",)


class ScoreBasedDiffusion(Schedule):
    """sbdm: alpha = sqrt(1 - t^2), beta = t, gamma = 0; alpha' = -t / alpha is singular at t = 1, alpha alpha' = -t."""

    one_sided = True
    allowed_gammas = ("zero",)
    singular_at_end = True

    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta:
        alpha = torch.sqrt(1 - t**2)
        return AlphaBeta(alpha, t, -t / alpha, torch.ones_like(t), -t)


class VariancePreserving(Schedule):
    """SiT's VP path (beta_min = 0.1, beta_max = 20) in this convention: x_t = alpha x0 + beta x1 with x0 ~ N(0, I).

    With s = 1 - t the diffusion time and log m(s) = -(1/4) s^2 (beta_max - beta_min) - (1/2) s beta_min the
    log mean coefficient of the VP SDE,

        beta(t) = m(1 - t),   alpha(t) = sqrt(1 - beta^2),
        beta'(t) = beta r(t),   alpha alpha' = -beta^2 r(t),   alpha' = -beta^2 r / alpha,
        r(t) = (beta_min + (1 - t) (beta_max - beta_min)) / 2.

    alpha' is singular at t = 1 (alpha = 0 there; alpha alpha' = -beta_min / 2 stays finite). The base end is
    not exactly pure noise: beta(0) = exp(log m(1)) = exp(-5.025) = 6.57e-3 (``signal_at_base``) and
    alpha(0) = sqrt(1 - beta(0)^2). These are SiT's exact coefficients, kept as they are rather than
    renormalised: every sampler starts from x0 ~ N(0, I) at t = 0, which is the law of x_0 up to that
    share of the data (as in SiT), and the valid interval is [0, 1 - endpoint_eps].
    """

    one_sided = True
    allowed_gammas = ("zero",)
    singular_at_end = True
    beta_min: float = 0.1
    beta_max: float = 20.0
    signal_at_base = math.exp(-0.25 * (beta_max - beta_min) - 0.5 * beta_min)

    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta:
        diffusion_time = 1 - t
        log_beta = -0.25 * diffusion_time**2 * (self.beta_max - self.beta_min) - 0.5 * diffusion_time * self.beta_min
        beta = torch.exp(log_beta)
        rate = 0.5 * (self.beta_min + diffusion_time * (self.beta_max - self.beta_min))  # d log beta / dt
        alpha = torch.sqrt(-torch.expm1(2 * log_beta))  # 1 - beta^2 without cancellation as beta -> 1
        alpha_alpha_dot = -(beta**2) * rate
        return AlphaBeta(alpha, beta, alpha_alpha_dot / alpha, beta * rate, alpha_alpha_dot)


class OrnsteinUhlenbeckBridgeMean(Schedule):
    """goub: beta = sinh(L t) / sinh L, alpha = 1 - beta, L = ``GOUB_RATE`` (docs/math.md section 11).

    The mean of the generalized Ornstein-Uhlenbeck bridge (GOUB) between a degraded image x0 (t = 0) and
    the clean x1 (t = 1) with a constant mean-reversion rate: it stays near x0 longer than the linear
    schedule and turns to x1 late. alpha + beta = 1 exactly, so a pixel with x0 = x1 has the mean x1 at
    every t. As L -> 0 it is the linear schedule (the Brownian bridge of BBDM).
    """

    default_gamma = "goub"
    rate: float = GOUB_RATE

    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta:
        beta = torch.sinh(self.rate * t) / math.sinh(self.rate)
        beta_dot = self.rate * torch.cosh(self.rate * t) / math.sinh(self.rate)
        return AlphaBeta(1 - beta, beta, -beta_dot, beta_dot)


class Mirror(Schedule):
    """alpha = 0 (x0 = x1), beta = 1, gamma > 0: rho0 = rho1 and b = gamma' eta_z."""

    base_absent = True
    default_gamma = "brownian"
    allowed_gammas = ("brownian", "quadratic", "sine-squared")

    def __call__(self, t: Tensor, gamma: Tensor, gamma_gamma_dot: Tensor) -> AlphaBeta:
        zero = torch.zeros_like(t)
        return AlphaBeta(zero, torch.ones_like(t), zero, zero)


SCHEDULES: dict[str, type[Schedule]] = {
    "linear": Linear,
    "trig": Trig,
    "vp-trig": VPTrig,
    "encoder-decoder": EncoderDecoder,
    "one-sided-linear": OneSidedLinear,
    "one-sided-trig": OneSidedTrig,
    "sbdm": ScoreBasedDiffusion,
    "vp": VariancePreserving,
    "mirror": Mirror,
    "goub": OrnsteinUhlenbeckBridgeMean,
}
