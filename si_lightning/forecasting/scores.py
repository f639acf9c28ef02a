"""The scores of a set of ensemble forecasts against the solver's trajectories (docs/math.md section 9).

One function turns forecasts (K inputs, M members, T lead times, 2, N, N) and the truth (K, T, 2, N, N) into
the numbers the turbulence experiment, ``ForecastCallback`` and ``si-lightning evaluate --forecasts`` report,
so the three agree by construction. Lead 0 is the initial state (equal to the truth); averages over leads
start at lead 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from si_lightning.forecasting.metrics import (
    crps,
    energy_spectrum,
    ensemble_mean_rmse,
    spectrum_relative_error,
    spread_skill_ratio,
    time_to_blow_up,
    wasserstein_1,
)
from si_lightning.physics import enstrophy, kinetic_energy

BLOW_UP_FACTOR = 10.0  # a member has blown up once its energy exceeds 10x the largest true energy

# The scalar scores (the others are per lead time or spectra).
SCALAR_SCORES = (
    "rmse_to_decorrelation",
    "crps_to_decorrelation",
    "crps_all_leads",
    "spread_skill_to_decorrelation",
    "energy_w1",
    "enstrophy_w1",
    "spectrum_relative_error",
    "blown_up",
)


def decorrelation_lead(truth: Tensor) -> int:
    """The first lead at which the mean correlation of u_n with u_0 falls below 1/e (truth (K, T, ...)).

    The last lead when the correlation never falls that low; at least 1.
    """
    flat = truth.flatten(2)
    flat = flat - flat.mean(2, keepdim=True)
    correlation = (flat * flat[:, :1]).sum(2) / (flat.norm(dim=2) * flat[:, :1].norm(dim=2))
    below = (correlation.mean(0) < math.exp(-1)).nonzero()
    lead = int(below[0]) if len(below) else truth.shape[1] - 1
    return max(lead, 1)


def forecast_scores(forecasts: Tensor, truth: Tensor, decorrelation: int, spectrum_from: int) -> dict[str, Any]:
    """forecasts (K, M, T, 2, N, N), truth (K, T, 2, N, N) -> scores.

    RMSE of the ensemble mean and fair CRPS per lead (mean over inputs) and their means over leads
    1..``decorrelation``; the spread-skill ratio likewise (M >= 2); Wasserstein-1 of the kinetic energy and
    the enstrophy of every finite member at leads >= 1 against the truth's; the mean relative error of the
    energy spectrum over shells 1..N/3, spectra averaged over leads >= ``spectrum_from``; members blown up.
    """
    if forecasts.dim() != 6 or forecasts.shape[0] != truth.shape[0] or forecasts.shape[2:] != truth.shape[1:]:
        raise ValueError(
            f"forecasts must be (K, M, T, 2, N, N) and truth (K, T, 2, N, N); got {tuple(forecasts.shape)} "
            f"and {tuple(truth.shape)}"
        )
    inputs, members, leads = forecasts.shape[:3]
    if not 1 <= spectrum_from < leads:
        raise ValueError(f"spectrum_from must be in 1..{leads - 1} (the forecast's leads); got {spectrum_from}")
    size = truth.shape[-1]
    threshold = BLOW_UP_FACTOR * kinetic_energy(truth).max().item()
    energy = kinetic_energy(forecasts)  # (K, M, T)
    blow_up = time_to_blow_up(energy.flatten(0, 1), threshold)
    rmse = torch.stack([ensemble_mean_rmse(forecasts[k], truth[k]) for k in range(inputs)]).mean(0)
    crps_by_lead = torch.stack([crps(forecasts[k], truth[k]) for k in range(inputs)]).mean(0)
    result: dict[str, Any] = {
        "members": members,
        "rmse_by_lead": rmse.tolist(),
        "crps_by_lead": crps_by_lead.tolist(),
        "rmse_to_decorrelation": float(rmse[1 : decorrelation + 1].mean()),
        "crps_to_decorrelation": float(crps_by_lead[1 : decorrelation + 1].mean()),
        "crps_all_leads": float(crps_by_lead[1:].nanmean()),
        "blown_up": int((blow_up < leads).sum()),
        "first_blow_up_lead": int(blow_up.min()) if bool((blow_up < leads).any()) else None,
    }
    finite = torch.isfinite(energy).all(dim=2)
    kept = forecasts[finite]  # (members kept, T, ...)
    result["energy_w1"] = wasserstein_1(kinetic_energy(kept[:, 1:]), kinetic_energy(truth[:, 1:]))
    result["enstrophy_w1"] = wasserstein_1(enstrophy(kept[:, 1:]), enstrophy(truth[:, 1:]))
    shells = slice(1, size // 3 + 1)
    forecast_spectrum = energy_spectrum(kept[:, spectrum_from:]).flatten(0, -2).mean(0)
    truth_spectrum = energy_spectrum(truth[:, spectrum_from:]).flatten(0, -2).mean(0)
    result["spectrum_relative_error"] = spectrum_relative_error(forecast_spectrum, truth_spectrum, shells)
    result["spectrum"] = forecast_spectrum.tolist()
    result["truth_spectrum"] = truth_spectrum.tolist()
    if members > 1:
        ratio = torch.stack([spread_skill_ratio(forecasts[k], truth[k]) for k in range(inputs)]).mean(0)
        result["spread_skill_by_lead"] = ratio.tolist()
        result["spread_skill_to_decorrelation"] = float(ratio[1 : decorrelation + 1].mean())
    return result
