"""Scores of ensemble forecasts of flows (docs/math.md section 9).

Shapes: an ensemble forecast is (M members, T lead times, 2, H, W), the truth (T, 2, H, W); the scores
are per lead time (T,) unless said otherwise. Plain PyTorch (scipy for the 1-D Wasserstein distance).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from torch import Tensor


def _check_ensemble(forecast: Tensor, truth: Tensor) -> None:
    if forecast.dim() < 2 or forecast.shape[1:] != truth.shape:
        raise ValueError(
            f"forecast must be (members, *truth.shape) = (M, {', '.join(map(str, truth.shape))}), "
            f"got {tuple(forecast.shape)}"
        )


def ensemble_mean_rmse(forecast: Tensor, truth: Tensor) -> Tensor:
    """(T,) sqrt(mean over the field of (ensemble mean - truth)^2) at each lead time."""
    _check_ensemble(forecast, truth)
    return (forecast.mean(0) - truth).pow(2).flatten(1).mean(1).sqrt()


def ensemble_spread(forecast: Tensor) -> Tensor:
    """(T,) sqrt(mean over the field of the members' unbiased variance) at each lead time (M >= 2)."""
    if forecast.shape[0] < 2:
        raise ValueError(f"the spread needs 2 members or more, got {forecast.shape[0]}")
    return forecast.var(0, unbiased=True).flatten(1).mean(1).sqrt()


def spread_skill_ratio(forecast: Tensor, truth: Tensor) -> Tensor:
    """(T,) sqrt((M + 1) / M) spread / RMSE: 1 in expectation when the truth is one more member.

    The factor corrects for the finite ensemble: the ensemble mean of M exchangeable members misses the
    truth by a variance of (1 + 1/M) times the members' variance.
    """
    members = forecast.shape[0]
    return math.sqrt((members + 1) / members) * ensemble_spread(forecast) / ensemble_mean_rmse(forecast, truth)


def crps(forecast: Tensor, truth: Tensor) -> Tensor:
    """Fair ensemble CRPS (T,) averaged over the field: mean |X - y| - sum_{i<j} |X_i - X_j| / (M (M - 1)).

    Unbiased for the CRPS of the distribution the members are drawn from (M >= 2); for M = 1 it is |X - y|.
    The pair sum uses the sorted members: sum_{i<j} |x_i - x_j| = sum_i (2 i - M + 1) x_(i), i from 0.
    """
    _check_ensemble(forecast, truth)
    members = forecast.shape[0]
    absolute = (forecast - truth).abs().mean(0)
    if members == 1:
        return absolute.flatten(1).mean(1)
    ordered = forecast.sort(dim=0).values
    rank = torch.arange(members, dtype=forecast.dtype, device=forecast.device).view(-1, *[1] * (forecast.dim() - 1))
    pairs = ((2 * rank - members + 1) * ordered).sum(0)
    return (absolute - pairs / (members * (members - 1))).flatten(1).mean(1)


def energy_spectrum(velocity: Tensor) -> Tensor:
    """E(k) (..., K), shells k = 0 .. K - 1 (K = N // 2 + 1): (1/2) sum over |k'| rounding to k of |u_hat|^2 / (H W)^2.

    sum_k E(k) is the kinetic energy (1/2) mean |u|^2 when the energy lies inside the shells (Parseval).
    """
    height, width = velocity.shape[-2:]
    spectrum = torch.fft.fft2(velocity).abs().pow(2).sum(-3) / (height * width) ** 2
    k_y = torch.fft.fftfreq(height, d=1.0 / height)
    k_x = torch.fft.fftfreq(width, d=1.0 / width)
    shell = (k_y[:, None] ** 2 + k_x[None, :] ** 2).sqrt().round().long().to(velocity.device)
    count = min(height, width) // 2 + 1
    inside = shell < count
    flat = spectrum[..., inside]
    result = torch.zeros((*spectrum.shape[:-2], count), dtype=spectrum.dtype, device=spectrum.device)
    return 0.5 * result.index_add_(-1, shell[inside], flat)


def spectrum_relative_error(forecast_spectrum: Tensor, truth_spectrum: Tensor, shells: slice) -> float:
    """mean over ``shells`` of |E_f(k) - E_t(k)| / E_t(k) for two mean spectra (K,)."""
    forecast_part, truth_part = forecast_spectrum[shells], truth_spectrum[shells]
    return float(((forecast_part - truth_part).abs() / truth_part).mean())


def wasserstein_1(samples: Tensor, reference: Tensor) -> float:
    """The 1-D Wasserstein-1 distance between two sets of scalars (flattened); non-finite samples are dropped."""
    values = samples.flatten().double().cpu().numpy()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.inf
    return float(wasserstein_distance(values, reference.flatten().double().cpu().numpy()))


def time_to_blow_up(energy: Tensor, threshold: float) -> Tensor:
    """(M,) the first lead index at which a member's energy (M, T) is non-finite or above ``threshold``; T if none."""
    bad = ~torch.isfinite(energy) | (energy > threshold)
    steps = energy.shape[1]
    index = torch.arange(steps, device=energy.device).expand_as(energy)
    return torch.where(bad, index, torch.full_like(index, steps)).min(1).values
