"""The default SDE method (exponential Euler-Maruyama): no step amplifies the state, it is exact where it should be,
it tends to Euler-Maruyama for small steps, and the default sbdm SDE reproduces the oracle's mixture."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.analytic import GaussianMixture
from si_lightning.interpolants import Interpolant
from si_lightning.sampling import DIFFUSIONS, Diffusion, OracleFields, SDESampler
from si_lightning.sampling.sde_methods import ExponentialEulerMaruyama
from tests.conftest import mixture_2d
from tests.test_sampling_mmd import SAMPLES, base_threshold, gaussian_mmd, mixture, mixture_threshold

LINEAR_PATHS = {"linear": Interpolant(), "linear-brownian": Interpolant("linear", "brownian", 1.0)}
# r / t <= t / (t^2 + (1 - t)^2) <= (1 + sqrt 2) / 2 on the linear path, data variance <= 1 (see below).
DATA_GROWTH = (1 + math.sqrt(2)) / 2


class RecordingFields(OracleFields):
    """The oracle's fields, recording time and state at every drift evaluation (one per step, one for the mean
    last step)."""

    def __init__(self, oracle: GaussianMixture) -> None:
        super().__init__(oracle)
        self.times: list[float] = []
        self.states: list[torch.Tensor] = []

    def velocity_plus_score(self, t, x, cond, weight):
        self.times.append(float(t[0]))
        self.states.append(x.clone())
        return super().velocity_plus_score(t, x, cond, weight)


def gaussian_data(interpolant: Interpolant, variance: float) -> GaussianMixture:
    """Data N(0.5, variance) in one dimension: b and s are affine in x, so each step is affine in x."""
    return GaussianMixture(
        torch.ones(1, dtype=torch.float64),
        torch.full((1, 1), 0.5, dtype=torch.float64),
        torch.full((1, 1, 1), variance, dtype=torch.float64),
        interpolant,
    )


def step_multipliers(sampler: SDESampler, oracle: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """(M_k, t_k) for every step including the mean last step: M_k = d x_{k+1} / d x_k, from two states 1 apart
    driven by the same noise (one seed for both rows); t (steps + 2,) the times of the states."""
    fields = RecordingFields(oracle)
    result = sampler.sample(fields, torch.tensor([[0.3], [1.3]], dtype=torch.float64), seeds=[5, 5])
    states = torch.stack([state[:, 0] for state in fields.states] + [result.x[:, 0]])
    differences = states[:, 1] - states[:, 0]
    times = torch.tensor([*fields.times, result.interval[1]], dtype=torch.float64)
    return differences[1:] / differences[:-1], times


@pytest.mark.parametrize("variance", [0.01, 1.0])
@pytest.mark.parametrize("path", sorted(LINEAR_PATHS))
@pytest.mark.parametrize("diffusion", sorted(DIFFUSIONS))
def test_no_step_of_the_default_sde_amplifies_the_state(diffusion, path, variance):
    """SDESampler(diffusion=...) with every other setting at its default, on data N(0.5, variance).

    x = (x - beta D) + beta D: the exact SDE contracts the noise part, and the data part grows by beta(t')/beta(t)
    only in the share r = beta^2 var / (beta^2 var + alpha_bar^2) of x that it makes up, so a step of size h may
    multiply x by at most 1 + r h / t <= 1 + (1 + sqrt 2)/2 h on the linear path (alpha_bar^2 >= (1 - t)^2, var <= 1).
    Euler-Maruyama's first sbdm step multiplies x by -2.84, and its mean last step with constant eps by -2.79.
    """
    multipliers, times = step_multipliers(SDESampler(diffusion=diffusion), gaussian_data(LINEAR_PATHS[path], variance))
    steps = times.diff()
    assert multipliers.shape == (251,) and float(steps[-1]) == pytest.approx(0.04)
    assert bool((multipliers > 0).all()), multipliers.min()
    assert bool((multipliers <= 1 + DATA_GROWTH * steps + 1e-9).all()), (multipliers - 1 - DATA_GROWTH * steps).max()


@pytest.mark.parametrize("path", sorted(LINEAR_PATHS))
def test_the_exponential_step_is_exact_in_its_linear_part(path):
    """Default sbdm SDE, data N(0.5, 0.25): every step multiplies x by Phi (1 - r) + r beta(t')/beta(t), with
    Phi = (alpha_bar(t') / alpha_bar(t)) exp(-(lambda(t') - lambda(t))) (eps / alpha_bar^2 = lambda', lambda the
    log-SNR) and r = beta D'(x) the data's share of x: exact for data known at the step's start (to 1e-10)."""
    interpolant = LINEAR_PATHS[path]
    variance = 0.25
    multipliers, times = step_multipliers(SDESampler(), gaussian_data(interpolant, variance))
    start, end = times[:-1], times[1:]
    here, there = interpolant.coefficients(start), interpolant.coefficients(end)
    noise, noise_next = here.noise_variance(True).sqrt(), there.noise_variance(True).sqrt()
    log_snr_change = torch.log(there.beta / noise_next) - torch.log(here.beta / noise)
    decay = noise_next / noise * torch.exp(-log_snr_change)
    share = here.beta**2 * variance / (here.beta**2 * variance + noise**2)
    expected = decay * (1 - share) + share * there.beta / here.beta
    torch.testing.assert_close(multipliers, expected, atol=1e-10, rtol=1e-10)
    assert float(multipliers[0]) == pytest.approx(0.205, abs=2e-3)  # Euler-Maruyama: about 1 - 0.0038 * 1000 = -2.84


@pytest.mark.parametrize("case", [("linear", "zero"), ("linear", "brownian"), ("trig", "zero"), ("vp", "zero")])
def test_the_sbdm_noise_integral_is_the_quadrature_of_its_rate(case):
    """sbdm's closed form c (lambda(t') - lambda(t)) against the generic quadrature, on the default grid's steps
    (the first from t = 0.001, where eps / alpha_bar^2 ~ c / t) and on a coarse grid up to 0.999: relative 1e-10."""
    interpolant = Interpolant(*case)
    diffusion = DIFFUSIONS["sbdm"](1.5)
    for grid in (
        torch.linspace(0.001, 0.959, 251, dtype=torch.float64),
        torch.tensor([0.001, 0.0048, 0.5, 0.959, 0.999], dtype=torch.float64),
    ):
        closed_form = diffusion.noise_integral(grid[:-1], grid[1:], interpolant)
        quadrature = Diffusion.noise_integral(diffusion, grid[:-1], grid[1:], interpolant)
        torch.testing.assert_close(closed_form, quadrature, atol=0, rtol=1e-10)


@pytest.mark.parametrize("gaussian_base", [True, False])
def test_the_constant_noise_integral_is_exact_even_over_long_steps(gaussian_base):
    """eps = c: alpha_bar^2 = (1 - t)^2 (linear, Gaussian base) gives c (1 / (1 - t') - 1 / (1 - t)); gamma^2 =
    t (1 - t) (Brownian gamma, data-dependent base) gives c (logit t' - logit t). To 1e-12, also over
    [0.001, 0.999] in one step, where alpha_bar^2 changes a thousandfold."""
    grid = torch.tensor([0.001, 0.0048, 0.3, 0.959, 0.999], dtype=torch.float64)
    start, end = torch.cat([grid[:-1], grid[:1]]), torch.cat([grid[1:], grid[-1:]])
    if gaussian_base:
        interpolant, exact = Interpolant(), 0.7 * (1 / (1 - end) - 1 / (1 - start))
    else:
        interpolant = Interpolant("linear", "brownian", 1.0, gaussian_base=False)
        exact = 0.7 * (torch.logit(end) - torch.logit(start))
    value = DIFFUSIONS["constant"](0.7).noise_integral(start, end, interpolant)
    torch.testing.assert_close(value, exact, atol=0, rtol=1e-12)


@pytest.mark.parametrize("direction", [1.0, -1.0])
@pytest.mark.parametrize("diffusion", ["sbdm", "constant", "sigma"])
def test_the_exponential_step_tends_to_euler_maruyama(diffusion, direction):
    """score weight / (+-eps) - 1 and noise^2 / (2 eps |h|) - 1 are O(h) on [0.1, 0.9]: 400 and 800 steps."""
    interpolant = Interpolant("linear", "brownian", 1.0)
    family = DIFFUSIONS[diffusion](1.0)
    deviations = []
    for steps in (400, 800):
        grid = torch.linspace(0.1, 0.9, steps + 1, dtype=torch.float64)
        grid = grid if direction > 0 else grid.flip(0)
        plan = ExponentialEulerMaruyama().plan(grid, family, interpolant, direction, "test")
        eps, step = plan.eps[:-1], grid.diff().abs()
        weight_deviation = (plan.score_weight / (direction * eps) - 1).abs().max()
        noise_deviation = (plan.noise_scale**2 / (2 * eps * step) - 1).abs().max()
        deviations.append(torch.stack([weight_deviation, noise_deviation]))
    # First order: halving h halves the deviation (some are exact: sbdm's weight is eps at the step's end).
    assert bool((deviations[1] < 0.05).all()), deviations
    assert bool((deviations[1] <= 0.55 * deviations[0] + 1e-12).all()), deviations


@pytest.mark.parametrize("path", sorted(LINEAR_PATHS))
def test_the_default_sde_reproduces_the_mixture(path):
    """SDESampler() (250 steps, sbdm, mean last step from t = 0.959): mean within 4 standard errors of the
    mixture's, MMD below the data-vs-data threshold; encode (the backward SDE) returns the base."""
    oracle = mixture() if path == "linear-brownian" else mixture_2d(LINEAR_PATHS[path])
    generator = torch.Generator().manual_seed(51)
    samples = SDESampler().sample(oracle, oracle.sample_base(SAMPLES, generator), generator=generator).x
    mean = (oracle.weights[:, None] * oracle.means).sum(0)
    assert bool(((samples.mean(0) - mean).abs() < 4 * samples.std(0) / math.sqrt(SAMPLES)).all())
    assert gaussian_mmd(samples, oracle.sample_data(SAMPLES, generator)) < mixture_threshold()
    encoded = SDESampler().encode(oracle, oracle.sample_data(SAMPLES, generator), generator=generator).x
    assert gaussian_mmd(encoded, oracle.sample_base(SAMPLES, generator)) < base_threshold()
