"""The residual-modulated bridge against its closed-form oracle (docs/math.md section 11).

x1 | x0 ~ N(mu, diag(v)) per pixel, v = 0 and mu = x0 on untouched pixels; x_t = alpha x0 + beta x1 + gamma m z.
"""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.analytic_bridge import ResidualBridgeGaussian
from si_lightning.condition import Condition
from si_lightning.interpolants import Bridge, get_prediction, interpolant_loss, stack_fields
from si_lightning.sampling import Fields, ODESampler, SDESampler
from si_lightning.sampling.masked import KeptPixelFields

DIM, BATCH = 6, 4000
UNTOUCHED = torch.tensor([True, False, True, False, False, True])


class OracleFields(Fields):
    """The oracle as sampler Fields (velocity, score, data), carrying the bridge for the SDE's plan."""

    has_data = True

    def __init__(self, oracle: ResidualBridgeGaussian) -> None:
        self.oracle, self.interpolant = oracle, oracle.interpolant

    def velocity(self, t, x, cond=None):
        return self.oracle.velocity(t, x)

    def score(self, t, x, cond=None):
        return self.oracle.score(t, x)

    def data(self, t, x, cond=None):
        return self.oracle.data(t, x)


def make_oracle(
    name: str, modulation: torch.Tensor | None, batch: int = BATCH, seed: int = 0
) -> ResidualBridgeGaussian:
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, DIM, generator=generator, dtype=torch.float64) * 2 - 1
    variance = torch.where(UNTOUCHED, 0.0, torch.tensor([0.3, 0.5, 0.2, 0.8, 0.4, 0.6], dtype=torch.float64))
    mean = torch.where(UNTOUCHED, x0, torch.linspace(-0.6, 0.6, DIM, dtype=torch.float64))
    return ResidualBridgeGaussian(Bridge(name), x0, mean, variance, modulation)


def support_modulation() -> torch.Tensor:
    """m = 1 - keep: no noise on untouched pixels, full noise on the others."""
    return (~UNTOUCHED).double()


def paired_excess(name: str, modulation: torch.Tensor | None, field: str, oracle_modulation="same", seed: int = 0):
    """Per-sample loss of (oracle + delta) minus loss of the oracle, and |delta|^2, on the same draws.

    loss(b + delta) - loss(b) = |delta|^2 + 2 delta . (b - target): the cross term has mean 0 exactly when
    b is the conditional expectation of the target given x_t, i.e. when b minimises the loss.
    """
    oracle = make_oracle(name, modulation, seed=seed)
    fields_oracle = oracle if oracle_modulation == "same" else make_oracle(name, oracle_modulation, seed=seed)
    generator = torch.Generator().manual_seed(100 + seed)
    x1 = oracle.sample_data(generator)
    t = 0.05 + 0.9 * torch.rand(BATCH, generator=generator, dtype=torch.float64)
    z = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
    sample = oracle.interpolant.sample(oracle.x0, x1, t, z, modulation=modulation)
    exact = {
        "velocity": fields_oracle.velocity,
        "denoiser": fields_oracle.denoiser,
        "data": fields_oracle.data,
    }[field](t, sample.x_t)
    target = {"velocity": sample.velocity, "denoiser": sample.noise, "data": x1}[field]
    delta = 0.3 * torch.sin(3 * sample.x_t + t[:, None])
    base = (exact - target).pow(2).sum(1)
    excess = (exact + delta - target).pow(2).sum(1) - base
    return excess, delta.pow(2).sum(1)


@pytest.mark.parametrize("name", ["rdbm", "goub", "bbdm"])
@pytest.mark.parametrize("field", ["velocity", "denoiser", "data"])
def test_the_oracle_minimises_the_loss(name, field):
    modulation = support_modulation() if name == "rdbm" else None
    excess, square = paired_excess(name, modulation, field)
    cross = excess - square  # 2 delta . (b - target), mean 0 at the minimiser
    error = float(cross.std()) / math.sqrt(BATCH)  # paired standard error of the mean difference
    assert abs(float(cross.mean())) < 4 * error, (float(cross.mean()), error)
    assert float(excess.mean()) > 4 * float(excess.std()) / math.sqrt(BATCH)  # the perturbation costs loss


