"""The work-based estimators (Zwanzig, BAR ours and pymbar's, TI) and the benchmark systems' reference Delta F."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from si_lightning.free_energy import bennett, estimate, exponential_average
from si_lightning.free_energy.systems import SYSTEMS, DoubleWellPair, GaussianPair, MixturePair, build_system
from si_lightning.interpolants import Interpolant


def gaussian_works(delta_f: float, sigma: float, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """W_F ~ N(Delta F + sigma^2 / 2, sigma^2), W_R ~ N(-Delta F + sigma^2 / 2, sigma^2): they satisfy Crooks."""
    generator = np.random.default_rng(seed)
    forward = generator.normal(delta_f + sigma**2 / 2, sigma, count)
    reverse = generator.normal(-delta_f + sigma**2 / 2, sigma, count)
    return forward, reverse


@pytest.mark.parametrize("seed", [0, 1])
def test_own_bar_equals_pymbar_and_recovers_delta_f(seed):
    pymbar = pytest.importorskip("pymbar.other_estimators")
    forward, reverse = gaussian_works(1.7, 1.5, 3000, seed)
    ours = bennett(forward, reverse)
    theirs = pymbar.bar(forward, reverse, uncertainty_method="BAR")
    # Both solve the same equation (brentq to 1e-12 here, pymbar to its 1e-12 relative tolerance).
    assert ours.delta_f == pytest.approx(theirs["Delta_f"], abs=1e-8)
    assert ours.stderr == pytest.approx(theirs["dDelta_f"], rel=1e-6)
    assert abs(ours.delta_f - 1.7) <= 3 * ours.stderr
    unequal = bennett(forward[:1000], reverse)  # n_F != n_R: the log(n_F / n_R) shift
    theirs = pymbar.bar(forward[:1000], reverse, uncertainty_method="BAR")
    assert unequal.delta_f == pytest.approx(theirs["Delta_f"], abs=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
def test_exponential_average_of_gaussian_works(seed):
    """-log E[exp(-W)] = Delta F for W ~ N(Delta F + sigma^2/2, sigma^2); sigma = 0.5 keeps the delta method sound."""
    forward, reverse = gaussian_works(-0.8, 0.5, 4000, seed)
    estimate_forward = exponential_average(forward)
    assert abs(estimate_forward.delta_f + 0.8) <= 3 * estimate_forward.stderr
    # Its delta-method error is sqrt((e^{sigma^2} - 1) / n) in the Gaussian case: within 10 % at n = 4000.
    assert estimate_forward.stderr == pytest.approx(math.sqrt((math.exp(0.25) - 1) / 4000), rel=0.1)
    assert abs(-exponential_average(reverse).delta_f + 0.8) <= 3 * exponential_average(reverse).stderr


def test_fep_bar_and_ti_on_gaussians_with_overlap():
    """d = 2 Gaussians with good overlap: each baseline within 3 standard errors (+ TI's MCMC allowance)."""
    pair = GaussianPair(2)
    generator = torch.Generator().manual_seed(0)
    x_a, x_b = pair.sample_a(4000, generator), pair.sample_b(4000, generator)
    truth = pair.delta_f()
    for method in ("fep", "bar"):
        result = estimate(None, pair.energy_a, pair.energy_b, x_a, x_b, method=method)
        assert abs(result.delta_f - truth) <= 3 * result.stderr, (method, result, truth)
        assert result.upper >= truth
    bar = estimate(None, pair.energy_a, pair.energy_b, x_a, x_b, method="bar")
    assert bar.lower <= truth <= bar.upper
    # TI: rho_t is Gaussian here (U_t is quadratic), so MALA from x_a / x_b mixes in a few steps; 8-node
    # Gauss-Legendre is exact to ~1e-6 for this smooth integrand. 0.02 covers the chains' residual bias.
    ti = estimate(
        None, pair.energy_a, pair.energy_b, x_a[:1000], x_b[:1000], method="ti", nodes=8, mcmc_steps=20,
        step_size=0.2, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert abs(ti.delta_f - truth) <= 3 * ti.stderr + 0.02, (ti, truth)
    assert ti.energy_evaluations == 2 * 1000 * (1 + 4 * 20) * 2  # 2 energies x chains x (start + steps) x halves


def test_mixture_delta_f_by_quadrature():
    """The closed-form Delta F of the mixtures equals -log of the ratio of the 2-D integrals of exp(-U).

    The trapezoid rule on [-9, 9]^2 with spacing 0.02 converges geometrically for these smooth integrands
    (and the mass outside the box is below e^{-40}), so 1e-8 is a generous tolerance.
    """
    pair = MixturePair()
    axis = torch.linspace(-9, 9, 901, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)

    def log_z(energy) -> float:
        values = torch.exp(-energy(points)).reshape(axis.numel(), axis.numel())
        return math.log(float(torch.trapezoid(torch.trapezoid(values, axis, dim=1), axis)))

    assert pair.delta_f() == pytest.approx(log_z(pair.energy_a) - log_z(pair.energy_b), abs=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
def test_double_well_samples_have_the_quadrature_moments(seed):
    """Mean and E[y^2] of every coordinate of the rejection samples against 1-D quadrature (4 standard errors)."""
    pair = DoubleWellPair(dims=4)
    generator = torch.Generator().manual_seed(seed)
    for tilt, samples in ((0.0, pair.sample_a(5000, generator)), (pair.tilt, pair.sample_b(5000, generator))):
        energy = pair._coordinate_energy(tilt)
        grid = np.linspace(-4, 4, 400001)
        density = np.exp(-energy(grid))
        density /= np.trapezoid(density, grid)
        for power in (1, 2):
            moment = float(np.trapezoid(grid**power * density, grid))
            values = samples.pow(power)
            error = 4 * values.std(0) / math.sqrt(values.shape[0])
            assert bool(((values.mean(0) - moment).abs() <= error).all()), (tilt, power, values.mean(0), moment)


def test_double_well_delta_f_matches_energy_evaluations_of_the_samples():
    """Delta F of the separable double well: -d log(z_b / z_a); z by a trapezoid rule on a fine grid agrees."""
    pair = DoubleWellPair(dims=10)
    grid = np.linspace(-6, 6, 600001)
    z = [np.trapezoid(np.exp(-pair._coordinate_energy(tilt)(grid)), grid) for tilt in (0.0, pair.tilt)]
    assert pair.delta_f() == pytest.approx(-10 * math.log(z[1] / z[0]), abs=1e-8)


def test_systems_by_name_and_bad_names():
    assert set(SYSTEMS) == {"gaussians", "mixtures", "double-well"}
    assert build_system("gaussians", 7).dims == 7
    with pytest.raises(ValueError, match="unknown free-energy system 'gaussian'; expected one of"):
        build_system("gaussian")
    with pytest.raises(ValueError, match="dims = 3 must be 2"):
        build_system("mixtures", 3)


def test_estimate_refuses_bad_input_in_one_line():
    pair = GaussianPair(2)
    x = pair.sample_a(10)
    with pytest.raises(ValueError, match="unknown free-energy method 'crooks'; expected one of: bar, controlled-"):
        estimate(None, pair.energy_a, pair.energy_b, x, x, method="crooks")
    with pytest.raises(ValueError, match="method 'controlled-crooks' uses both directions: give x_b"):
        estimate(
            pair.oracle(Interpolant("linear", "zero")), pair.energy_a, pair.energy_b, x, method="controlled-crooks"
        )
    with pytest.raises(ValueError, match="method 'escorted-jarzynski' transports samples: give fields"):
        estimate(None, pair.energy_a, pair.energy_b, x, method="escorted-jarzynski")
    with pytest.raises(ValueError, match=r"energy_b must return a tensor of shape \(10,\), got \(10, 1\)"):
        estimate(None, pair.energy_a, lambda y: y[:, :1], x, method="fep")
    with pytest.raises(ValueError, match="x_b must have d = 2 columns like x_a"):
        estimate(None, pair.energy_a, pair.energy_b, x, torch.zeros(5, 3, dtype=torch.float64), method="bar")


@pytest.mark.parametrize("seed", [0, 1])
def test_mixture_samples_have_the_moments_of_their_energy(seed):
    """Mean and second moments of the samples against the same moments of e^{-U} / Z by 2-D quadrature.

    Tolerance: 4 standard errors of the sample means (20,000 samples); the quadrature (trapezoid, spacing
    0.02) is exact to far below that. This catches a sampler whose component weights ignore |S_j|^{1/2}.
    """
    pair = MixturePair()
    axis = torch.linspace(-9, 9, 901, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    generator = torch.Generator().manual_seed(seed)
    for energy, samples in (
        (pair.energy_a, pair.sample_a(20000, generator)),
        (pair.energy_b, pair.sample_b(20000, generator)),
    ):
        density = torch.exp(-energy(points))
        density = density / density.sum()
        features = torch.cat([points, points.pow(2), points.prod(1, keepdim=True)], dim=1)  # x, y, x^2, y^2, xy
        expected = (density[:, None] * features).sum(0)
        observed = torch.cat([samples, samples.pow(2), samples.prod(1, keepdim=True)], dim=1)
        error = 4 * observed.std(0) / math.sqrt(observed.shape[0])
        assert bool(((observed.mean(0) - expected).abs() <= error).all()), (observed.mean(0), expected, error)
