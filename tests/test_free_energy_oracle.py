"""Escorted Jarzynski and controlled Crooks with exact transports between two Gaussians (closed-form Delta F).

rho_a = N(m, s^2 I) (energy |x - m|^2 / (2 s^2) + c_a) and rho_b = N(mu, S) (energy
(x - mu)^T S^{-1} (x - mu) / 2 + c_b): Delta F = -(1/2) log|S| + d log s + c_b - c_a. The linear interpolant
with gamma = 0 between them has the linear velocity of the Gaussian-mixture oracle, whose flow maps rho_a
onto rho_b exactly: every work equals Delta F up to the ODE solver's error. An *imperfect* transport (the
oracle of a slightly different target) keeps the estimators exact but spreads the works, so the
standard error is a real Monte-Carlo error there.

Tolerances: |estimate - Delta F| <= 3 standard errors + the solver's error, where the solver's error is
bounded by twice the largest change of a work when the RK4 step count doubles (RK4's error at h is
16/15 of that change; 2 leaves room). The bounds must bracket Delta F up to the same solver error.
"""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.analytic import GaussianMixture
from si_lightning.free_energy import estimate, transport_works
from si_lightning.free_energy.energies import CountedEnergy
from si_lightning.interpolants import Interpolant
from si_lightning.sampling import ODESampler

STEPS = 8  # RK4 steps: 32 velocity evaluations per path


