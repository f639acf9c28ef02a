"""The energy-interpolant head: its score is -grad U_t, its ends are U_a and U_b, and TI integrates along it.

TI on an energy interpolant U_t gives Delta F = int_0^1 E_{e^{-U_t}}[d_t U_t] dt; along the interpolant between
two Gaussians rho_t = N(m_t, C_t) is Gaussian, so the exact head has a closed form (``ExactCorrection``) and
its TI is checked against the closed-form Delta F (tests/test_free_energy_oracle.py's pair).

Tolerance: 3 Monte-Carlo standard errors (the estimator's own) plus the quadrature error, which is computed
exactly here: Gauss-Legendre applied to the closed-form integrand -d/dt (1/2) log det C_t (plus the offsets'
o_b - o_a, integrated exactly), against its exact integral.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from si_lightning.data import FreeEnergyDataModule
from si_lightning.free_energy import EnergyInterpolantBackbone, estimate, learned_thermodynamic_integration
from si_lightning.free_energy.energies import CountedEnergy
from si_lightning.free_energy.systems import build_system
from si_lightning.interpolants import Interpolant, get_prediction
from si_lightning.module import InterpolantModule
from si_lightning.sampling.fields import NetworkFields
from tests.test_free_energy_oracle import GaussianPair

INTERPOLANT = Interpolant("linear", "quadratic", gamma_scale=1.0, gaussian_base=False)


def moments(pair: GaussianPair, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (m, d) and covariance (m, d, d) of x_t = alpha x0 + beta x1 + gamma z at times t (m,)."""
    c = INTERPOLANT.coefficients(t)
    alpha, beta, gamma = c.alpha[:, None], c.beta[:, None], c.gamma[:, None, None]
    identity = torch.eye(pair.dims, dtype=torch.float64)
    mean = alpha * pair.base_mean + beta * pair.mean
    covariance = (alpha[:, :, None] * pair.base_std) ** 2 * identity + beta[:, :, None] ** 2 * pair.covariance
    return mean, covariance + gamma**2 * identity


class ExactCorrection:
    """N with (1 - t) U_a + t U_b + t (1 - t) N = q_t / 2 + (1 - t) o_a + t o_b + t (1 - t) g(t).

    q_t(x) = (x - m_t)^T C_t^{-1} (x - m_t), so e^{-U_t} is proportional to rho_t; g(t) = 3 + 2 t is a
    time-only part that changes neither the score nor the integral (a cubic: Gauss-Legendre integrates it exactly).
    """

    def __init__(self, pair: GaussianPair) -> None:
        self.pair = pair

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, covariance = moments(self.pair, t)
        residual = x - mean
        quadratic = (residual * torch.linalg.solve(covariance, residual.unsqueeze(-1)).squeeze(-1)).sum(1)
        pair = self.pair
        target = 0.5 * quadratic + (1 - t) * pair.offset_a + t * pair.offset_b
        linear = (1 - t) * pair.energy_a(x) + t * pair.energy_b(x)
        return (target - linear) / (t * (1 - t)) + 3 + 2 * t


def quadrature_error(pair: GaussianPair, nodes: int) -> float:
    """Gauss-Legendre's error on int_0^1 -d/dt (1/2) log det C_t dt (the integrand in closed form)."""
    points, weights = np.polynomial.legendre.leggauss(nodes)
    times = torch.tensor((points + 1) / 2, dtype=torch.float64)
    c = INTERPOLANT.coefficients(times)
    _, covariance = moments(pair, times)
    identity = torch.eye(pair.dims, dtype=torch.float64)
    alpha, beta = c.alpha[:, None, None], c.beta[:, None, None]
    derivative = (
        2 * alpha * c.alpha_dot[:, None, None] * pair.base_std**2 * identity
        + 2 * beta * c.beta_dot[:, None, None] * pair.covariance
        + 2 * (c.gamma * c.gamma_dot)[:, None, None] * identity
    )
    rate = -0.5 * torch.linalg.solve(covariance, derivative).diagonal(dim1=1, dim2=2).sum(1)
    approximate = float((torch.tensor(weights / 2) * rate).sum())
    exact = -0.5 * (float(torch.logdet(pair.covariance)) - 2 * pair.dims * math.log(pair.base_std))
    return abs(approximate - exact)


@pytest.mark.parametrize(("dims", "count"), [pytest.param(2, 4000, id="d2"), pytest.param(50, 1000, id="d50")])
def test_ti_on_the_exact_energy_interpolant_gives_the_closed_form(dims, count):
    pair = GaussianPair(dims, seed=dims)
    truth = pair.delta_f()
    x_a, x_b = pair.samples(count, seed=30 + dims)
    energies = CountedEnergy(pair.energy_a, "a"), CountedEnergy(pair.energy_b, "b")
    nodes = 12
    result = learned_thermodynamic_integration(
        ExactCorrection(pair), INTERPOLANT, *energies, x_a, x_b, nodes, torch.Generator().manual_seed(dims)
    )
    tolerance = 3 * result.stderr + quadrature_error(pair, nodes)
    assert abs(result.delta_f - truth) <= tolerance, (result, truth, tolerance)
    assert energies[0].evaluations == energies[1].evaluations == nodes * count
    # Not trivially right: the linear energy interpolant's integrand on the same samples misses by far more.
    linear = learned_thermodynamic_integration(
        lambda t, x: torch.zeros_like(t), INTERPOLANT, *energies, x_a, x_b, nodes, torch.Generator().manual_seed(0)
    )
    assert abs(linear.delta_f - truth) > 2 * tolerance


