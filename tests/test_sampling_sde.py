"""The SDE sampler against the oracle: distribution, backward SDE, eps families, last steps, seeds, NFE, errors."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.interpolants import Interpolant
from si_lightning.sampling import (
    DIFFUSIONS,
    LAST_STEPS,
    Fields,
    GuidedFields,
    NetworkFields,
    OracleFields,
    SDESampler,
    base_noise,
    generators_from_seeds,
)
from si_lightning.sampling.seeds import NoiseSource
from tests.conftest import mixture_2d
from tests.test_sampling_mmd import SAMPLES, base_threshold, gaussian_mmd, mixture, mixture_threshold


# ------------------------------------------------------------------------------------ distribution
@pytest.mark.parametrize("diffusion", ["constant", "sbdm"])
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_euler_maruyama_reproduces_the_mixture(diffusion, scale):
    """500 steps; the Tweedie last step from t = 0.989 (a mean step x + h b_F overshoots for large eps)."""
    oracle = mixture()
    generator = torch.Generator().manual_seed(21)
    sampler = SDESampler(500, diffusion=diffusion, scale=scale, last_step="tweedie", last_step_size=0.01)
    samples = sampler.sample(oracle, oracle.sample_base(SAMPLES, generator), generator=generator).x
    assert gaussian_mmd(samples, oracle.sample_data(SAMPLES, generator)) < mixture_threshold()


def test_stochastic_heun_with_the_mean_last_step_reproduces_the_mixture():
    oracle = mixture()
    generator = torch.Generator().manual_seed(22)
    sampler = SDESampler(200, method="heun", diffusion="sbdm", scale=1.0, last_step="mean", last_step_size=0.04)
    samples = sampler.sample(oracle, oracle.sample_base(SAMPLES, generator), generator=generator).x
    assert gaussian_mmd(samples, oracle.sample_data(SAMPLES, generator)) < mixture_threshold()


def test_mmd_rejects_samples_left_noisy_by_no_last_step():
    """Stopping at t = 0.959 without a last step leaves gamma z with gamma = 0.2: the test must see it."""
    oracle = mixture()
    generator = torch.Generator().manual_seed(21)
    sampler = SDESampler(200, diffusion="constant", scale=1.0, last_step="none", last_step_size=0.04)
    result = sampler.sample(oracle, oracle.sample_base(SAMPLES, generator), generator=generator)
    assert result.interval == (0.001, 0.999 - 0.04)
    assert gaussian_mmd(result.x, oracle.sample_data(SAMPLES, generator)) > mixture_threshold()


def test_backward_sde_encodes_the_data_into_the_base():
    oracle = mixture()
    generator = torch.Generator().manual_seed(23)
    sampler = SDESampler(250, diffusion="constant", scale=1.0)
    result = sampler.encode(oracle, oracle.sample_data(SAMPLES, generator), generator=generator)
    assert result.interval == (0.999, 0.001) and result.nfe == 250
    assert gaussian_mmd(result.x, oracle.sample_base(SAMPLES, generator)) < base_threshold()


# ------------------------------------------------------------------------------------ eps families
TIMES = torch.tensor([0.1, 0.25, 0.5, 0.8, 0.95], dtype=torch.float64)


@pytest.mark.parametrize(
    ("name", "case", "closed_form"),
    [
        ("constant", None, lambda t: torch.ones_like(t)),
        ("linear", None, lambda t: 1 - t),
        ("decreasing", None, lambda t: (1 + torch.cos(math.pi * t)) ** 2 / 4),
        ("increasing-decreasing", None, lambda t: torch.sin(math.pi * t) ** 2),
        # alpha = 1 - t, beta = t: (1-t)^2 / t + (1-t) = (1-t) / t
        ("sbdm", ("one-sided-linear", "zero", 1.0), lambda t: (1 - t) / t),
        # alpha = sqrt(1 - t^2), beta = t: (1 - t^2) / t + t = 1 / t
        ("sbdm", ("sbdm", "zero", 1.0), lambda t: 1 / t),
        # alpha_bar^2 = (1-t)^2 + t(1-t) = 1 - t, so eps = (1-t)/t + 1/2
        ("sbdm", ("linear", "brownian", 1.0), lambda t: (1 - t) / t + 0.5),
        ("sigma", ("one-sided-linear", "zero", 1.0), lambda t: 1 - t),
        ("sigma", ("linear", "brownian", 1.0), lambda t: (1 - t).sqrt()),
    ],
)
def test_diffusion_families_equal_their_closed_forms(name, case, closed_form):
    interpolant = Interpolant(*case) if case else None
    diffusion = DIFFUSIONS[name](scale=1.7)
    torch.testing.assert_close(diffusion(TIMES, interpolant), 1.7 * closed_form(TIMES), atol=1e-12, rtol=1e-12)


def test_every_diffusion_family_is_tested_and_non_negative():
    interpolant = Interpolant("linear", "brownian", 1.0)
    grid = torch.linspace(0.001, 0.999, 50, dtype=torch.float64)
    for name, family in DIFFUSIONS.items():
        assert bool((family(0.5).on_grid(grid, interpolant) >= 0).all()), name


def test_a_negative_diffusion_is_refused_before_integrating():
    """For the mirror interpolant sbdm gives eps = -gamma gamma' < 0 for t < 1/2."""
    oracle = mixture_2d(Interpolant("mirror", "brownian", 1.0))
    with pytest.raises(ValueError, match=r"diffusion 'sbdm' \(scale 1.0\) gives eps = -0.49.* at t = 0.001"):
        SDESampler(10, diffusion="sbdm").sample(oracle, torch.zeros(2, 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------- last steps
def test_last_steps_are_the_formulas():
    oracle = mixture()
    fields = OracleFields(oracle)
    x = oracle.sample_data(32, torch.Generator().manual_seed(4)) + 0.2
    t, step, eps = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64), torch.tensor(0.7)
    times = t.expand(32)
    b, s = oracle.velocity(times, x), oracle.score(times, x)
    expected = {"mean": x + step * (b + eps * s), "tweedie": oracle.data(times, x), "euler": x + step * b, "none": x}
    assert set(expected) == set(LAST_STEPS)
    for name, value in expected.items():
        torch.testing.assert_close(LAST_STEPS[name]().apply(fields, t, step, x, eps, None), value)


# ----------------------------------------------------------------------------------------- seeds
def test_per_sample_seeds_give_the_same_samples_at_any_batch_size():
    oracle = mixture()
    seeds = list(range(64))
    x0 = base_noise(seeds, (2,), dtype=torch.float64)
    sampler = SDESampler(20, diffusion="sbdm", scale=1.0)
    whole = sampler.sample(oracle, x0, seeds=seeds).x
    for size in (1, 7):
        chunks = [
            sampler.sample(oracle, x0[index : index + size], seeds=seeds[index : index + size]).x
            for index in range(0, 64, size)
        ]
        assert torch.equal(torch.cat(chunks), whole)
    # The first rows of base_noise do not depend on how many seeds were asked for.
    assert torch.equal(base_noise(seeds[:7], (2,), dtype=torch.float64), x0[:7])


def test_a_list_of_generators_acts_per_sample_and_streams_are_independent():
    oracle = mixture()
    sampler = SDESampler(10, diffusion="constant")
    x0 = base_noise(range(4), (2,), dtype=torch.float64)
    from_seeds = sampler.sample(oracle, x0, seeds=range(4)).x
    from_list = sampler.sample(oracle, x0, generator=generators_from_seeds(range(4), "sde")).x
    assert torch.equal(from_seeds, from_list)
    # The SDE noise of seed i is not its base draw: the first increment differs from x0.
    first_increment = NoiseSource(generators_from_seeds(range(4), "sde")).normal((4, 2), "cpu", torch.float64)
    assert (first_increment - x0).abs().min() > 1e-6


def test_seed_errors_are_named():
    oracle = mixture()
    x0 = torch.zeros(3, 2, dtype=torch.float64)
    sampler = SDESampler(2, diffusion="constant")
    with pytest.raises(ValueError, match="got 2 per-sample seeds or generators for a batch of 3"):
        sampler.sample(oracle, x0, seeds=[0, 1])
    with pytest.raises(ValueError, match="either seeds or generator, not both"):
        sampler.sample(oracle, x0, seeds=[0, 1, 2], generator=torch.Generator())
    with pytest.raises(ValueError, match="seeds must be ints >= 0, got -1"):
        sampler.sample(oracle, x0, seeds=[0, -1, 2])


# ------------------------------------------------------------------------------------------- NFE
class CountingNetwork:
    """A velocity "network" from the oracle, counting calls and samples (ignores cond)."""

    def __init__(self, oracle) -> None:
        self.oracle, self.calls, self.samples = oracle, 0, 0

    def __call__(self, x, t, cond=None):
        self.calls += 1
        self.samples += x.shape[0]
        return self.oracle.velocity(t, x)


@pytest.mark.parametrize(
    ("method", "last_step", "expected"),
    [
        ("euler-maruyama", "mean", 13),
        ("euler-maruyama", "tweedie", 13),
        ("euler-maruyama", "none", 12),
        ("heun", "euler", 25),
    ],
)
def test_reported_nfe_equals_network_calls(method, last_step, expected):
    oracle = mixture()
    network = CountingNetwork(oracle)
    fields = NetworkFields(network, oracle.interpolant, "velocity")
    sampler = SDESampler(12, method=method, diffusion="sigma", last_step=last_step)
    x0 = oracle.sample_base(16, torch.Generator().manual_seed(0))
    assert sampler.sample(fields, x0).nfe == network.calls == expected
    network.calls = 0
    assert sampler.encode(fields, x0).nfe == network.calls == expected - (last_step != "none")


def test_guided_sde_counts_both_branches():
    from si_lightning.condition import Condition

    oracle = mixture()
    network = CountingNetwork(oracle)
    fields = GuidedFields(NetworkFields(network, oracle.interpolant, "velocity"), guidance_scale=1.5, null_label=3)
    cond = Condition(labels=torch.zeros(16, dtype=torch.long))
    result = SDESampler(12, diffusion="constant").sample(fields, oracle.sample_base(16), cond=cond)
    assert network.calls == 13 and network.samples == 13 * 32 and result.nfe == 26


# ------------------------------------------------------------------------------------ bad input
class ExplodingFields(Fields):
    """NaN velocity for t > 0.5."""

    def velocity(self, t, x, cond=None):
        return torch.where((t > 0.5)[:, None], torch.full_like(x, float("nan")), -x)

    def score(self, t, x, cond=None):
        return -x


def test_nan_during_the_sde_raises_naming_the_step():
    sampler = SDESampler(100, "euler-maruyama", diffusion="constant", last_step="none", last_step_size=0.0)
    with pytest.raises(FloatingPointError, match=r"NaN or inf appeared at step 51 of 100 \(t = 0.51 -> 0.52\)"):
        sampler.sample(ExplodingFields(), torch.ones(4, 2))


def test_the_exponential_method_needs_the_interpolant():
    """ExplodingFields carry no interpolant: the default method cannot read alpha_bar, and says which method can."""
    sampler = SDESampler(100, diffusion="constant", last_step="none", last_step_size=0.0)
    with pytest.raises(ValueError, match=r"on ExplodingFields\(\): SDE method 'exponential-euler' needs fields that "):
        sampler.sample(ExplodingFields(), torch.ones(4, 2))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"steps": 0}, "steps must be an int >= 1, got 0"),
        ({"steps": -2}, "steps must be an int >= 1, got -2"),
        ({"scale": -0.5}, "diffusion scale must be a finite number >= 0, got -0.5"),
        ({"diffusion": "inccreasing-decreasing"}, "unknown diffusion 'inccreasing-decreasing'; expected one of"),
        ({"last_step": "tweedy"}, "unknown last step 'tweedy'"),
        ({"last_step_size": 0.0}, "last_step_size must be > 0 with last_step='mean', got 0.0"),
        ({"last_step_size": -0.1}, "last_step_size must be a finite number >= 0, got -0.1"),
        ({"method": "milstein"}, "unknown SDE method 'milstein'"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        SDESampler(**arguments)


def test_interval_outside_the_score_interval_is_named():
    """The SDE needs s, which is singular at t = 0 and 1 even where b is finite (linear, quadratic gamma)."""
    oracle = mixture_2d(Interpolant("linear", "quadratic", 1.0))
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"t_end = 1.0 .* outside the valid interval \[0.001, 0.999\] where the score"):
        SDESampler(4, interval=(0.5, 1.0)).sample(oracle, x)
    with pytest.raises(ValueError, match=r"last_step_size = 0.6 leaves no room for the SDE on \[0.5, 0.99\]"):
        SDESampler(4, interval=(0.5, 0.99), last_step_size=0.6).sample(oracle, x)
