"""Log-likelihood estimators against the oracle's log rho_1 (docs/math.md section 5), and bits/dim."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.interpolants import Interpolant
from si_lightning.sampling import (
    Fields,
    NetworkFields,
    bits_per_dim,
    generators_from_seeds,
    log_likelihood,
    sde_log_likelihood,
)
from tests.conftest import mixture_2d

POINTS = 12


def setup(case=("linear", "quadratic", 1.0)):
    """The 2-D mixture for an interpolant whose velocity is finite on all of [0, 1], and data points."""
    oracle = mixture_2d(Interpolant(*case))
    x1 = oracle.sample_data(POINTS, torch.Generator().manual_seed(9))
    return oracle, x1


@pytest.mark.parametrize("case", [("linear", "quadratic", 1.0), ("trig", "zero", 1.0)], ids=["linear", "trig"])
@pytest.mark.parametrize(
    "solver", [{"method": "dopri5", "atol": 1e-7, "rtol": 1e-7}, {"method": "rk4", "steps": 100}], ids=["dopri5", "rk4"]
)
def test_exact_divergence_equals_the_oracle_log_density(case, solver):
    oracle, x1 = setup(case)
    result = log_likelihood(oracle, x1, oracle.base_log_prob, divergence="exact", **solver)
    assert result.standard_error is None and result.dims == 2
    assert (result.log_prob - oracle.log_prob(1.0, x1)).abs().max().item() < 1e-4


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_mean_over_64_probes_is_within_3_standard_errors(probe):
    oracle, x1 = setup()
    result = log_likelihood(
        oracle,
        x1,
        oracle.base_log_prob,
        "hutchinson",
        probes=64,
        probe=probe,
        atol=1e-6,
        rtol=1e-6,
        seeds=range(POINTS),
    )
    exact = oracle.log_prob(1.0, x1)
    assert bool((result.standard_error > 0).all())
    # Rademacher probes on the diagonal are exact; where the Jacobian's off-diagonal vanishes so does the error.
    assert bool(((result.log_prob - exact).abs() <= 3 * result.standard_error + 1e-5).all())
    assert "64 " + probe in result.estimator


def test_hutchinson_probes_are_drawn_once_per_solve():
    """For b = A x with constant A the estimate with probe v is exactly log rho_0(X_0) - v^T A v (t_end - t_start).

    A fresh probe per right-hand-side call would average many probes and miss this value.
    """
    matrix = torch.tensor([[-0.3, 1.2], [-0.4, 0.5]], dtype=torch.float64)

    class LinearFields(Fields):
        def velocity(self, t, x, cond=None):
            return x @ matrix.T

    def base_log_prob(x):
        return -0.5 * x.pow(2).sum(1) - math.log(2 * math.pi)

    x1 = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.1]], dtype=torch.float64)
    result = log_likelihood(
        LinearFields(), x1, base_log_prob, "hutchinson", probes=1, method="rk4", steps=50, seeds=[3, 4, 5]
    )
    probes = torch.cat(
        [
            torch.randn(1, 1, 2, generator=item, dtype=torch.float64)[0]
            for item in generators_from_seeds([3, 4, 5], "probe")
        ]
    )
    x0 = x1 @ torch.linalg.matrix_exp(-matrix).T
    expected = base_log_prob(x0) - ((probes @ matrix.T) * probes).sum(1)
    torch.testing.assert_close(result.log_prob, expected, atol=1e-7, rtol=0)


def test_sde_estimator_is_within_4_standard_errors():
    oracle, x1 = setup()
    x1 = x1[:8]
    result = sde_log_likelihood(
        oracle, x1, oracle.base_log_prob, paths=512, steps=100, diffusion="constant", scale=0.5, seeds=range(8)
    )
    exact = oracle.log_prob(1.0, x1)
    error = result.log_prob - exact
    assert bool((error.abs() <= 4 * result.standard_error).all())
    # All points together: the mean error within 4 standard errors of the mean.
    assert error.mean().abs() <= 4 * result.standard_error.pow(2).sum().sqrt() / 8
    assert result.nfe == 100


def test_sde_estimator_without_noise_is_the_euler_ode_estimator():
    """eps = 0: b_B = b_F = b and the integrand is div b, so each path is the Euler solve of the ODE estimator."""
    oracle, x1 = setup(("linear", "brownian", 1.0))
    interval = oracle.interpolant.valid_interval(need_score=True)
    stochastic = sde_log_likelihood(oracle, x1, oracle.base_log_prob, paths=2, steps=50, scale=0.0, seeds=range(POINTS))
    ode = log_likelihood(oracle, x1, oracle.base_log_prob, method="euler", steps=50, interval=interval)
    torch.testing.assert_close(stochastic.log_prob, ode.log_prob, atol=1e-12, rtol=0)
    assert stochastic.standard_error.abs().max() == 0


# ------------------------------------------------------------------------------------- bits/dim
def test_uniform_density_on_the_cube_is_8_bits_per_dim():
    """log p = -D ln 2 (uniform on [-1, 1]^D) is uniform over 256 levels after dequantisation: 8 bits/dim."""
    dims = 3 * 4 * 4
    assert bits_per_dim(torch.tensor([-dims * math.log(2)]), dims).item() == pytest.approx(8.0, abs=1e-12)


def test_image_shaped_likelihood_reports_bits_per_dim_over_all_pixels():
    oracle, x1 = setup()

    def network(x, t, cond=None):
        return oracle.velocity(t, x.flatten(1)).reshape(x.shape)

    fields = NetworkFields(network, oracle.interpolant, "velocity")
    images = x1.reshape(POINTS, 2, 1, 1)
    result = log_likelihood(fields, images, lambda x: oracle.base_log_prob(x.flatten(1)), method="rk4", steps=50)
    flat = log_likelihood(oracle, x1, oracle.base_log_prob, method="rk4", steps=50)
    torch.testing.assert_close(result.log_prob, flat.log_prob, atol=1e-12, rtol=0)
    assert result.dims == 2
    torch.testing.assert_close(result.bits_per_dim(), -flat.log_prob / (2 * math.log(2)) + 7)


# ------------------------------------------------------------------------------------------ NFE
@pytest.mark.parametrize("method", ["dopri5", "heun"])
def test_reported_nfe_equals_network_calls(method):
    oracle, x1 = setup()
    calls = []

    def network(x, t, cond=None):
        calls.append(1)
        return oracle.velocity(t, x)

    fields = NetworkFields(network, oracle.interpolant, "velocity")
    assert log_likelihood(fields, x1, oracle.base_log_prob, method=method, steps=10).nfe == len(calls)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"divergence": "hutchinson", "probes": 0}, "probes must be an int >= 1, got 0"),
        ({"divergence": "exact", "probes": 4}, "probes = 4 applies to the Hutchinson estimator"),
        ({"divergence": "skilling"}, "unknown divergence estimator 'skilling'; expected one of: exact, hutchinson"),
        ({"divergence": "hutchinson", "probe": "uniform"}, "unknown Hutchinson probe 'uniform'"),
        ({"atol": -1.0}, "atol must be a finite number > 0, got -1.0"),
        ({"interval": (-0.1, 1.0)}, r"t_start = -0.1 .* outside the valid interval \[0.0, 1.0\]"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    oracle, x1 = setup()
    with pytest.raises(ValueError, match=message):
        log_likelihood(oracle, x1, oracle.base_log_prob, **arguments)


def test_base_log_prob_of_the_wrong_shape_is_refused():
    oracle, x1 = setup()
    with pytest.raises(ValueError, match=r"base_log_prob must return a tensor of shape \(12,\), got \(12, 2\)"):
        log_likelihood(oracle, x1, lambda x: x, method="euler", steps=2)
    with pytest.raises(ValueError, match="paths must be an int >= 1, got 0"):
        sde_log_likelihood(oracle, x1, oracle.base_log_prob, paths=0)
