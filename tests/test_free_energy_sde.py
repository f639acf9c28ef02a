"""Escorted Jarzynski and controlled Crooks along the SDE, with the exact fields of two Gaussians.

The SDE dX = [b + eps s] dt + sqrt(2 eps) dW with the oracle's exact velocity and score keeps the marginals of
the interpolant from rho_a to rho_b; its Euler-Maruyama path is weighed by the discrete Girsanov term
(si_lightning/free_energy/girsanov.py). Delta F is closed form (tests/test_free_energy_oracle.py's pair).

Tolerances: E[e^{-W}] = Z_b / Z_a holds exactly for the discrete kernels at any step count (the return kernels
are normalised densities), so the estimators carry no time-discretisation bias; the step count only changes
the works' spread. The test measures that instead of assuming it: at STEPS and 2 STEPS each estimate must be
within 3 of its standard errors of the truth, and the two step counts within 3 combined standard errors of
each other (a discretisation bias of the estimator would show as a difference growing with h). Jensen's bounds
are exact for the same reason: -E[W_R] <= Delta F <= E[W_F] with no solver tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.free_energy import estimate, sde_works
from si_lightning.free_energy.energies import CountedEnergy
from si_lightning.sampling.diffusion import DIFFUSIONS
from tests.test_free_energy_oracle import GaussianPair

STEPS = 80  # Euler-Maruyama steps: 81 velocity-and-score evaluations per path
SCALE = 0.5  # constant eps


def crooks(pair: GaussianPair, x_a: torch.Tensor, x_b: torch.Tensor, steps: int, seed: int):
    return estimate(
        pair.oracle(), pair.energy_a, pair.energy_b, x_a, x_b, method="controlled-crooks", steps=steps,
        transport="sde", diffusion="constant", diffusion_scale=SCALE, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


CASES = [pytest.param(2, 2000, id="d2"), pytest.param(50, 256, id="d50")]


@pytest.mark.parametrize(("dims", "count"), CASES)
def test_sde_estimators_recover_delta_f_at_two_step_counts(dims, count):
    pair = GaussianPair(dims, seed=dims)
    truth = pair.delta_f()
    x_a, x_b = pair.samples(count, seed=10 + dims)
    results = [crooks(pair, x_a, x_b, steps, seed=20 + steps) for steps in (STEPS, 2 * STEPS)]
    for steps, result in zip((STEPS, 2 * STEPS), results, strict=True):
        assert result.nfe == steps + 1
        for name, value in (("controlled-crooks", result), ("forward", result.forward), ("backward", result.backward)):
            assert abs(value.delta_f - truth) <= 3 * value.stderr, (name, value, truth)
        assert result.lower <= truth <= result.upper  # Jensen, exact for the discrete kernels
        assert result.upper - result.lower > 0.01  # the SDE's works do spread: the bounds are not trivially tight
    coarse, fine = results
    assert abs(coarse.delta_f - fine.delta_f) <= 3 * math.hypot(coarse.stderr, fine.stderr)
    # The works spread less with smaller steps (the Girsanov term's noise is O(h) per unit time).
    assert fine.forward_works.var() < coarse.forward_works.var()

    # Equal energy evaluations: FEP on the same x_a (2 n) against the forward estimate (2 n);
    # BAR on (x_a, x_b) (4 n) against controlled Crooks (4 n).
    fep = estimate(None, pair.energy_a, pair.energy_b, x_a, method="fep")
    bar = estimate(None, pair.energy_a, pair.energy_b, x_a, x_b, method="bar")
    assert fine.energy_evaluations == bar.energy_evaluations == 4 * count
    ratio = 10 if dims == 50 else 4  # d = 2: FEP is already good (stderr 0.019); measured 4.5x there
    assert ratio * fine.forward.stderr <= fep.stderr, (fine.forward, fep)
    assert ratio * fine.stderr <= bar.stderr, (fine, bar)


def test_sde_works_are_unbiased_with_a_handful_of_steps():
    """Four steps of a crude transport (eps = 2): works spread widely, yet mean e^{-W} = Z_b / Z_a.

    1-D Gaussians; the tolerance is 4 delta-method standard errors of the exponential average over 20,000 paths.
    """
    pair = GaussianPair(1, seed=3)
    x_a, _ = pair.samples(20000, seed=4)
    result = sde_works(
        pair.oracle(0.3, 1.5), CountedEnergy(pair.energy_a, "a"), CountedEnergy(pair.energy_b, "b"), x_a, False,
        4, DIFFUSIONS["constant"](2.0), torch.Generator().manual_seed(5),
    )  # fmt: skip
    weights = torch.exp(-(result.works - pair.delta_f()))
    assert float(result.works.std()) > 0.3  # far from a perfect transport
    assert abs(float(weights.mean()) - 1) <= 4 * float(weights.std()) / math.sqrt(weights.numel())
    assert result.nfe == 5


def test_sde_transport_refuses_fields_without_a_score_and_a_zero_diffusion():
    pair = GaussianPair(2, seed=1)
    x_a, x_b = pair.samples(8, seed=2)

    class VelocityOnly:
        def velocity(self, t, x, cond=None):
            return pair.oracle().velocity(t, x)

    with pytest.raises(ValueError, match="the SDE transport needs a score"):
        estimate(VelocityOnly(), pair.energy_a, pair.energy_b, x_a, x_b, transport="sde", steps=4)
    zero = DIFFUSIONS["constant"](0.0)  # the ODE's limit: no kernel densities
    with pytest.raises(ValueError, match="eps > 0 on the whole grid"):
        estimate(pair.oracle(), pair.energy_a, pair.energy_b, x_a, x_b, transport="sde", diffusion=zero, steps=4)
    with pytest.raises(ValueError, match="unknown transport 'langevin'; expected one of: ode, sde"):
        estimate(pair.oracle(), pair.energy_a, pair.energy_b, x_a, x_b, transport="langevin")
