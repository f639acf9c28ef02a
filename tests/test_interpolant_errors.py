"""Bad input gets a ValueError that names the value and what was expected."""

from __future__ import annotations

import pytest
import torch

from si_lightning.interpolants import Interpolant, LogitNormalTime, UniformTime, get_prediction


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown schedule 'lineer'; expected one of: .*linear.*sbdm"):
        Interpolant(schedule="lineer")


def test_unknown_gamma_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown gamma 'browian'; expected one of: brownian"):
        Interpolant(gamma="browian")


def test_unknown_prediction_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown prediction 'velocty'; expected one of: data, denoiser"):
        get_prediction("velocty")


def test_schedule_rejects_incompatible_gamma():
    with pytest.raises(ValueError, match=r"'one-sided-linear' needs gamma in \['zero'\], got gamma='brownian'"):
        Interpolant("one-sided-linear", "brownian")
    with pytest.raises(ValueError, match="vp-trig.*gamma < 1.*max gamma = 2"):
        Interpolant("vp-trig", "sine-squared", 2.0)
    with pytest.raises(ValueError, match="gamma_scale must be a finite number > 0, got -1"):
        Interpolant("linear", "brownian", -1.0)


def test_time_outside_unit_interval_is_named():
    interpolant = Interpolant("linear")
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t = 1.5 is outside \[0, 1\]"):
        interpolant.sample(x, x, torch.tensor([0.5, 1.5]))


def test_time_outside_valid_interval_is_named():
    interpolant = Interpolant("linear", "brownian")
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t = 0.0 is outside the valid interval \[0.001, 0.999\]"):
        interpolant.sample(x, x, torch.tensor([0.0, 0.5]))


def test_mismatched_shapes_are_named():
    interpolant = Interpolant("linear")
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3\) and \(2, 4\)"):
        interpolant.sample(torch.zeros(2, 3), torch.zeros(2, 4), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match=r"per-sample tensor of shape \(2,\).*got shape \(3,\)"):
        interpolant.sample(torch.zeros(2, 3), torch.zeros(2, 3), torch.full((3,), 0.5))


def test_one_sided_needs_gaussian_base():
    with pytest.raises(ValueError, match="one-sided"):
        Interpolant("sbdm", gaussian_base=False)


@pytest.mark.parametrize("sampler", [UniformTime(), LogitNormalTime(0.5, 1.5)])
def test_time_samplers_stay_inside_valid_interval(sampler):
    interval = Interpolant("linear", "brownian").valid_interval()
    t = sampler(100_000, interval, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert interval[0] <= t.min().item() and t.max().item() <= interval[1]


def test_logit_normal_weight_restores_uniform_expectation():
    """E_q[w(t) f(t)] = E_uniform[f(t)] for f(t) = t^2 on [a, b], within 5 standard errors."""
    sampler = LogitNormalTime(0.3, 1.0)
    interval = (0.1, 0.9)
    t = sampler(400_000, interval, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    values = sampler.uniform_weight(t, interval) * t**2
    exact = (0.9**3 - 0.1**3) / 3 / 0.8
    assert abs(values.mean().item() - exact) < 5 * values.std().item() / 400_000**0.5
