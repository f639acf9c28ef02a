"""The energy-consistent forecasting interpolant: schedules, the energy identity and the SDE's marginals."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.forecasting import EnergyConsistentInterpolant, MonotoneSchedule
from si_lightning.physics import divergence, kinetic_energy, leray_projection


def test_monotone_schedule_has_exact_ends_is_increasing_and_its_derivative_is_right() -> None:
    schedule = MonotoneSchedule(degree=6).double()
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    value, _ = schedule(t)
    assert torch.allclose(value, t, atol=1e-15)  # theta = 0 is the identity
    with torch.no_grad():
        schedule.logits.copy_(torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0, 0.0]))
    value, derivative = schedule(t)
    assert value[0].item() == 0.0 and value[-1].item() == 1.0
    assert bool((value.diff() > 0).all()) and bool((derivative > 0).all())
    # central differences of a polynomial of degree 6 with h = 1e-5: error h^2 |F'''| / 6 < 1e-8
    h = 1e-5
    inner = t[1:-1]
    numerical = (schedule(inner + h)[0] - schedule(inner - h)[0]) / (2 * h)
    assert torch.allclose(derivative[1:-1], numerical, atol=1e-7)


def test_bad_schedule_settings_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match=r"^degree = 0: expected an integer >= 1$"):
        MonotoneSchedule(0)
    with pytest.raises(ValueError, match=r"^noise = -1.0: expected eps >= 0$"):
        EnergyConsistentInterpolant(noise=-1.0)
    with pytest.raises(ValueError, match=r"^gaussian_base = True: expected false"):
        EnergyConsistentInterpolant(gaussian_base=True)


def _states(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x0 = leray_projection(torch.randn(count, 2, size, size, generator=generator, dtype=torch.float64))
    x1 = leray_projection(0.8 * x0 + 0.6 * torch.randn(count, 2, size, size, generator=generator, dtype=torch.float64))
    return x0, x1


@pytest.mark.parametrize("project", [True, False])
def test_expected_energy_is_the_monte_carlo_mean_of_the_interpolant_energy(project: bool) -> None:
    # E_z K(x_tau) in closed form against the mean over 4000 draws of z. K(x_tau) is a quadratic in z whose
    # standard deviation is measured from the draws; the tolerance is 4 standard errors.
    interpolant = EnergyConsistentInterpolant(noise=1.5, project=project).double()
    with torch.no_grad():
        interpolant.alpha_schedule.logits.copy_(torch.linspace(-1, 1, 8))
        interpolant.beta_schedule.logits.copy_(torch.linspace(1, -1, 8))
    x0, x1 = _states(2, 8, seed=0)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    expected = interpolant.expected_energy(x0, x1, t)  # (2 pairs, 2 taus)
    draws = 4000
    z = torch.randn(draws, 2, 2, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for pair in range(2):
        for index in range(2):
            tau = t[index].expand(draws)
            x, _ = interpolant.state_and_target(x0[pair].expand(draws, -1, -1, -1), x1[pair].expand(draws, -1, -1, -1),
                                                tau, z[:, pair])  # fmt: skip
            energies = kinetic_energy(x)
            error = energies.std() / math.sqrt(draws)
            assert abs(energies.mean() - expected[pair, index]) < 4 * error
    if project:  # the state is divergence-free when its ends and the noise are
        assert divergence(x).abs().max().item() < 1e-12


def test_energy_loss_trains_the_schedules_and_only_them() -> None:
    # On pairs whose correlation makes the linear schedule's mean energy dip in the middle, Adam on the energy
    # loss alone must bring the mean energy path to within 0.2 % of the physical one, from more than 5 % off.
    torch.manual_seed(0)
    interpolant = EnergyConsistentInterpolant(noise=0.3, degree=8, project=True).double()
    x0, x1 = _states(16, 8, seed=2)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    start = interpolant.energy_residual(x0, x1, t).abs().max().item()
    optimizer = torch.optim.Adam(interpolant.parameters(), lr=0.1)
    for _ in range(200):
        optimizer.zero_grad()
        interpolant.energy_loss(x0, x1).mean().backward()
        optimizer.step()
    with torch.no_grad():
        end = interpolant.energy_residual(x0, x1, t).abs().max().item()
    assert start > 0.05 and end < 0.002
    # the drift loss leaves the schedules alone
    interpolant.zero_grad()
    weight = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
    network = lambda x, tau: weight * x  # noqa: E731 - a stand-in drift
    interpolant.energy_weight = 0.0
    drift_only = interpolant.training_loss(network, x0, x1, t[:16], torch.randn_like(x0))
    drift_only.mean().backward()
    assert drift_only.shape == (16,) and weight.grad.abs().item() > 0
    assert all(parameter.grad is None or parameter.grad.abs().max() == 0 for parameter in interpolant.parameters())


def test_sde_from_the_exact_drift_reaches_the_law_of_the_next_state() -> None:
    # x1 | x0 ~ N(m, s^2 I): x_tau | x0 is Gaussian with mean alpha x0 + beta m and variance beta^2 s^2 + sigma^2 tau,
    # so b = alpha' x0 + beta' m + (beta beta' s^2 + sigma sigma' tau) / variance (x - mean). Euler-Maruyama with
    # 200 steps from X_0 = x0 must end at mean m and variance s^2: O(h) = 0.5 % bias plus the Monte-Carlo error
    # of 3000 x 32 draws (1.8 % of the variance, 4 sd); tolerance 3 %. Without the noise dW it misses by > 10 %.
    interpolant = EnergyConsistentInterpolant(noise=1.0, project=False).double()
    with torch.no_grad():
        interpolant.alpha_schedule.logits.copy_(torch.linspace(1, -1, 8))
        interpolant.beta_schedule.logits.copy_(torch.linspace(-0.5, 0.5, 8))
    count, spread = 3000, 0.5
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, 2, 4, 4, generator=generator, dtype=torch.float64).expand(count, -1, -1, -1)
    mean_next = 0.5 * x0 + 1.0

    def exact_drift(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        alpha, beta, alpha_dot, beta_dot = (value[:, None, None, None] for value in interpolant.schedules(tau))
        sigma, sigma_dot = (value[:, None, None, None] for value in interpolant.sigma(tau))
        tau = tau[:, None, None, None]
        variance = beta**2 * spread**2 + sigma**2 * tau
        covariance = beta * beta_dot * spread**2 + sigma * sigma_dot * tau
        gain = torch.where(variance > 0, covariance / variance.clamp_min(1e-300), torch.zeros_like(variance))
        return alpha_dot * x0 + beta_dot * mean_next + gain * (x - alpha * x0 - beta * mean_next)  # x = x0 at tau = 0

    def noise(step: int) -> torch.Tensor:
        return torch.randn(x0.shape, generator=generator, dtype=torch.float64)

    with torch.no_grad():
        final = interpolant.forecast(exact_drift, x0, steps=200, noise=noise)
        residual = final - mean_next
        assert residual.mean().abs().item() < 0.02 * spread
        assert residual.var().item() == pytest.approx(spread**2, rel=0.03)
        interpolant.noise = 0.0  # same drift, no diffusion: the marginals are not kept
        silent = interpolant.forecast(exact_drift, x0, steps=200, noise=noise)
    # the drift was derived for eps = 1; with eps = 0 in both drift and noise the result would be deterministic
    assert abs((silent - mean_next).var().item() - spread**2) > 0.1 * spread**2


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_the_noise_of_each_step_is_the_exact_stochastic_integral_of_sigma(steps: int) -> None:
    """With zero drift X_1 = sum_k s_k xi_k: its variance is int_0^1 sigma^2 = eps^2 / 3 for any step count.
    Checked exactly on the step variances and by Monte Carlo (40,000 entries: 5 standard errors of a
    variance, 3.5 %); the left-point rule sigma(tau_k)^2 h would give 100 %, 48 % and 20 % too much."""
    interpolant = EnergyConsistentInterpolant(noise=0.7, project=False).double()
    h = 1.0 / steps
    total = sum(interpolant.step_noise(k * h, (k + 1) * h) ** 2 for k in range(steps))
    assert total == pytest.approx(0.7**2 / 3, rel=1e-12)
    generator = torch.Generator().manual_seed(5)
    x0 = torch.zeros(2500, 2, 4, 2, dtype=torch.float64)

    def noise(step: int) -> torch.Tensor:
        return torch.randn(x0.shape, generator=generator, dtype=torch.float64)

    with torch.no_grad():
        final = interpolant.forecast(lambda x, tau: torch.zeros_like(x), x0, steps=steps, noise=noise)
    tolerance = 5 * (2 / final.numel()) ** 0.5
    assert final.var().item() == pytest.approx(0.7**2 / 3, rel=tolerance)
