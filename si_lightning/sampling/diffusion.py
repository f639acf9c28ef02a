"""Diffusion coefficients eps(t) >= 0 of the generative SDEs (docs/math.md section 4), each times a scale c.

eps is chosen after training; every family depends on t only (through the interpolant for sbdm
and sigma), so a sampler evaluates it once on its whole time grid and checks it there. With
alpha_bar^2 the variance of the Gaussian part of x_t (alpha^2 + gamma^2 for a Gaussian base):

    constant                eps = c
    sbdm                    eps = c (alpha_bar^2 beta' / beta - alpha_bar alpha_bar')   (KL-optimal, one-sided)
    sigma                   eps = c alpha_bar                                         (the noise coefficient)
    linear                  eps = c (1 - t)
    decreasing              eps = c (1 + cos(pi t))^2 / 4                             (c at t = 0, 0 at t = 1)
    increasing-decreasing   eps = c sin^2(pi t)

sbdm grows like c / t near t = 0 (beta -> 0): an explicit Euler-Maruyama step of size h there multiplies
x by about 1 - c h / t, which is why the default SDE method is the exponential one (``sde_methods``), which
needs ``noise_integral``: int eps / alpha_bar^2 dt over each step (closed form for sbdm, c times the change
of the log-SNR, and Gauss-Legendre quadrature in float64 for the others).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy
import torch
from torch import Tensor

from si_lightning.checks import non_negative_float
from si_lightning.interpolants import Interpolant


class Diffusion(ABC):
    """eps(t) = scale * shape(t); ``needs_interpolant`` marks families defined through alpha, beta."""

    needs_interpolant: bool = False

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = non_negative_float("diffusion scale", scale)

    @abstractmethod
    def shape(self, t: Tensor, interpolant: Interpolant | None) -> Tensor: ...

    def __call__(self, t: Tensor, interpolant: Interpolant | None = None) -> Tensor:
        """eps(t) for t of any shape."""
        if self.needs_interpolant and interpolant is None:
            raise ValueError(f"diffusion {self.name!r} is defined through the interpolant; the fields carry none")
        return self.scale * self.shape(t, interpolant)

    @property
    def name(self) -> str:
        return next(key for key, value in DIFFUSIONS.items() if value is type(self))

    def noise_integral(self, start: Tensor, end: Tensor, interpolant: Interpolant) -> Tensor:
        """int_start^end eps(u) / alpha_bar(u)^2 du (signed; start, end in (0, 1) of one shape, float64), per pair.

        Gauss-Legendre with ``_QUADRATURE_NODES`` nodes in the logit v = log(u / (1 - u)), du = u (1 - u) dv:
        alpha_bar^2 vanishes like 1 - u (or (1 - u)^2) at the data end and, for a data-dependent base, like u at
        the base end, and in v the integrand becomes smooth there (a constant or e^v), so that a step over
        which alpha_bar^2 falls a thousandfold is integrated as accurately as a short one.
        """
        nodes, weights = _gauss_legendre(start)
        low, high = torch.logit(start), torch.logit(end)
        middle, half = (high + low).unsqueeze(-1) / 2, (high - low).unsqueeze(-1) / 2
        times = torch.sigmoid(middle + half * nodes)
        rate = self(times, interpolant) / interpolant.coefficients(times).noise_variance(interpolant.gaussian_base)
        return (half * weights * rate * times * (1 - times)).sum(-1)

    def on_grid(self, grid: Tensor, interpolant: Interpolant | None) -> Tensor:
        """eps on a time grid (n,), checked finite and >= 0 with one host sync."""
        values = self(grid, interpolant)
        bad = ~torch.isfinite(values) | (values < 0)
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"diffusion {self.name!r} (scale {self.scale}) gives eps = {float(values[index])!r} at "
                f"t = {float(grid[index]):.6g}; eps(t) must be finite and >= 0 on the integration interval"
            )
        return values


class Constant(Diffusion):
    def shape(self, t: Tensor, interpolant: Interpolant | None) -> Tensor:
        return torch.ones_like(t)


class ScoreBasedDiffusion(Diffusion):
    """alpha_bar^2 beta'/beta - alpha_bar alpha_bar' (docs/math.md section 3's coefficient of s in b).

    eps / alpha_bar^2 = c (beta'/beta - alpha_bar'/alpha_bar) = c lambda'(t), lambda = log(beta / alpha_bar):
    its integral over a step is c times the change of lambda, in closed form.
    """

    needs_interpolant = True

    def shape(self, t: Tensor, interpolant: Interpolant | None) -> Tensor:
        c = interpolant.coefficients(t)
        gaussian = interpolant.gaussian_base
        return c.noise_variance(gaussian) * c.beta_dot / c.beta - c.noise_variance_rate(gaussian)

    def noise_integral(self, start: Tensor, end: Tensor, interpolant: Interpolant) -> Tensor:
        def log_snr(t: Tensor) -> Tensor:
            c = interpolant.coefficients(t)
            return torch.log(c.beta) - 0.5 * torch.log(c.noise_variance(interpolant.gaussian_base))

        return self.scale * (log_snr(end) - log_snr(start))


class Sigma(Diffusion):
    """alpha_bar = sqrt(alpha^2 + gamma^2) (Gaussian base), alpha (one-sided) or gamma (data-dependent base)."""

    needs_interpolant = True

    def shape(self, t: Tensor, interpolant: Interpolant | None) -> Tensor:
        return interpolant.coefficients(t).noise_variance(interpolant.gaussian_base).sqrt()


class Linear(Diffusion):
    def shape(self, t: Tensor, interpolant: Interpolant | None) -> Tensor:
        return 1 - t


class Decreasing(Diffusion):
    def shape(self, t: Tensor, interpolant: Interpolant | None) -> Tensor:
        return 0.25 * (1 + torch.cos(math.pi * t)) ** 2


class IncreasingDecreasing(Diffusion):
    def shape(self, t: Tensor, interpolant: Interpolant | None) -> Tensor:
        return torch.sin(math.pi * t) ** 2


_QUADRATURE_NODES = 16


def _gauss_legendre(like: Tensor) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on [-1, 1], (nodes,) each, in float64 on ``like``'s device."""
    nodes, weights = numpy.polynomial.legendre.leggauss(_QUADRATURE_NODES)
    return tuple(torch.as_tensor(value, dtype=torch.float64, device=like.device) for value in (nodes, weights))


DIFFUSIONS: dict[str, type[Diffusion]] = {
    "constant": Constant,
    "sbdm": ScoreBasedDiffusion,
    "sigma": Sigma,
    "linear": Linear,
    "decreasing": Decreasing,
    "increasing-decreasing": IncreasingDecreasing,
}