def test_a_wrongly_modulated_oracle_is_not_the_minimiser():
    """The negative control of the test above: an oracle built for m = 1/2 on the degraded pixels fails it.

    (An unmodulated oracle would pass: on the draws of the modulated bridge x_t = c_t on untouched pixels,
    where its velocity is 0 as well, and it agrees with the modulated one on the others.)
    """
    excess, square = paired_excess(
        "rdbm", support_modulation(), "velocity", oracle_modulation=0.5 * support_modulation()
    )
    cross = excess - square
    error = float(cross.std()) / math.sqrt(BATCH)
    assert abs(float(cross.mean())) > 4 * error


def test_the_training_loss_of_the_library_is_the_oracles_at_zero_excess():
    """interpolant_loss with the modulation reads the same targets: the oracle's velocity loss equals the
    mean square of (b - target) computed by hand, to rounding."""
    oracle = make_oracle("rdbm", support_modulation(), batch=64)
    generator = torch.Generator().manual_seed(3)
    x1 = oracle.sample_data(generator)
    t = 0.1 + 0.8 * torch.rand(64, generator=generator, dtype=torch.float64)
    z = torch.randn(64, DIM, generator=generator, dtype=torch.float64)
    loss = interpolant_loss(
        oracle.interpolant,
        "velocity",
        lambda x, s: oracle.velocity(s, x),
        oracle.x0,
        x1,
        t,
        z,
        modulation=support_modulation(),
    )
    c = oracle.interpolant.coefficients(t)
    target = (
        c.alpha_dot[:, None] * oracle.x0 + c.beta_dot[:, None] * x1 + c.gamma_dot[:, None] * support_modulation() * z
    )
    x_t = c.alpha[:, None] * oracle.x0 + c.beta[:, None] * x1 + c.gamma[:, None] * support_modulation() * z
    expected = (oracle.velocity(t, x_t) - target).pow(2).mean(1)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)


