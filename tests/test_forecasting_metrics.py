"""Ensemble forecast scores against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.forecasting.metrics import (
    crps,
    energy_spectrum,
    ensemble_mean_rmse,
    ensemble_spread,
    spread_skill_ratio,
    time_to_blow_up,
    wasserstein_1,
)
from si_lightning.physics import kinetic_energy


def gaussian_crps(mean: float, std: float, observation: torch.Tensor) -> torch.Tensor:
    """CRPS(N(mean, std^2), y) = std (w (2 Phi(w) - 1) + 2 phi(w) - 1 / sqrt(pi)), w = (y - mean) / std."""
    w = (observation - mean) / std
    normal = torch.distributions.Normal(0.0, 1.0)
    return std * (w * (2 * normal.cdf(w) - 1) + 2 * normal.log_prob(w).exp() - 1 / math.sqrt(math.pi))


def test_fair_crps_of_a_gaussian_ensemble_is_the_closed_form() -> None:
    # 8 members from N(0.3, 1.5^2) at 20000 points (one lead time): the fair CRPS is unbiased, so its mean over
    # the points differs from the mean closed form by Monte-Carlo error only (4 standard errors of the mean).
    generator = torch.Generator().manual_seed(0)
    members, points = 8, 20000
    truth = torch.randn(1, points, generator=generator, dtype=torch.float64)
    forecast = 0.3 + 1.5 * torch.randn(members, 1, points, generator=generator, dtype=torch.float64)
    absolute = (forecast - truth).abs().mean(0)
    pairs = (forecast[:, None] - forecast[None, :]).abs().sum((0, 1)) / (2 * members * (members - 1))
    per_point = absolute - pairs  # the O(M^2) definition, to check the sorted formula too
    assert crps(forecast, truth).item() == pytest.approx(per_point.mean().item(), rel=1e-12)
    exact = gaussian_crps(0.3, 1.5, truth)
    error = (per_point - exact).std().item() / math.sqrt(points)
    assert abs(per_point.mean().item() - exact.mean().item()) < 4 * error


def test_crps_of_one_member_is_the_absolute_error() -> None:
    truth = torch.tensor([[1.0, -2.0]])
    assert crps(torch.tensor([[[0.5, 1.0]]]), truth).item() == pytest.approx((0.5 + 3.0) / 2)


def test_spread_skill_ratio_is_one_when_the_truth_is_one_more_member() -> None:
    # 5 members and the truth drawn alike at 4000 points per lead time: RMSE^2 = (1 + 1/M) s^2 and spread^2 = s^2,
    # each estimated from 4000 points (relative error ~ 1/sqrt(2000) = 2 % per lead time; tolerance 8 %).
    generator = torch.Generator().manual_seed(1)
    draws = 2.0 * torch.randn(6, 3, 4000, generator=generator, dtype=torch.float64)
    forecast, truth = draws[:5], draws[5]
    assert torch.allclose(ensemble_spread(forecast), torch.full((3,), 2.0, dtype=torch.float64), rtol=0.08)
    skill = torch.full((3,), 2.0 * math.sqrt(1.2), dtype=torch.float64)
    assert torch.allclose(ensemble_mean_rmse(forecast, truth), skill, rtol=0.08)
    assert torch.allclose(spread_skill_ratio(forecast, truth), torch.ones(3, dtype=torch.float64), rtol=0.1)


def test_spectrum_of_a_single_fourier_mode_sits_in_its_shell() -> None:
    # u = (A sin(3 y), 0), v = (0, B cos(4 x)): energies A^2 / 4 in shell 3 and B^2 / 4 in shell 4, nothing else.
    size = 16
    coordinate = torch.arange(size, dtype=torch.float64) * (2 * math.pi / size)
    y, x = torch.meshgrid(coordinate, coordinate, indexing="ij")
    velocity = torch.stack((1.5 * torch.sin(3 * y), 0.5 * torch.cos(4 * x)))
    spectrum = energy_spectrum(velocity)
    expected = torch.zeros(size // 2 + 1, dtype=torch.float64)
    expected[3], expected[4] = 1.5**2 / 4, 0.5**2 / 4
    assert torch.allclose(spectrum, expected, atol=1e-14)
    assert spectrum.sum().item() == pytest.approx(kinetic_energy(velocity).item(), rel=1e-13)


def test_wasserstein_of_a_shifted_sample_is_the_shift_and_blow_up_is_found() -> None:
    values = torch.randn(500, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert wasserstein_1(values + 0.7, values) == pytest.approx(0.7, rel=1e-9)
    energy = torch.tensor([[1.0, 2.0, 50.0, float("nan")], [1.0, 1.0, 1.0, 1.0], [1.0, float("inf"), 1.0, 1.0]])
    assert time_to_blow_up(energy, threshold=10.0).tolist() == [2, 4, 1]


def test_a_forecast_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"forecast must be \(members, \*truth.shape\) = \(M, 3, 4\), got \(2, 3, 5\)"):
        crps(torch.zeros(2, 3, 5), torch.zeros(3, 4))


def test_forecast_scores_of_exact_and_shifted_ensembles() -> None:
    """Members equal to the truth score 0 everywhere; members all shifted by c score RMSE = CRPS = |c| at every
    lead >= 1 (identical members: no spread, so the fair CRPS is the mean absolute error) and no blow-up."""
    from si_lightning.forecasting import decorrelation_lead, forecast_scores

    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(3, 5, 2, 8, 8, generator=generator, dtype=torch.float64)
    exact = truth[:, None].expand(-1, 2, -1, -1, -1, -1)
    scores = forecast_scores(exact, truth, decorrelation_lead(truth), 1)
    for name in ("rmse_to_decorrelation", "crps_all_leads", "energy_w1", "enstrophy_w1", "spectrum_relative_error"):
        assert scores[name] == pytest.approx(0.0, abs=1e-12), name
    assert scores["blown_up"] == 0 and scores["first_blow_up_lead"] is None
    shifted = exact.clone()
    shifted[:, :, 1:] += 0.25
    scores = forecast_scores(shifted, truth, decorrelation_lead(truth), 1)
    assert scores["rmse_by_lead"][1:] == pytest.approx([0.25] * 4, abs=1e-12)
    assert scores["crps_by_lead"][1:] == pytest.approx([0.25] * 4, abs=1e-12)
    assert scores["spread_skill_to_decorrelation"] == 0.0
    with pytest.raises(ValueError, match="spectrum_from"):
        forecast_scores(exact, truth, 1, 5)