class ExactFields:
    """The oracle's velocity with the exact head's correction: what ``estimate`` sees from a trained head."""

    def __init__(self, pair: GaussianPair) -> None:
        self.interpolant, self.energy_correction = INTERPOLANT, ExactCorrection(pair)

    def velocity(self, t, x, cond=None):
        raise AssertionError("ti on the learned energy interpolant transports nothing")


def test_estimate_ti_uses_the_energy_interpolant_when_the_fields_carry_one():
    pair = GaussianPair(2, seed=2)
    x_a, x_b = pair.samples(3000, seed=3)
    generator = torch.Generator().manual_seed(4)
    learned = estimate(ExactFields(pair), pair.energy_a, pair.energy_b, x_a, x_b, method="ti", nodes=12,
                       generator=generator)  # fmt: skip
    assert abs(learned.delta_f - pair.delta_f()) <= 3 * learned.stderr + quadrature_error(pair, 12)
    assert learned.energy_evaluations == 2 * 12 * 3000  # U_a and U_b of each interpolant sample, no chains


def test_backbone_score_is_minus_the_gradient_of_an_energy_pinned_to_both_ends():
    torch.manual_seed(0)
    backbone = EnergyInterpolantBackbone((2,), system="mixtures", hidden_size=32, num_layers=2).double()
    pair = build_system("mixtures")
    x = pair.sample_a(16, torch.Generator().manual_seed(1))
    for end, energy in ((0.0, pair.energy_a), (1.0, pair.energy_b)):
        t = torch.full((16,), end, dtype=torch.float64)
        torch.testing.assert_close(backbone.energy(t, x), energy(x), atol=1e-12, rtol=0)
    t = torch.rand(16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    output = backbone(x, t)
    assert output.shape == (16, 4)
    # Central differences of U_t: error O(h^2 U''') ~ 1e-10 at h = 1e-5 in float64; 1e-6 leaves room for rounding.
    step = 1e-5
    for axis in range(2):
        shift = torch.zeros(2, dtype=torch.float64)
        shift[axis] = step
        difference = (backbone.energy(t, x + shift) - backbone.energy(t, x - shift)) / (2 * step)
        torch.testing.assert_close(output[:, 2 + axis], -difference, atol=1e-6, rtol=0)


def test_velocity_score_prediction_matches_velocity_denoiser_with_eta_minus_gamma_s():
    """b = v - gamma' gamma s and the loss equal velocity+denoiser's with eta_z = -gamma s (docs/math.md section 2)."""
    generator = torch.Generator().manual_seed(5)
    x0, x1, z = (torch.randn(8, 3, generator=generator, dtype=torch.float64) for _ in range(3))
    t = torch.rand(8, generator=generator, dtype=torch.float64)
    drift, score = torch.randn(8, 3, generator=generator, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    gamma = INTERPOLANT.coefficients(t).gamma[:, None]
    mine, theirs = get_prediction("velocity+score"), get_prediction("velocity+denoiser")
    ours, reference = torch.cat([drift, score], 1), torch.cat([drift, -gamma * score], 1)
    x = INTERPOLANT.sample(x0, x1, t, z).x_t
    torch.testing.assert_close(mine.velocity(INTERPOLANT, t, x, ours), theirs.velocity(INTERPOLANT, t, x, reference))
    torch.testing.assert_close(mine.score(INTERPOLANT, t, x, ours), score)
    sample = INTERPOLANT.sample(x0, x1, t, z)
    torch.testing.assert_close(mine.loss(ours, sample), theirs.loss(reference, sample))
    fields = NetworkFields(lambda x, t, cond=None: ours, INTERPOLANT, "velocity+score")
    assert fields.has_score


def test_module_refuses_the_energy_head_without_latent_noise():
    backbone = EnergyInterpolantBackbone((2,), system="mixtures", hidden_size=8, num_layers=1)
    with pytest.raises(ValueError, match="prediction 'velocity\\+score' trains its score on the Gaussian part"):
        InterpolantModule(backbone, Interpolant("linear", "zero", gaussian_base=False), prediction="velocity+score")


def test_training_refuses_a_head_built_for_another_system_than_the_data():
    """The energies pinning U_0, U_1 are the backbone's: they must be the data's system, checked at setup."""
    data = FreeEnergyDataModule(system="gaussians", dims=2, num_samples=64, val_samples=16, batch_size=16)
    backbone = EnergyInterpolantBackbone((2,), system="mixtures", hidden_size=8, num_layers=1)
    model = InterpolantModule(backbone, INTERPOLANT, prediction="velocity+score")
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    with pytest.raises(ValueError, match="the data gives system = gaussians but the backbone was built with system"):
        trainer.fit(model, datamodule=data)
