"""CounterNoise: per-sample streams drawn in one batched pass, bitwise independent of the batch."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.sampling import SDESampler, base_noise, generators_from_seeds
from si_lightning.sampling.seeds import CounterNoise, NoiseSource
from tests.test_sampling_mmd import SAMPLES, gaussian_mmd, mixture, mixture_threshold


def counter_noise(seeds) -> CounterNoise:
    return NoiseSource(generators_from_seeds(seeds, "sde")).counter_based()


@pytest.mark.parametrize("shape", [(5,), (3, 3)])  # an odd element count uses half of the last word
def test_rows_are_bitwise_the_same_at_any_batch_size(shape):
    seeds = list(range(40))
    whole = counter_noise(seeds)
    draws = [whole.normal((40, *shape), "cpu", torch.float64) for _ in range(3)]
    signs = whole.rademacher((40, *shape), "cpu", torch.float32)
    for size in (1, 7):
        for first in range(0, 40, size):
            part = counter_noise(seeds[first : first + size])
            for draw in draws:
                assert torch.equal(
                    part.normal((len(seeds[first : first + size]), *shape), "cpu", torch.float64),
                    draw[first : first + size],
                )
            assert torch.equal(
                part.rademacher((len(seeds[first : first + size]), *shape), "cpu", torch.float32),
                signs[first : first + size],
            )


def test_the_draws_are_standard_normal_and_uncorrelated():
    """Moments of 2 x 10^5 values within 5 standard errors; neighbours in a row, across rows and across
    draws uncorrelated within 5 / sqrt(n)."""
    noise = counter_noise(range(400))
    first, second = noise.normal((400, 250), "cpu", torch.float64), noise.normal((400, 250), "cpu", torch.float64)
    values = torch.cat((first, second)).flatten()
    count = values.numel()
    assert abs(float(values.mean())) < 5 / math.sqrt(count)
    assert abs(float(values.var()) - 1) < 5 * math.sqrt(2 / count)  # Var of s^2 is 2 / n for a normal
    assert abs(float(values.pow(4).mean()) - 3) < 5 * math.sqrt(96 / count)  # Var of x^4 is 105 - 9
    # The tails: P(|x| > 2) = 0.0455 with a binomial standard error.
    share = float((values.abs() > 2).double().mean())
    assert abs(share - 0.0455) < 5 * math.sqrt(0.0455 * 0.9545 / count)
    for a, b in ((first[:, :-1], first[:, 1:]), (first[:-1], first[1:]), (first, second)):
        assert abs(float((a * b).mean())) < 5 / math.sqrt(a.numel())


def test_rademacher_signs_are_fair():
    signs = counter_noise(range(100)).rademacher((100, 1000), "cpu", torch.float32)
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(signs.mean())) < 5 / math.sqrt(signs.numel())


def test_a_single_generator_is_left_as_it_is():
    source = NoiseSource(torch.Generator().manual_seed(0))
    assert source.counter_based() is source


def test_a_batch_that_does_not_match_the_keys_is_named():
    with pytest.raises(ValueError, match="noise for a batch of 3 from 2 per-sample keys"):
        counter_noise([0, 1]).normal((3, 2), "cpu", torch.float32)


def test_sde_with_per_sample_seeds_reproduces_the_mixture():
    """The SDE driven by the counter-based noise still samples rho_1 (MMD below the data-vs-data threshold)."""
    oracle = mixture()
    seeds = list(range(SAMPLES))
    x0 = base_noise(seeds, (2,), dtype=torch.float64)
    sampler = SDESampler(300, diffusion="constant", scale=1.0, last_step="tweedie", last_step_size=0.01)
    samples = sampler.sample(oracle, x0, seeds=seeds).x
    assert gaussian_mmd(samples, oracle.sample_data(SAMPLES, torch.Generator().manual_seed(5))) < mixture_threshold()