def test_untouched_pixels_never_get_noise_in_the_modulated_bridge_only():
    oracle = make_oracle("rdbm", support_modulation(), batch=8)
    x1 = oracle.sample_data(torch.Generator().manual_seed(0))
    t = torch.full((8,), 0.5, dtype=torch.float64)
    z = torch.randn(8, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    modulated = oracle.interpolant.sample(oracle.x0, x1, t, z, modulation=support_modulation()).x_t
    assert torch.equal(modulated[:, UNTOUCHED], oracle.x0[:, UNTOUCHED])
    plain = Bridge("goub").sample(oracle.x0, x1, t, z).x_t
    assert bool((plain[:, UNTOUCHED] != oracle.x0[:, UNTOUCHED]).all())


@pytest.mark.parametrize("name", ["rdbm", "bbdm"])
def test_the_ode_carries_the_exact_marginals_and_keeps_untouched_pixels(name):
    """From x_{t0} drawn from its exact law, dopri5 ends in the exact law at t1 (per-pixel mean and variance
    within 5 standard errors: the solver's 1e-9 tolerance is far below them); untouched pixels bit for bit."""
    modulation = support_modulation() if name == "rdbm" else torch.ones(DIM, dtype=torch.float64)
    oracle = make_oracle(name, modulation)
    t0, t1 = 0.05, 0.95
    centre, variance = oracle.marginal(t0)
    start = centre + variance.sqrt() * torch.randn(
        BATCH, DIM, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    # An untouched pixel starts at its input (alpha x0 + beta x0 may differ from x0 in the last bit).
    start = torch.where(UNTOUCHED & (variance == 0), oracle.x0, start)
    sampler = ODESampler(method="dopri5", atol=1e-9, rtol=1e-9, interval=(t0, t1))
    end = sampler.sample(OracleFields(oracle), start).x
    centre_end, variance_end = oracle.marginal(t1)
    deviation = end - centre_end
    touched = ~UNTOUCHED
    mean_error = 5 * (variance_end[touched] / BATCH).sqrt()
    assert bool((deviation[:, touched].mean(0).abs() < mean_error).all())
    variance_error = 5 * variance_end[touched] * math.sqrt(2 / BATCH)
    assert bool(((deviation[:, touched].var(0) - variance_end[touched]).abs() < variance_error).all())
    if name == "rdbm":
        assert torch.equal(end[:, UNTOUCHED], oracle.x0[:, UNTOUCHED])


@pytest.mark.parametrize("name", ["rdbm", "bbdm"])
def test_draws_from_the_spread_start_reach_the_clean_law_up_to_the_left_out_mean(name):
    """The ODE from ``spread_start`` (x0 + gamma(t0) m z at the valid interval's start t0) ends in the law
    the exact flow gives that start; with these Gaussian data the flow map is affine per pixel,
    x -> c_1 + k (x - c_0), k = sqrt(V_1 / V_0), so the end's mean is c_1 + k (x0 - c_0) and its variance
    k^2 gamma(t0)^2 m^2. The offset k (x0 - c_0) = k beta(t0) (x0 - mu) is the left-out O(t0) term carried
    by k ~ 1 / sqrt(t0): O(sqrt(t0)), here under a tenth of the posterior's standard deviation; checked to
    be that small. Tolerances: 5 standard errors of the mean and of the variance (dopri5 at 1e-9 adds far
    less); untouched pixels of rdbm bit for bit."""
    modulation = support_modulation() if name == "rdbm" else torch.ones(DIM, dtype=torch.float64)
    oracle = make_oracle(name, modulation)
    interpolant = oracle.interpolant
    t0, t1 = interpolant.valid_interval()
    z = torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    keep = UNTOUCHED.double().expand(BATCH, DIM) if name == "rdbm" else None
    start = interpolant.spread_start(oracle.x0, t0, z, keep)
    if name == "rdbm":
        assert torch.equal(start[:, UNTOUCHED], oracle.x0[:, UNTOUCHED])
    end = ODESampler(method="dopri5", atol=1e-9, rtol=1e-9, interval=(t0, t1)).sample(OracleFields(oracle), start).x
    touched = ~UNTOUCHED
    centre_start, variance_start = oracle.marginal(t0)
    centre_end, variance_end = oracle.marginal(t1)
    gain = (variance_end / variance_start).sqrt()
    offset = gain * (oracle.x0 - centre_start)  # (batch, d): the left-out mean, carried to t1
    assert float((offset[:, touched].abs() / oracle.variance[touched].sqrt()).max()) < 0.1
    gamma_start = interpolant.coefficients(torch.tensor([t0], dtype=torch.float64)).gamma
    expected_variance = gain**2 * gamma_start**2 * modulation**2
    deviation = (end - centre_end - offset)[:, touched]
    assert bool((deviation.mean(0).abs() < 5 * (expected_variance[touched] / BATCH).sqrt()).all()), deviation.mean(0)
    tolerance = 5 * expected_variance[touched] * math.sqrt(2 / BATCH)
    assert bool(((deviation.var(0) - expected_variance[touched]).abs() < tolerance).all())
    # The end's spread is the posterior's to within the left-out variance beta(t0)^2 v (relative 1e-2 here).
    assert torch.allclose(expected_variance[touched], oracle.variance[touched], rtol=1e-2)
    if name == "rdbm":
        assert torch.equal(end[:, UNTOUCHED], oracle.x0[:, UNTOUCHED])


@pytest.mark.parametrize("method", ["exponential-euler", "euler-maruyama"])
def test_the_sde_samples_the_clean_law_and_keeps_untouched_pixels_exactly(method):
    """The SDE from the degraded x0 itself (t = 1e-3, where V_t is tiny) ends in N(mu, v) on degraded pixels.

    Tolerance: 5 standard errors on the mean; on the variance 5 standard errors (v sqrt(2 / n), 11 % of v)
    plus a 3 % discretisation bias (docs/math.md section 4 measures 1 to 2 % narrowing at 250 steps for the
    exponential method, and the last step starts at t = 0.99); untouched pixels bit for bit,
    through the sampler's noise mask (``frozen_pixels``) and the oracle's b = s = 0 there.
    """
    oracle = make_oracle("rdbm", support_modulation())
    fields = KeptPixelFields(OracleFields(oracle))
    keep = UNTOUCHED.double().expand(BATCH, DIM)
    sampler = SDESampler(
        steps=250, method=method, diffusion="constant", scale=0.2, last_step="mean", last_step_size=0.01
    )
    end = sampler.sample(fields, oracle.x0, Condition(keep=keep), generator=torch.Generator().manual_seed(7)).x
    assert torch.equal(end[:, UNTOUCHED], oracle.x0[:, UNTOUCHED])
    touched = ~UNTOUCHED
    deviation = end[:, touched] - oracle.mean[:, touched]
    target = oracle.variance[touched]
    assert bool((deviation.mean(0).abs() < 5 * (target / BATCH).sqrt()).all()), deviation.mean(0)
    tolerance = 5 * target * math.sqrt(2 / BATCH) + 0.03 * target
    assert bool(((deviation.var(0) - target).abs() < tolerance).all()), (deviation.var(0), target)


def test_the_oracle_velocity_is_exactly_zero_on_untouched_pixels():
    oracle = make_oracle("rdbm", support_modulation(), batch=16)
    x = oracle.x0 + 0.1
    x[:, UNTOUCHED] = oracle.x0[:, UNTOUCHED]
    for t in (0.001, 0.3, 0.999):
        velocity = oracle.velocity(torch.full((16,), t, dtype=torch.float64), x)
        assert bool((velocity[:, UNTOUCHED] == 0).all())


def test_bad_settings():
    x0 = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="variance must be >= 0"):
        ResidualBridgeGaussian(Bridge("rdbm"), x0, x0, torch.tensor([-1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="mean must equal x0"):
        ResidualBridgeGaussian(Bridge("rdbm"), x0, x0 + 1, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown bridge"):
        Bridge("ddbm")


def test_the_library_conversions_give_the_oracles_velocity_and_score_from_drift_and_modulated_denoiser():
    """velocity+denoiser: b = v + gamma' E[m z | x] and s = -E[m z | x] / gamma (m in {0, 1}) to rounding, with
    v = alpha' x0 + beta' E[x1 | x] the oracle's drift; on untouched pixels both are 0."""
    oracle = make_oracle("rdbm", support_modulation(), batch=32)
    generator = torch.Generator().manual_seed(8)
    t = 0.05 + 0.9 * torch.rand(32, generator=generator, dtype=torch.float64)
    x1 = oracle.sample_data(generator)
    z = torch.randn(32, DIM, generator=generator, dtype=torch.float64)
    x = oracle.interpolant.sample(oracle.x0, x1, t, z, modulation=support_modulation()).x_t
    c = oracle.interpolant.coefficients(t)
    drift = c.alpha_dot[:, None] * oracle.x0 + c.beta_dot[:, None] * oracle.data(t, x)
    output = stack_fields(drift, oracle.denoiser(t, x))
    prediction = get_prediction("velocity+denoiser")
    torch.testing.assert_close(prediction.velocity(oracle.interpolant, t, x, output), oracle.velocity(t, x))
    score = prediction.score(oracle.interpolant, t, x, output)
    touched = ~UNTOUCHED
    torch.testing.assert_close(score[:, touched], oracle.score(t, x)[:, touched])
    assert bool((score[:, UNTOUCHED] == 0).all()) and bool((oracle.score(t, x)[:, UNTOUCHED] == 0).all())
