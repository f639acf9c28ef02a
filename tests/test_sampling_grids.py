"""Path grids (log-SNR, EDM), grids fitted on a pilot batch, and the dpm++2m exponential integrator."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.analytic import GaussianMixture
from si_lightning.interpolants import Interpolant
from si_lightning.sampling import GRIDS, EDMGrid, LogSNRGrid, ODESampler, OracleFields, SDESampler, log_snr
from si_lightning.sampling.design import FittedGrid, fit_lipschitz_grid, fit_local_error_grid
from tests.conftest import mixture_2d
from tests.test_sampling_mmd import SAMPLES, gaussian_mmd, mixture, mixture_threshold

BROWNIAN = Interpolant("linear", "brownian", 1.0)


def test_logsnr_grid_is_uniform_in_log_snr_with_exact_ends():
    grid = LogSNRGrid(sigma_min=1e-4, sigma_max=1e4)(1e-3, 1 - 1e-3, 10, interpolant=BROWNIAN)
    assert float(grid[0]) == 1e-3 and float(grid[-1]) == 1 - 1e-3
    steps = log_snr(BROWNIAN, grid).diff()
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-10)
    # Where lambda is infinite (t = 0 for gamma = 0) it is clipped at -log sigma_max: the first step covers the rest.
    clipped = LogSNRGrid(sigma_max=80.0)(0.0, 0.5, 4, interpolant=Interpolant("linear", "zero"))
    assert float(clipped[0]) == 0.0
    inner = log_snr(Interpolant("linear", "zero"), clipped[1:]).diff()
    assert torch.allclose(inner, ((0.0 + math.log(80.0)) / 4) * torch.ones(3, dtype=torch.float64), rtol=1e-10)


def test_edm_grid_follows_the_rho_formula_in_sigma_and_reverses():
    grid = EDMGrid(sigma_min=0.01, sigma_max=20.0, rho=7.0)
    times = grid(0.0, 1.0, 8, interpolant=Interpolant("linear", "zero"))
    sigma = torch.exp(-log_snr(Interpolant("linear", "zero"), times[1:-1]))
    fractions = torch.arange(1, 8, dtype=torch.float64) / 8
    expected = (20.0 ** (1 / 7) + fractions * (0.01 ** (1 / 7) - 20.0 ** (1 / 7))) ** 7
    assert torch.allclose(sigma, expected, rtol=1e-10)
    assert torch.equal(grid(1.0, 0.0, 8, interpolant=Interpolant("linear", "zero")), times.flip(0))


class WithoutInterpolant:
    """The oracle's velocity and score behind an object that carries no interpolant."""

    def __init__(self, oracle: GaussianMixture) -> None:
        self.oracle = oracle

    def velocity(self, t, x, cond=None):
        return self.oracle.velocity(t, x)

    def score(self, t, x, cond=None):
        return self.oracle.score(t, x)


@pytest.mark.parametrize("grid", ["logsnr", "edm"])
def test_path_grids_need_the_interpolant(grid):
    fields = WithoutInterpolant(mixture_2d(BROWNIAN))
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs the interpolant of the fields, and got none"):
        SDESampler(10, diffusion="constant", grid=grid).sample(fields, x0)
    with pytest.raises(ValueError, match="needs the interpolant of the fields, and got none"):
        ODESampler("euler", 10, grid=grid).sample(fields, x0)


class RecordingFields(OracleFields):
    """The oracle's fields, recording the time of every evaluation."""

    def __init__(self, oracle: GaussianMixture) -> None:
        super().__init__(oracle)
        self.times: list[float] = []

    def velocity(self, t, x, cond=None):
        self.times.append(float(t[0]))
        return super().velocity(t, x, cond)

    def velocity_plus_score(self, t, x, cond, weight):
        self.times.append(float(t[0]))
        return super().velocity_plus_score(t, x, cond, weight)


@pytest.mark.parametrize("grid", ["logsnr", "edm"])
def test_the_sde_steps_on_the_grid_the_ode_builds(grid):
    """Euler-Maruyama evaluates at grid[:-1] (and the last step at the stopping time), the Euler ODE at grid[:-1]."""
    oracle = mixture_2d(BROWNIAN)
    x0 = oracle.sample_base(4, torch.Generator().manual_seed(0))
    start, end, last_step_size = 0.001, 0.999, 0.04
    sde_fields, ode_fields = RecordingFields(oracle), RecordingFields(oracle)
    sde = SDESampler(16, method="euler-maruyama", diffusion="constant", grid=grid, last_step_size=last_step_size)
    sde.sample(sde_fields, x0, generator=torch.Generator().manual_seed(1))
    ODESampler("euler", 16, grid=grid, interval=(start, end - last_step_size)).sample(ode_fields, x0)
    expected = GRIDS[grid]()(start, end - last_step_size, 16, dtype=torch.float64, interpolant=BROWNIAN)
    assert sde_fields.times == ode_fields.times + [end - last_step_size] == expected.tolist()
    assert log_snr(BROWNIAN, expected).diff().min() > 0  # a path grid, not the uniform one
    assert (expected.diff() - expected.diff().mean()).abs().max() > 1e-3


