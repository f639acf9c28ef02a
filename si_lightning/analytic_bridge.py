"""Closed-form oracle of a (residual-modulated) bridge around Gaussian data (docs/math.md section 11).

Given the degraded image x0 (batch, d), the clean image is Gaussian with per-pixel variance:

    x1 | x0 ~ N(mu, diag(v)),   v_i >= 0,   v_i = 0 and mu_i = x0_i on untouched pixels (x1 = x0 there),

and the bridge is x_t = alpha x0 + beta x1 + gamma m z with a per-pixel modulation m >= 0 (m = 1: an
unmodulated bridge). Pixels are independent given x0, so x_t | x0 is Gaussian per pixel with

    c_t = alpha x0 + beta mu,   V_t = beta^2 v + gamma^2 m^2,   (1/2) V_t' = beta beta' v + gamma gamma' m^2,

and every field is a per-pixel closed form (0/0 := 0 where V_t = 0: such a pixel is a point, x_t = c_t):

    b        = alpha' x0 + beta' mu + ((1/2) V_t' / V_t) (x - c_t)       (velocity)
    s        = -(x - c_t) / V_t                                          (score)
    E[x1|x]  = mu + (beta v / V_t) (x - c_t)                             (data)
    E[m z|x] = (gamma m^2 / V_t) (x - c_t)                               (denoiser of the modulated noise)

On an untouched pixel with m = 0, V_t = 0 and b = (alpha' + beta') x0 = 0 exactly for the bridges'
schedules (alpha = 1 - beta, so alpha' = -beta' to the bit).
"""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.interpolants import Interpolant, as_batch_time


class ResidualBridgeGaussian:
    """Exact velocity, score, data and denoiser of a bridge from given x0 to x1 | x0 ~ N(mu, diag(v)).

    Args:
        interpolant: a two-sided interpolant (a ``Bridge``) whose alpha, beta, gamma the fields follow.
        x0: the degraded images (batch, d).
        mean: mu (batch, d) or (d,); equal to x0 where ``variance`` is 0.
        variance: v (d,) >= 0, the clean pixels' variance given x0 (0: untouched pixel).
        modulation: m (d,) >= 0, the noise modulation; None for m = 1 (no modulation).
    """

    def __init__(
        self,
        interpolant: Interpolant,
        x0: Tensor,
        mean: Tensor,
        variance: Tensor,
        modulation: Tensor | None = None,
    ) -> None:
        if x0.dim() != 2:
            raise ValueError(f"x0 must have shape (batch, d), got {tuple(x0.shape)}")
        dim = x0.shape[1]
        mean = torch.as_tensor(mean, dtype=x0.dtype).expand_as(x0)
        variance = torch.as_tensor(variance, dtype=x0.dtype)
        modulation = (
            torch.ones(dim, dtype=x0.dtype) if modulation is None else torch.as_tensor(modulation, dtype=x0.dtype)
        )
        if variance.shape != (dim,) or bool((variance < 0).any()):
            raise ValueError(f"variance must be >= 0 with shape ({dim},), got {tuple(variance.shape)}")
        if modulation.shape != (dim,) or bool((modulation < 0).any()):
            raise ValueError(f"modulation must be >= 0 with shape ({dim},), got {tuple(modulation.shape)}")
        untouched = variance == 0
        if bool((mean[:, untouched] != x0[:, untouched]).any()):
            raise ValueError("mean must equal x0 on pixels with variance 0 (x1 = x0 there)")
        self.interpolant, self.x0, self.mean = interpolant, x0, mean
        self.variance, self.modulation, self.dim = variance, modulation, dim
        self.untouched = untouched

    def sample_data(self, generator: torch.Generator | None = None) -> Tensor:
        """x1 ~ N(mu, diag(v)) given x0: (batch, d); exactly x0 on untouched pixels."""
        noise = torch.randn(self.x0.shape, generator=generator, dtype=self.x0.dtype)
        return self.mean + self.variance.sqrt() * noise

    def _moments(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, object]:
        """(x - c_t, V_t, (1/2) V_t', coefficients), each (batch, d) but the coefficients (batch, 1)."""
        if x.shape != self.x0.shape:
            raise ValueError(f"expected x of shape {tuple(self.x0.shape)}, got {tuple(x.shape)}")
        t = as_batch_time(torch.as_tensor(t), x.shape[0], x)
        c = self.interpolant.coefficients(t)
        alpha, beta, gamma = (value[:, None] for value in (c.alpha, c.beta, c.gamma))
        beta_dot, gamma_gamma_dot = c.beta_dot[:, None], c.gamma_gamma_dot[:, None]
        m_squared = self.modulation**2
        variance = beta**2 * self.variance + gamma**2 * m_squared
        half_rate = beta * beta_dot * self.variance + gamma_gamma_dot * m_squared
        return x - (alpha * self.x0 + beta * self.mean), variance, half_rate, c

    @staticmethod
    def _ratio(numerator: Tensor, variance: Tensor) -> Tensor:
        """numerator / V_t with 0 where V_t = 0 (a point: the deviation from c_t is 0 there)."""
        point = variance == 0
        return torch.where(point, torch.zeros_like(numerator), numerator / torch.where(point, 1.0, variance))

    def velocity(self, t: Tensor | float, x: Tensor, cond: object = None) -> Tensor:
        """b(t, x) = alpha' x0 + beta' mu + ((1/2) V_t' / V_t) (x - c_t): (batch, d)."""
        deviation, variance, half_rate, c = self._moments(torch.as_tensor(t), x)
        drift = c.alpha_dot[:, None] * self.x0 + c.beta_dot[:, None] * self.mean
        return drift + self._ratio(half_rate * deviation, variance)

    def score(self, t: Tensor | float, x: Tensor, cond: object = None) -> Tensor:
        """s(t, x) = -(x - c_t) / V_t (0 where V_t = 0): (batch, d)."""
        deviation, variance, _, _ = self._moments(torch.as_tensor(t), x)
        return -self._ratio(deviation, variance)

    def velocity_and_score(self, t: Tensor | float, x: Tensor, cond: object = None) -> tuple[Tensor, Tensor]:
        return self.velocity(t, x), self.score(t, x)

    def data(self, t: Tensor | float, x: Tensor, cond: object = None) -> Tensor:
        """E[x1 | x_t = x] = mu + (beta v / V_t) (x - c_t): (batch, d)."""
        deviation, variance, _, c = self._moments(torch.as_tensor(t), x)
        return self.mean + self._ratio(c.beta[:, None] * self.variance * deviation, variance)

    def denoiser(self, t: Tensor | float, x: Tensor) -> Tensor:
        """E[m z | x_t = x] = (gamma m^2 / V_t) (x - c_t): (batch, d)."""
        deviation, variance, _, c = self._moments(torch.as_tensor(t), x)
        return self._ratio(c.gamma[:, None] * self.modulation**2 * deviation, variance)

    def marginal(self, t: float) -> tuple[Tensor, Tensor]:
        """(c_t (batch, d), V_t (d,)): the mean and per-pixel variance of x_t given x0."""
        c = self.interpolant.coefficients(torch.tensor([float(t)], dtype=self.x0.dtype))
        centre = c.alpha * self.x0 + c.beta * self.mean
        return centre, c.beta**2 * self.variance + c.gamma**2 * self.modulation**2
