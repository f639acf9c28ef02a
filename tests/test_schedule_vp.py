"""SiT's VP schedule: its coefficients against SiT's formulas and finite differences, and transport on the oracle."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.interpolants import Interpolant
from si_lightning.sampling import ODESampler
from tests.conftest import mixture_2d
from tests.test_sampling_mmd import SAMPLES, gaussian_mmd, mixture_threshold

BETA_MIN, BETA_MAX = 0.1, 20.0


def sit_vp(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SiT's VP plan written out in its code's time, where t = 0 is the noise as here.

    Its data coefficient is exp(lmc(t)) and its noise coefficient sqrt(1 - exp(2 lmc(t))), with
    lmc(t) = -(1/4) (1 - t)^2 (beta_max - beta_min) - (1/2) (1 - t) beta_min and
    lmc'(t) = (1/2) (1 - t) (beta_max - beta_min) + (1/2) beta_min. Returns (noise, data, noise', data').
    """
    lmc = -0.25 * (1 - t) ** 2 * (BETA_MAX - BETA_MIN) - 0.5 * (1 - t) * BETA_MIN
    lmc_dot = 0.5 * (1 - t) * (BETA_MAX - BETA_MIN) + 0.5 * BETA_MIN
    data = torch.exp(lmc)
    noise = torch.sqrt(1 - torch.exp(2 * lmc))
    return noise, data, torch.exp(2 * lmc) * (2 * lmc_dot) / (-2 * noise), data * lmc_dot


def test_vp_equals_sit_formulas():
    t = torch.linspace(0.0, 0.999, 1000, dtype=torch.float64)
    c = Interpolant("vp").coefficients(t)
    noise, data, noise_dot, data_dot = sit_vp(t)
    for ours, theirs in ((c.alpha, noise), (c.beta, data), (c.alpha_dot, noise_dot), (c.beta_dot, data_dot)):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(c.alpha**2 + c.beta**2, torch.ones_like(t), atol=1e-14, rtol=0)


def test_vp_declares_its_base_signal_and_interval():
    interpolant = Interpolant("vp")
    c = interpolant.coefficients(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert interpolant.schedule.signal_at_base == pytest.approx(math.exp(-5.025), rel=1e-15)
    assert float(c.beta[0]) == pytest.approx(6.5716e-3, rel=1e-4) and float(c.beta[1]) == 1.0
    assert float(c.alpha[1]) == 0.0 and math.isinf(float(c.alpha_dot[1]))
    assert float(c.alpha_alpha_dot[1]) == pytest.approx(-BETA_MIN / 2, rel=1e-12)
    assert interpolant.valid_interval() == (0.0, 1 - 1e-3)
    with pytest.raises(ValueError, match=r"schedule 'vp' needs gamma in \['zero'\], got gamma='brownian'"):
        Interpolant("vp", "brownian")


def test_vp_derivatives_match_central_differences():
    """(f(t + h) - f(t - h)) / 2h with h = 1e-5 in float64: error <= h^2 / 6 max |f'''| + rounding.

    max |f'''| is read from a coarser fourth difference (step 1e-3) at the same points, doubled.
    """
    interpolant = Interpolant("vp")
    t = torch.linspace(0.001, 0.98, 200, dtype=torch.float64)

    def coefficients(times):
        c = interpolant.coefficients(times)
        return {"alpha": (c.alpha, c.alpha_dot), "beta": (c.beta, c.beta_dot)}

    step, coarse = 1e-5, 1e-3
    here, plus, minus = coefficients(t), coefficients(t + step), coefficients(t - step)
    shifted = [coefficients(t + k * coarse) for k in (-2, -1, 1, 2)]
    for name, (_, derivative) in here.items():
        difference = (plus[name][0] - minus[name][0]) / (2 * step)
        values = [entry[name][0] for entry in shifted]
        third = (values[3] - 2 * values[2] + 2 * values[1] - values[0]) / (2 * coarse**3)
        tolerance = step**2 / 6 * 2 * third.abs() + 1e-9
        assert bool(((difference - derivative).abs() <= tolerance).all()), name


def test_ode_with_the_oracle_transports_the_vp_base_to_the_mixture():
    """dopri5 from the exact law of x_0 (alpha(0) x0 + beta(0) x1) to t = 0.999 reproduces the exact law there.

    Mean within 4 standard errors per coordinate, and the MMD below the data-vs-data threshold. Starting from
    N(0, I) instead, as every sampler does, is also within the threshold (beta(0) = 6.6e-3).
    """
    interpolant = Interpolant("vp")
    oracle = mixture_2d(interpolant)
    generator = torch.Generator().manual_seed(31)
    times = torch.tensor([0.0, 1 - 1e-3], dtype=torch.float64)
    c = interpolant.coefficients(times)

    def exact(index: int) -> torch.Tensor:
        return c.alpha[index] * oracle.sample_base(SAMPLES, generator) + c.beta[index] * oracle.sample_data(
            SAMPLES, generator
        )

    sampler = ODESampler("dopri5", atol=1e-5, rtol=1e-5)
    result = sampler.sample(oracle, exact(0))
    assert result.interval == (0.0, 1 - 1e-3)
    reference = exact(1)
    standard_error = reference.std(0) * math.sqrt(2 / SAMPLES)  # of a difference of two independent means
    assert bool(((result.x.mean(0) - reference.mean(0)).abs() < 4 * standard_error).all())
    assert gaussian_mmd(result.x, reference) < mixture_threshold()
    from_noise = sampler.sample(oracle, oracle.sample_base(SAMPLES, generator)).x
    assert gaussian_mmd(from_noise, reference) < mixture_threshold()
