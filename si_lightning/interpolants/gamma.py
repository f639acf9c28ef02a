"""Latent-noise coefficients gamma(t) of docs/math.md section 1 ([U] Table 8), each with gamma'(t).

Each family has a scale ``a``; ``singular_at_ends`` says whether gamma' blows up at t = 0 and
t = 1 (the Brownian family is not C^1 there), which shrinks the interpolant's valid interval.
The product gamma gamma' (half the rate of the variance gamma^2) stays finite even there, so every
family also returns it in closed form (``gamma_gamma_dot``): multiplying gamma = 0 by gamma' = inf
at an end would give NaN, and replacing it by 0 would be wrong (the Brownian limit is a / 2).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Gamma(ABC):
    """gamma(t) >= 0 with gamma(0) = gamma(1) = 0; ``__call__`` returns (gamma, gamma')."""

    singular_at_ends: bool = False
    is_zero: bool = False

    def __init__(self, scale: float = 1.0) -> None:
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"gamma_scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)

    @abstractmethod
    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]: ...

    @abstractmethod
    def gamma_gamma_dot(self, t: Tensor) -> Tensor:
        """gamma(t) gamma'(t) = (1/2) d/dt gamma^2 in closed form, finite on all of [0, 1]; shaped like t."""

    @abstractmethod
    def maximum(self) -> float:
        """max over t in [0, 1] of gamma(t)."""


class Brownian(Gamma):
    """gamma = sqrt(a t (1 - t)): the Brownian-bridge noise; gamma' = a (1 - 2t) / (2 gamma).

    gamma' is infinite at t = 0 and t = 1; gamma gamma' = a (1 - 2t) / 2 is not (a / 2 and -a / 2 there).
    """

    singular_at_ends = True

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        gamma = torch.sqrt(self.scale * t * (1 - t))
        return gamma, self.scale * (1 - 2 * t) / (2 * gamma)

    def gamma_gamma_dot(self, t: Tensor) -> Tensor:
        return self.scale * (1 - 2 * t) / 2

    def maximum(self) -> float:
        return math.sqrt(self.scale / 4)


class Quadratic(Gamma):
    """gamma = a t (1 - t); gamma' = a (1 - 2t); gamma gamma' = a^2 t (1 - t) (1 - 2t)."""

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.scale * t * (1 - t), self.scale * (1 - 2 * t)

    def gamma_gamma_dot(self, t: Tensor) -> Tensor:
        return self.scale**2 * t * (1 - t) * (1 - 2 * t)

    def maximum(self) -> float:
        return self.scale / 4


class SineSquared(Gamma):
    """gamma = a sin^2(pi t); gamma' = a pi sin(2 pi t); gamma gamma' = a^2 pi sin^2(pi t) sin(2 pi t)."""

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.scale * torch.sin(math.pi * t) ** 2, self.scale * math.pi * torch.sin(2 * math.pi * t)

    def gamma_gamma_dot(self, t: Tensor) -> Tensor:
        return self.scale**2 * math.pi * torch.sin(math.pi * t) ** 2 * torch.sin(2 * math.pi * t)

    def maximum(self) -> float:
        return self.scale


GOUB_RATE = 3.0  # theta_bar: the total mean-reversion of the generalized OU bridge (schedule and gamma "goub")


class OrnsteinUhlenbeckBridge(Gamma):
    """gamma^2 = a sinh(L t) sinh(L (1 - t)) / (L sinh L), L = ``GOUB_RATE``: the noise of the GOUB bridge.

    The variance of an Ornstein-Uhlenbeck process of constant mean-reversion rate (total L over the unit
    interval) pinned at both ends, in this time convention (docs/math.md section 11). As L -> 0 it is the
    Brownian a t (1 - t). gamma gamma' = a sinh(L (1 - 2t)) / (2 sinh L), finite at the ends where gamma'
    is infinite: a / 2 at t = 0 and -a / 2 at t = 1, as for the Brownian family.
    """

    singular_at_ends = True
    rate: float = GOUB_RATE

    def variance(self, t: Tensor) -> Tensor:
        rate = self.rate
        return self.scale * torch.sinh(rate * t) * torch.sinh(rate * (1 - t)) / (rate * math.sinh(rate))

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        gamma = torch.sqrt(self.variance(t))
        return gamma, self.gamma_gamma_dot(t) / gamma

    def gamma_gamma_dot(self, t: Tensor) -> Tensor:
        return self.scale * torch.sinh(self.rate * (1 - 2 * t)) / (2 * math.sinh(self.rate))

    def maximum(self) -> float:
        return math.sqrt(self.scale * math.sinh(self.rate / 2) ** 2 / (self.rate * math.sinh(self.rate)))


class Zero(Gamma):
    """gamma = 0: no latent noise (deterministic or one-sided interpolants)."""

    is_zero = True

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), torch.zeros_like(t)

    def gamma_gamma_dot(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def maximum(self) -> float:
        return 0.0


GAMMAS: dict[str, type[Gamma]] = {
    "brownian": Brownian,
    "quadratic": Quadratic,
    "sine-squared": SineSquared,
    "goub": OrnsteinUhlenbeckBridge,
    "zero": Zero,
}
