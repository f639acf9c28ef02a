"""Conversions between predictions (docs/math.md section 3), with the score as the hub.

With a Gaussian part of total variance alpha_bar^2 (alpha^2 + gamma^2 for an independent
Gaussian base, gamma^2 for the mirror interpolant) and the one-sided form
x_t = alpha_bar z' + beta x1:

    s     = -eta_z / noise_scale                  (noise_scale = gamma, or alpha if one-sided)
    eta_1 = (x + alpha_bar^2 s) / beta            (Tweedie)
    b     = (beta' x + (alpha_bar^2 beta' - alpha_bar alpha_bar' beta) s) / beta
    s     = (beta b - beta' x) / (alpha_bar^2 beta' - alpha_bar alpha_bar' beta)

These are the formulas of docs/math.md multiplied through by beta (or beta'), so that none divides by
beta' (zero for the mirror interpolant). Every function takes x of shape (batch, ...) and t of
shape (batch,) and returns a tensor shaped like x.
"""

from __future__ import annotations

from torch import Tensor

from si_lightning.interpolants.interpolant import Interpolant, broadcast_time


def _require_conversions(interpolant: Interpolant, what: str) -> None:
    if not interpolant.score_defined:
        raise ValueError(
            f"{what} is undefined for {interpolant!r}: with gamma = 0 and a two-sided schedule x_t has no "
            "Gaussian part, so there is no score; use a one-sided schedule or gamma > 0"
        )
    if not interpolant.conversions_defined:
        raise ValueError(
            f"{what} is undefined for {interpolant!r}: with a data-dependent base (gaussian_base=False) the "
            "score does not determine the velocity; predict 'velocity+denoiser' to get both"
        )


def _terms(interpolant: Interpolant, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """beta, beta', alpha_bar^2 and alpha_bar alpha_bar', broadcast against x."""
    c = interpolant.coefficients(t)
    gaussian = interpolant.gaussian_base
    return tuple(
        broadcast_time(value, x)
        for value in (c.beta, c.beta_dot, c.noise_variance(gaussian), c.noise_variance_rate(gaussian))
    )


def score_from_denoiser(interpolant: Interpolant, t: Tensor, x: Tensor, denoiser: Tensor) -> Tensor:
    """s = -eta / noise_scale, where eta = E[noise | x_t] (z two-sided, x0 one-sided)."""
    if not interpolant.score_defined:
        _require_conversions(interpolant, "the score")
    return -denoiser / broadcast_time(interpolant.noise_scale(interpolant.coefficients(t)), x)


def denoiser_from_score(interpolant: Interpolant, t: Tensor, x: Tensor, score: Tensor) -> Tensor:
    """eta = -noise_scale s."""
    if not interpolant.score_defined:
        _require_conversions(interpolant, "the denoiser")
    return -broadcast_time(interpolant.noise_scale(interpolant.coefficients(t)), x) * score


def data_from_score(interpolant: Interpolant, t: Tensor, x: Tensor, score: Tensor) -> Tensor:
    """eta_1 = E[x1 | x_t] = (x + alpha_bar^2 s) / beta (Tweedie)."""
    _require_conversions(interpolant, "the data prediction from the score")
    beta, _, variance, _ = _terms(interpolant, t, x)
    return (x + variance * score) / beta


def score_from_data(interpolant: Interpolant, t: Tensor, x: Tensor, data: Tensor) -> Tensor:
    """s = (beta eta_1 - x) / alpha_bar^2."""
    _require_conversions(interpolant, "the score from the data prediction")
    beta, _, variance, _ = _terms(interpolant, t, x)
    return (beta * data - x) / variance


def velocity_from_score(interpolant: Interpolant, t: Tensor, x: Tensor, score: Tensor) -> Tensor:
    """b = (beta' x + (alpha_bar^2 beta' - alpha_bar alpha_bar' beta) s) / beta."""
    _require_conversions(interpolant, "the velocity from the score")
    beta, beta_dot, variance, rate = _terms(interpolant, t, x)
    return (beta_dot * x + (variance * beta_dot - rate * beta) * score) / beta


def score_from_velocity(interpolant: Interpolant, t: Tensor, x: Tensor, velocity: Tensor) -> Tensor:
    """s = (beta b - beta' x) / (alpha_bar^2 beta' - alpha_bar alpha_bar' beta)."""
    _require_conversions(interpolant, "the score from the velocity")
    beta, beta_dot, variance, rate = _terms(interpolant, t, x)
    return (beta * velocity - beta_dot * x) / (variance * beta_dot - rate * beta)


def velocity_from_drift_and_denoiser(
    interpolant: Interpolant, t: Tensor, x: Tensor, drift: Tensor, denoiser: Tensor
) -> Tensor:
    """b = v + gamma' eta_z (two-sided; one-sided gamma' = 0 and b = v). Valid for any coupling."""
    gamma_dot = broadcast_time(interpolant.coefficients(t).gamma_dot, x)
    return drift if interpolant.one_sided or interpolant.gamma_family.is_zero else drift + gamma_dot * denoiser