class GaussianPair:
    """rho_a = N(m, s^2 I), rho_b = N(mu, S) with S = 0.3 W W^T + 0.5 I, energies with constant offsets."""

    def __init__(self, dims: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.dims, self.base_std = dims, 1.2
        self.base_mean = 0.3 * torch.randn(dims, generator=generator, dtype=torch.float64)
        self.mean = 0.5 * torch.randn(dims, generator=generator, dtype=torch.float64)
        root = torch.randn(dims, dims, generator=generator, dtype=torch.float64) / math.sqrt(dims)
        self.covariance = 0.3 * root @ root.T + 0.5 * torch.eye(dims, dtype=torch.float64)
        self.precision = torch.linalg.inv(self.covariance)
        self.offset_a, self.offset_b = 1.0, -2.0

    def energy_a(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.base_mean) / self.base_std).pow(2).sum(1) + self.offset_a

    def energy_b(self, x: torch.Tensor) -> torch.Tensor:
        residual = x - self.mean
        return 0.5 * torch.einsum("ni,ij,nj->n", residual, self.precision, residual) + self.offset_b

    def delta_f(self) -> float:
        log_z_a = self.dims * math.log(self.base_std)  # the common (d/2) log(2 pi) cancels
        log_z_b = 0.5 * float(torch.logdet(self.covariance))
        return -(log_z_b - log_z_a) + self.offset_b - self.offset_a

    def oracle(self, mean_shift: float = 0.0, scale: float = 1.0) -> GaussianMixture:
        """Exact fields of the linear interpolant from rho_a to N(mu + shift, scale S) (rho_b when 0 and 1)."""
        interpolant = Interpolant("linear", "zero", gaussian_base=False)
        target_mean = (self.mean + mean_shift)[None]
        return GaussianMixture(
            torch.ones(1, dtype=torch.float64), target_mean, (scale * self.covariance)[None], interpolant,
            base_mean=self.base_mean, base_std=self.base_std,
        )  # fmt: skip

    def samples(self, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        oracle = self.oracle()
        return oracle.sample_base(count, torch.Generator().manual_seed(seed)), oracle.sample_data(
            count, torch.Generator().manual_seed(seed + 1)
        )


def solver_error(pair: GaussianPair, fields: GaussianMixture, x_a: torch.Tensor) -> float:
    """Twice the largest change of a forward work from STEPS to 2 STEPS RK4 steps (module docstring)."""
    works = [
        transport_works(
            fields, CountedEnergy(pair.energy_a, "a"), CountedEnergy(pair.energy_b, "b"), x_a, False,
            ODESampler(method="rk4", steps=steps),
        ).works
        for steps in (STEPS, 2 * STEPS)
    ]  # fmt: skip
    return 2 * float((works[0] - works[1]).abs().max())


CASES = [
    # (dims, samples, mean shift, covariance scale): exact transports, then imperfect ones.
    pytest.param(2, 2000, 0.0, 1.0, id="d2-exact"),
    pytest.param(50, 128, 0.0, 1.0, id="d50-exact"),
    pytest.param(2, 2000, 0.03, 1.03, id="d2-imperfect"),
    pytest.param(50, 128, 0.05, 1.05, id="d50-imperfect"),
]


@pytest.mark.parametrize(("dims", "count", "shift", "scale"), CASES)
def test_escorted_estimators_recover_delta_f_with_a_tenth_of_the_baselines_error(dims, count, shift, scale):
    pair = GaussianPair(dims, seed=dims)
    truth = pair.delta_f()
    x_a, x_b = pair.samples(count, seed=10 + dims)
    fields = pair.oracle(shift, scale)
    tolerance_solver = solver_error(pair, fields, x_a)

    crooks = estimate(fields, pair.energy_a, pair.energy_b, x_a, x_b, method="controlled-crooks", steps=STEPS)
    forward, backward = crooks.forward, crooks.backward
    for name, value in (
        ("controlled-crooks", crooks),
        ("jarzynski forward", forward),
        ("jarzynski backward", backward),
    ):
        error = abs(value.delta_f - truth)
        assert error <= 3 * value.stderr + tolerance_solver, (name, value, truth, tolerance_solver)
    assert crooks.lower - tolerance_solver <= truth <= crooks.upper + tolerance_solver
    if shift != 0.0:  # a real gap between the bounds (mean W_F - Delta F is the KL divergence of the paths)
        assert crooks.upper - crooks.lower > 10 * tolerance_solver

    # Equal energy evaluations: FEP on the same x_a (2 n) against the forward estimate (2 n);
    # BAR on (x_a, x_b) (4 n) against controlled Crooks (4 n).
    fep = estimate(None, pair.energy_a, pair.energy_b, x_a, method="fep")
    bar = estimate(None, pair.energy_a, pair.energy_b, x_a, x_b, method="bar")
    assert fep.energy_evaluations == 2 * count and crooks.energy_evaluations == bar.energy_evaluations == 4 * count
    assert 10 * forward.stderr <= fep.stderr, (forward, fep)
    assert 10 * crooks.stderr <= bar.stderr, (crooks, bar)


def test_escorted_jarzynski_method_matches_the_directions_of_controlled_crooks():
    """The one-directional method returns the forward estimate, the backward one and the same bounds."""
    pair = GaussianPair(2, seed=3)
    x_a, x_b = pair.samples(500, seed=4)
    fields = pair.oracle(0.3, 1.3)
    arguments = (fields, pair.energy_a, pair.energy_b, x_a, x_b)
    jarzynski = estimate(*arguments, method="escorted-jarzynski", steps=STEPS)
    crooks = estimate(*arguments, method="controlled-crooks", steps=STEPS)
    assert jarzynski.delta_f == pytest.approx(crooks.forward.delta_f, abs=1e-12)
    assert jarzynski.backward.delta_f == pytest.approx(crooks.backward.delta_f, abs=1e-12)
    assert (jarzynski.lower, jarzynski.upper) == pytest.approx((crooks.lower, crooks.upper), abs=1e-12)
    forward_only = estimate(fields, pair.energy_a, pair.energy_b, x_a, method="escorted-jarzynski", steps=STEPS)
    assert forward_only.lower is None and forward_only.backward is None
    assert forward_only.energy_evaluations == 2 * x_a.shape[0] and forward_only.nfe == 4 * STEPS


def test_log_jacobian_is_the_log_determinant_of_the_linear_flow_map():
    """For the exact Gaussian transport X_1 = mu + L_b L_a^{-1} (X_0 - m): log|det| = log|S|/2 - d log s."""
    pair = GaussianPair(3, seed=5)
    x_a, _ = pair.samples(16, seed=6)
    result = transport_works(
        pair.oracle(), CountedEnergy(pair.energy_a, "a"), CountedEnergy(pair.energy_b, "b"), x_a, False,
        ODESampler(method="rk4", steps=100),
    )  # fmt: skip
    expected = 0.5 * float(torch.logdet(pair.covariance)) - 3 * math.log(pair.base_std)
    # RK4's error falls like h^4: 1.4e-8 with 40 steps here, so about 6e-10 with 100; 1e-8 leaves room.
    torch.testing.assert_close(result.log_jacobian, torch.full_like(result.log_jacobian, expected), atol=1e-8, rtol=0)


def test_hutchinson_log_jacobian_is_unbiased_for_the_exact_one():
    """Averaged over 64 independent Rademacher probes per path, Hutchinson's log-Jacobian matches the exact one.

    Tolerance: 4 standard errors of the mean over the 64 probes (per path, then the largest over 8 paths).
    """
    pair = GaussianPair(5, seed=7)
    x_a, _ = pair.samples(8, seed=8)
    energies = CountedEnergy(pair.energy_a, "a"), CountedEnergy(pair.energy_b, "b")
    solver = ODESampler(method="rk4", steps=10)
    exact = transport_works(pair.oracle(0.2, 1.2), *energies, x_a, False, solver).log_jacobian
    repeated = x_a.repeat_interleave(64, dim=0)
    probes = transport_works(
        pair.oracle(0.2, 1.2), *energies, repeated, False, solver, divergence="hutchinson",
        generator=torch.Generator().manual_seed(9),
    ).log_jacobian.reshape(8, 64)  # fmt: skip
    standard_error = probes.std(1) / math.sqrt(64)
    assert bool((probes.std(1) > 0).all())  # the probes do vary
    assert bool(((probes.mean(1) - exact).abs() <= 4 * standard_error).all())