@pytest.mark.parametrize("grid", ["logsnr", "edm"])
def test_the_sde_on_path_grids_reproduces_the_mixture(grid):
    """Euler-Maruyama, constant eps = 1, 200 steps and the Tweedie last step from t = 0.989 (as on the uniform grid
    in test_sampling_sde.py): mean within 4 standard errors of the mixture's, MMD below the data-vs-data threshold."""
    oracle = mixture()
    generator = torch.Generator().manual_seed(41)
    sampler = SDESampler(200, diffusion="constant", grid=grid, last_step="tweedie", last_step_size=0.01)
    samples = sampler.sample(oracle, oracle.sample_base(SAMPLES, generator), generator=generator).x
    mean = (oracle.weights[:, None] * oracle.means).sum(0)
    standard_error = samples.std(0) / math.sqrt(SAMPLES)
    assert bool(((samples.mean(0) - mean).abs() < 4 * standard_error).all())
    assert gaussian_mmd(samples, oracle.sample_data(SAMPLES, generator)) < mixture_threshold()


def dopri5_reference(oracle, x0):
    return ODESampler("dopri5", atol=1e-10, rtol=1e-10).sample(oracle, x0).x


@pytest.mark.parametrize("case", [("linear", "brownian", 1.0), ("sbdm", "zero", 1.0), ("trig", "zero", 1.0)])
def test_dpm_solver_is_second_order(case):
    """Doubling the steps divides the error by about 4 (by more than 3 at 10 -> 20 -> 40 steps)."""
    oracle = mixture_2d(Interpolant(*case))
    x0 = oracle.sample_base(200, torch.Generator().manual_seed(0))
    reference = dopri5_reference(oracle, x0)
    errors = []
    for steps in (10, 20, 40):
        result = ODESampler("dpm++2m", steps, grid="logsnr").sample(oracle, x0)
        assert result.nfe == steps
        errors.append(float((result.x - reference).norm(dim=1).mean()))
    assert errors[0] / errors[1] > 3 and errors[1] / errors[2] > 3


def test_dpm_solver_refuses_fields_without_a_gaussian_base():
    oracle = mixture_2d(Interpolant("mirror", "brownian"))
    with pytest.raises(ValueError, match="needs an independent N\\(0, I\\) base"):
        ODESampler("dpm++2m", 10).sample(oracle, oracle.sample_data(4))


def test_fitted_grid_round_trips_through_its_state_dict_and_equidistributes():
    density = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    grid = FittedGrid(torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=torch.float64), density, "test")
    copy = FittedGrid()
    copy.load_state_dict(grid.state_dict())
    assert torch.equal(copy(0.0, 1.0, 12), grid(0.0, 1.0, 12))
    # The integral of the density between consecutive times is the same for every step.
    times = grid(0.0, 1.0, 12)
    fine = torch.linspace(0.0, 1.0, 100_001, dtype=torch.float64)
    values = torch.interp(fine, grid.times, grid.density) if hasattr(torch, "interp") else None
    if values is None:
        from si_lightning.sampling.design import _interpolate

        values = _interpolate(grid.times, grid.density, fine)
    cumulative = torch.cat(
        [torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (values[1:] + values[:-1]) * 1e-5, 0)]
    )
    masses = torch.tensor([float(cumulative[round(float(t) * 100_000)]) for t in times]).diff()
    assert torch.allclose(masses, masses.mean().expand_as(masses), rtol=1e-3)


def spread_mixture(dim: int = 16) -> GaussianMixture:
    """Five modes with means ~ N(0, 7.5^2 I) and covariances W^T W / d + I: far apart, so the field is stiff."""
    generator = torch.Generator().manual_seed(0)
    means = 7.5 * torch.randn(5, dim, generator=generator, dtype=torch.float64)
    factors = torch.randn(5, dim, dim, generator=generator, dtype=torch.float64)
    covariances = factors.transpose(1, 2) @ factors / dim + torch.eye(dim, dtype=torch.float64)
    weights = torch.tensor([0.1, 0.15, 0.2, 0.25, 0.3], dtype=torch.float64)
    return GaussianMixture(weights, means, covariances, BROWNIAN)


@pytest.mark.parametrize("fit", ["local-error", "lipschitz"])
def test_fitted_grid_beats_the_uniform_and_cosine_grids_at_equal_nfe(fit):
    """Euler at 12 NFE on a grid fitted on 32 pilot draws, against dopri5 (measured mean errors: uniform 8.9,
    cosine 4.1, local-error 2.0, Lipschitz 2.9)."""
    oracle = spread_mixture()
    pilot = oracle.sample_base(32, torch.Generator().manual_seed(1))
    grid = fit_local_error_grid(oracle, pilot, order=1) if fit == "local-error" else fit_lipschitz_grid(oracle, pilot)
    x0 = oracle.sample_base(200, torch.Generator().manual_seed(0))
    reference = ODESampler("dopri5", atol=1e-8, rtol=1e-8).sample(oracle, x0).x
    error = {}
    for name, choice in (("uniform", "uniform"), ("cosine", "cosine"), ("fitted", grid)):
        error[name] = float((ODESampler("euler", 12, grid=choice).sample(oracle, x0).x - reference).norm(dim=1).mean())
    assert error["fitted"] < 0.5 * error["uniform"] and error["fitted"] < 0.8 * error["cosine"], error


def test_fitted_grid_rejects_bad_tables():
    with pytest.raises(ValueError, match="strictly increasing times and a positive density"):
        FittedGrid(torch.tensor([0.0, 0.5, 0.5, 1.0]), torch.ones(4))
    assert math.isfinite(float(FittedGrid()(0.0, 1.0, 4)[2]))
