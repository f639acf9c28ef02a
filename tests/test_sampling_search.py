"""Reward search on the oracle: SMC targets the reward-tilted law, every search is reproducible and counts NFE."""

from __future__ import annotations

import pytest
import torch

from si_lightning.interpolants import Interpolant
from si_lightning.sampling import BeamSearch, BestOfN, RolloverBudgetForcing, SequentialMonteCarlo
from si_lightning.sampling.fields import OracleFields
from tests.conftest import mixture_2d
from tests.test_sampling_mmd import gaussian_mmd, mmd_threshold

MODE = 0  # the lightest component (weight 0.2): one path lands there one time in five
SAMPLES = 600


def oracle():
    return mixture_2d(Interpolant("linear", "brownian", 1.0))


def in_mode(x: torch.Tensor) -> torch.Tensor:
    """Whether each point is nearer the mean of component MODE than any other mean (batch,)."""
    return torch.cdist(x, oracle().means).argmin(1) == MODE


def indicator(x: torch.Tensor) -> torch.Tensor:
    return in_mode(x).double()


def restricted(count: int, generator: torch.Generator) -> torch.Tensor:
    """Exact draws of the mixture restricted to the mode's region (rejection)."""
    kept = torch.empty(0, 2, dtype=torch.float64)
    while kept.shape[0] < count:
        x = oracle().sample_data(4 * count, generator)
        kept = torch.cat([kept, x[in_mode(x)]])
    return kept[:count]


@pytest.mark.slow
def test_smc_puts_the_samples_in_the_rewarded_mode_with_the_restricted_law():
    """At 4x the NFE of one path (4 particles), >= 95% in the mode, and the law is that of the mixture
    restricted to the mode: MMD to exact restricted draws below the data-vs-data 99th percentile."""
    search = SequentialMonteCarlo(steps=50, diffusion="sigma", scale=10.0, temperature=30.0, ess_threshold=1.0)
    result = search.search(oracle(), indicator, range(SAMPLES), (2,), budget=4 * search.path_nfe, dtype=torch.float64)
    assert result.nfe == 4 * search.path_nfe
    inside = in_mode(result.x)
    assert float(inside.double().mean()) >= 0.95
    threshold = mmd_threshold(restricted, int(inside.sum()), torch.Generator().manual_seed(3))
    reference = restricted(int(inside.sum()), torch.Generator().manual_seed(4))
    assert gaussian_mmd(result.x[inside], reference) < threshold
    # The test can fail: draws 5% too concentrated about their mean are rejected.
    mean = reference.mean(0)
    fresh = restricted(int(inside.sum()), torch.Generator().manual_seed(5))
    assert gaussian_mmd(mean + 0.95 * (fresh - mean), reference) > threshold


def test_smc_beats_best_of_n_at_equal_nfe():
    kwargs = dict(steps=30, diffusion="sigma", scale=10.0)
    smc = SequentialMonteCarlo(**kwargs, temperature=30.0, ess_threshold=1.0)
    best = BestOfN(**kwargs)
    budget = 4 * smc.path_nfe
    hits = [
        float(in_mode(m.search(oracle(), indicator, range(300), (2,), budget, dtype=torch.float64).x).double().mean())
        for m in (smc, best)
    ]
    # Best-of-4 finds the mode with probability 1 - 0.8^4 = 0.59 (3 standard errors: 0.09 at n = 300).
    assert hits[1] == pytest.approx(1 - 0.8**4, abs=0.09)
    assert hits[0] > hits[1] + 0.2


class RowCounter(OracleFields):
    """The oracle, counting evaluated rows (one row = one network evaluation of one sample)."""

    rows = 0

    def velocity_and_score(self, t, x, cond=None):
        RowCounter.rows += x.shape[0]
        return super().velocity_and_score(t, x, cond)


METHODS = [
    lambda: BestOfN(steps=10),
    lambda: SequentialMonteCarlo(steps=10, temperature=2.0),
    lambda: BeamSearch(steps=10, beams=2, width=3),
    lambda: RolloverBudgetForcing(steps=10),
]


def distance_reward(x: torch.Tensor) -> torch.Tensor:
    return -(x - oracle().means[MODE]).norm(dim=1)


@pytest.mark.parametrize("build", METHODS, ids=["best-of-n", "smc", "beam", "rollover"])
def test_search_counts_every_evaluation_and_stays_in_budget(build):
    search = build()
    RowCounter.rows = 0
    budget = 40
    result = search.search(RowCounter(oracle()), distance_reward, [0, 1, 2], (2,), budget, dtype=torch.float64)
    assert result.nfe * 3 == RowCounter.rows
    assert search.path_nfe <= result.nfe <= budget
    assert torch.allclose(result.reward, distance_reward(result.x).double())


@pytest.mark.parametrize("build", METHODS, ids=["best-of-n", "smc", "beam", "rollover"])
def test_search_is_reproducible_per_sample_seed(build):
    fields = oracle()
    together = build().search(fields, distance_reward, [7, 8, 9], (2,), 40, dtype=torch.float64)
    again = build().search(fields, distance_reward, [7, 8, 9], (2,), 40, dtype=torch.float64)
    alone = build().search(fields, distance_reward, [8], (2,), 40, dtype=torch.float64)
    assert torch.equal(together.x, again.x)
    assert torch.allclose(together.x[1:2], alone.x, atol=1e-12)


def test_best_of_n_never_loses_to_one_sample_and_gains_on_average():
    """Candidate 0 of best-of-N is the single path of the same seed, so the reward can only grow."""
    search = BestOfN(steps=10)
    single = search.search(oracle(), distance_reward, range(100), (2,), search.path_nfe, dtype=torch.float64)
    best = search.search(oracle(), distance_reward, range(100), (2,), 8 * search.path_nfe, dtype=torch.float64)
    assert best.nfe == 8 * single.nfe
    assert bool((best.reward >= single.reward).all())
    assert float(best.reward.mean() - single.reward.mean()) > 0.5


def test_rollover_spends_at_most_its_budget_and_improves_on_one_path():
    search = RolloverBudgetForcing(steps=10)
    single = search.search(oracle(), distance_reward, range(100), (2,), search.path_nfe, dtype=torch.float64)
    rolled = search.search(oracle(), distance_reward, range(100), (2,), 4 * search.path_nfe, dtype=torch.float64)
    assert single.nfe == search.path_nfe and rolled.nfe <= 4 * search.path_nfe
    assert float(rolled.reward.mean() - single.reward.mean()) > 0.5


def test_bad_reward_shape_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"reward must return a tensor of shape \(3,\).*got \(3, 1\)") as error:
        BestOfN(steps=5).search(oracle(), lambda x: x[:, :1], [0, 1, 2], (2,), 6, dtype=torch.float64)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="finite"):
        BestOfN(steps=5).search(oracle(), lambda x: x[:, 0] / 0.0, [0, 1, 2], (2,), 6, dtype=torch.float64)


def test_budget_below_one_path_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"budget must be an int >= 11 .* got 10") as error:
        SequentialMonteCarlo(steps=10).search(oracle(), indicator, [0], (2,), 10, dtype=torch.float64)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="budget must be >= 22 evaluations per sample for 2 beams"):
        BeamSearch(steps=10, beams=2).search(oracle(), indicator, [0], (2,), 21, dtype=torch.float64)
