"""The log signal-to-noise ratio of an interpolant with a Gaussian base, and its inverse.

With x0 ~ N(0, I) independent of x1 and z, x_t = alpha x0 + beta x1 + gamma z has the law of the one-sided
alpha_bar z' + beta x1 with alpha_bar^2 = alpha^2 + gamma^2. Its log-SNR is

    lambda(t) = log(beta / alpha_bar),    lambda'(t) = beta' / beta - alpha_bar alpha_bar' / alpha_bar^2,

which runs from -inf (t = 0, beta = 0) to +inf (t = 1, alpha_bar = 0). Two interpolants with the same base
and data are the same family of laws up to a time change and a scale wherever lambda is strictly increasing,
which is what ``check_convertible`` verifies. Everything here is computed in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.interpolants import Interpolant

_CHECK_POINTS = 4097  # interior points on which lambda must increase strictly
_BISECTION_STEPS = 64  # halves [0, 1] below one float64 ulp of t


def log_snr(interpolant: Interpolant, t: Tensor) -> Tensor:
    """lambda(t) = log(beta / alpha_bar): (batch,) -> (batch,), float64 (-inf at t = 0, +inf at t = 1)."""
    c = interpolant.coefficients(t.to(torch.float64))
    return torch.log(c.beta) - 0.5 * torch.log(c.noise_variance(True))


def log_snr_rate(interpolant: Interpolant, t: Tensor) -> Tensor:
    """lambda'(t) = beta' / beta - alpha_bar alpha_bar' / alpha_bar^2: (batch,) float64, interior t only."""
    c = interpolant.coefficients(t.to(torch.float64))
    return c.beta_dot / c.beta - c.noise_variance_rate(True) / c.noise_variance(True)


def time_of_log_snr(interpolant: Interpolant, value: Tensor) -> Tensor:
    """The t in (0, 1) with lambda(t) = value, by bisection in float64 (lambda strictly increasing).

    Bisection rather than a closed form: it serves every schedule and gamma family alike, never
    evaluates the coefficients at the singular ends, and reaches one ulp of t in 64 halvings.
    """
    target = value.to(torch.float64)
    low = torch.zeros_like(target)
    high = torch.ones_like(target)
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        below = log_snr(interpolant, middle) < target
        low = torch.where(below, middle, low)
        high = torch.where(below, high, middle)
    return 0.5 * (low + high)


def check_convertible(interpolant: Interpolant, role: str) -> None:
    """Raise a ValueError unless ``interpolant`` has an independent N(0, I) base and a strictly increasing log-SNR.

    ``role`` names the interpolant in the message (e.g. "source", "target").
    """
    if not isinstance(interpolant, Interpolant):
        raise ValueError(f"{role} interpolant must be an Interpolant, got {type(interpolant).__name__}")
    if not interpolant.gaussian_base:
        raise ValueError(
            f"{role} interpolant {interpolant!r} has a data-dependent coupling (gaussian_base=False): "
            "conversion needs an independent N(0, I) base"
        )
    if interpolant.schedule.base_absent:
        raise ValueError(
            f"{role} interpolant {interpolant!r} has no base (x0 = x1, schedule {interpolant.schedule_name!r}): "
            "conversion needs an independent N(0, I) base"
        )
    t = torch.linspace(0.0, 1.0, _CHECK_POINTS + 2, dtype=torch.float64)[1:-1]
    values = log_snr(interpolant, t)
    increasing = bool(torch.isfinite(values).all()) and bool((values[1:] > values[:-1]).all())
    if not increasing:
        raise ValueError(
            f"{role} interpolant {interpolant!r} has a signal-to-noise ratio beta / alpha_bar that is not strictly "
            "increasing on (0, 1): conversion needs a monotone SNR"
        )
