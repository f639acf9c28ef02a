"""Minibatch optimal-transport couplings: permutations, optimality, the sinkhorn plan and the frequencies of its
sampled pairings, the Gaussian Monge cost, classes, DDP."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from si_lightning.couplings import ClassLabels, IndependentCoupling, MinibatchOT, SuperResolution
from si_lightning.couplings.transport import (
    PLAN_TOLERANCE,
    SAMPLING_BITS,
    integer_plan,
    marginal_error,
    sinkhorn_log_plan,
    squared_distances,
)
from tests.integration import ddp_minibatch_ot_run as ddp_run

REPOSITORY = Path(__file__).resolve().parents[1]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pairing_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    return float((x0 - x1).flatten(1).pow(2).sum(1).mean())


def test_exact_pairing_is_the_best_permutation():
    x0, x1 = torch.randn(6, 3, generator=seeded(0)), torch.randn(6, 3, generator=seeded(1)) + 1.0
    cost = squared_distances(x0, x1)
    brute = min(sum(float(cost[p[j], j]) for j in range(6)) for p in itertools.permutations(range(6)))
    permutation = MinibatchOT("exact").permutation(x0, x1)
    assert sorted(permutation.tolist()) == list(range(6))
    assert sum(float(cost[permutation[j], j]) for j in range(6)) == pytest.approx(brute, rel=1e-12)


def test_coupling_permutes_the_inner_base_points_and_keeps_x1():
    x1 = torch.randn(64, 1, 4, 4, generator=seeded(2))
    for method in ("exact", "sinkhorn"):
        batch = MinibatchOT(method)(x1, generator=seeded(3))
        inner = IndependentCoupling()(x1, generator=seeded(3))
        assert batch.x1 is x1
        # Every base point is used exactly once (no pair drawn twice, unlike sampling with replacement).
        assert torch.equal(batch.x0.flatten(1).sort(0).values, inner.x0.flatten(1).sort(0).values)
        assert len({tuple(row.tolist()) for row in batch.x0.flatten(1)}) == 64
        assert pairing_cost(batch.x0, x1) < pairing_cost(inner.x0, x1)


def test_sinkhorn_plan_has_uniform_marginals():
    cost = squared_distances(torch.randn(32, 2, generator=seeded(4)), torch.randn(32, 2, generator=seeded(5)))
    plan = sinkhorn_log_plan(cost, 0.05 * float(cost.mean()), 3000).exp()  # converged (linear rate)
    torch.testing.assert_close(plan.sum(0), torch.full((32,), 1 / 32, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(plan.sum(1), torch.full((32,), 1 / 32, dtype=torch.float64), rtol=1e-6, atol=0)


def small_batch() -> tuple[torch.Tensor, torch.Tensor, float]:
    """x0, x1 (6, 2) and eps = 0.3 mean(C): a plan with entries of n P from ~0 to ~0.9."""
    generator = seeded(9)
    x0, x1 = torch.randn(6, 2, generator=generator), torch.randn(6, 2, generator=generator)
    return x0, x1, 0.3 * float(squared_distances(x0, x1).mean())


def test_sinkhorn_pairing_frequencies_are_n_times_the_entropic_plan():
    """Over M draws on one batch, x1_j meets x0_i with frequency n P_ij: each of the 36 frequencies within
    5 binomial standard errors sqrt(p (1 - p) / M) of p = n P_ij, plus 1 / M for the entries with M p << 1,
    where one count is already a deviation (perturb-and-MAP on log P is off by 0.13 here, 8.6 standard errors)."""
    x0, x1, epsilon = small_batch()
    plan = sinkhorn_log_plan(squared_distances(x0, x1), epsilon, 20000).exp()
    expected = 6 * plan
    draws, generator, coupling = 1000, seeded(1), MinibatchOT("sinkhorn", regularization=0.3)
    frequencies = torch.zeros(6, 6, dtype=torch.float64)
    for _ in range(draws):
        permutation = coupling.permutation(x0, x1, generator=generator)
        assert sorted(permutation.tolist()) == list(range(6))  # every x0 and every x1 used once
        frequencies[permutation, torch.arange(6)] += 1 / draws
    standard_error = (expected * (1 - expected) / draws).sqrt()
    deviation = (frequencies - expected).abs()
    print(f"max |frequency - n P| = {float(deviation.max()):.4f}, {float((deviation / standard_error).max()):.2f} SE")
    assert bool((deviation <= 5 * standard_error + 1 / draws).all()), (frequencies, expected)


def test_sinkhorn_plan_is_the_entropic_plan_to_the_tolerance():
    """Uniform marginals within the stopping tolerance, and log P + C / eps = f_i + g_j (additive), which with
    the marginals makes P the entropic plan; the sampler's integer rounding moves n P by <= (n + 1) 2^-30."""
    x0, x1, epsilon = small_batch()
    cost = squared_distances(x0, x1)
    log_plan = sinkhorn_log_plan(cost, epsilon, 1000)
    plan = log_plan.exp()
    assert marginal_error(plan) <= PLAN_TOLERANCE * (1 + 1e-6)
    potentials = log_plan + cost / epsilon
    additive = potentials.mean(1, keepdim=True) + potentials.mean(0, keepdim=True) - potentials.mean()
    torch.testing.assert_close(potentials, additive, rtol=0, atol=1e-12 * float(potentials.abs().max()))
    counts = integer_plan((6 * plan).numpy())
    assert (counts.sum(0) == 2**SAMPLING_BITS).all() and (counts.sum(1) == 2**SAMPLING_BITS).all()
    rounding = abs(counts / 2**SAMPLING_BITS - (6 * plan).numpy()).max()
    assert rounding <= 7 * 2.0**-SAMPLING_BITS + PLAN_TOLERANCE


def test_sinkhorn_iterations_shrink_the_marginal_error():
    """One iteration leaves the rows far from uniform; the error then contracts (linear convergence: by more
    than 4 between these checkpoints) until the tolerance stops the loop, so more iterations change nothing."""
    cost = squared_distances(torch.randn(32, 2, generator=seeded(4)), torch.randn(32, 2, generator=seeded(5)))
    epsilon = 0.05 * float(cost.mean())
    counts = (1, 10, 100, 1000, 3000)
    errors = [marginal_error(sinkhorn_log_plan(cost, epsilon, count).exp()) for count in counts]
    print("marginal error after", counts, "iterations:", [f"{error:.1e}" for error in errors])
    assert errors[0] > 1 and all(later < earlier / 4 for earlier, later in itertools.pairwise(errors[:4]))
    assert errors[4] <= PLAN_TOLERANCE
    converged = sinkhorn_log_plan(cost, epsilon, 3000)
    assert torch.equal(converged, sinkhorn_log_plan(cost, epsilon, 10000))
    # The pairing follows: one iteration's plan, rounded to doubly stochastic, is far from the converged one.
    few = integer_plan((32 * sinkhorn_log_plan(cost, epsilon, 1).exp()).numpy()) / 2**SAMPLING_BITS
    assert abs(few - (32 * converged.exp()).numpy()).max() > 0.1


def test_sinkhorn_pairing_is_reproducible_from_the_generator():
    x1, labels = ddp_run.global_batch(48)
    x0 = torch.randn(48, 2, generator=seeded(10))
    coupling = MinibatchOT("sinkhorn")
    for group in (None, labels):
        first, second, other = seeded(11), seeded(11), seeded(12)
        draws = [coupling.permutation(x0, x1, group, first) for _ in range(3)]
        assert all(torch.equal(draw, coupling.permutation(x0, x1, group, second)) for draw in draws)
        assert not torch.equal(draws[0], draws[1])  # the generator moves on: a new pairing every call
        assert not torch.equal(draws[0], coupling.permutation(x0, x1, group, other))


def test_sinkhorn_pairing_moves_from_exact_to_independent_with_the_regularisation():
    """Small eps: close to the exact cost; huge eps: the plan is uniform, so the cost is the independent one."""
    x1 = torch.randn(256, 2, generator=seeded(6)) * torch.tensor([2.0, 0.5]) + 1.0
    x0 = torch.randn(256, 2, generator=seeded(7))
    exact = pairing_cost(x0[MinibatchOT("exact").permutation(x0, x1)], x1)
    sharp = pairing_cost(x0[MinibatchOT("sinkhorn", 0.01, 300).permutation(x0, x1, generator=seeded(8))], x1)
    costs = [
        pairing_cost(x0[MinibatchOT("sinkhorn", 1e4, 10).permutation(x0, x1, generator=seeded(s))], x1)
        for s in range(10)
    ]
    independent = float(squared_distances(x0, x1).mean())  # the mean over all pairs
    assert exact <= sharp < 1.15 * exact
    # A uniformly random permutation's cost: mean over pairs, spread ~ std over pairs / sqrt(n) per draw.
    spread = float(squared_distances(x0, x1).std()) / math.sqrt(256)
    assert abs(sum(costs) / len(costs) - independent) < 5 * spread / math.sqrt(len(costs))


def test_exact_minibatch_ot_approaches_the_gaussian_monge_cost_at_batch_512():
    """x0 ~ N(0, I), x1 ~ N(m, S): W2^2 = |m|^2 + tr S + d - 2 tr S^(1/2) (the Monge map x -> m + S^(1/2) x)."""
    mean, scales = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.5])  # S = diag(4, 0.25)
    monge = float(mean.pow(2).sum() + scales.pow(2).sum() + 2 - 2 * scales.sum())  # 3.25
    independent = float(mean.pow(2).sum() + scales.pow(2).sum() + 2)  # 8.25
    costs, plain = [], []
    for seed in range(4):
        x1 = mean + scales * torch.randn(512, 2, generator=seeded(100 + seed))
        batch = MinibatchOT("exact")(x1, generator=seeded(seed))
        costs.append(pairing_cost(batch.x0, x1))
        plain.append(pairing_cost(IndependentCoupling()(x1, generator=seeded(seed)).x0, x1))
    ot_cost, plain_cost = sum(costs) / 4, sum(plain) / 4
    assert abs(ot_cost - monge) < 0.10 * monge, (ot_cost, monge)
    assert abs(plain_cost - independent) < 0.10 * independent
    print(f"E|x1 - x0|^2: independent {plain_cost:.3f}, exact minibatch OT {ot_cost:.3f}, Monge W2^2 {monge:.3f}")


def test_pairs_stay_within_a_class():
    x1, labels = ddp_run.global_batch(96)
    inner = IndependentCoupling()(x1, generator=seeded(9)).x0
    permutation = MinibatchOT("exact").permutation(inner, x1, labels)
    assert torch.equal(labels[permutation], labels)
    batch = ClassLabels(0.0, 3, inner=MinibatchOT("exact"))(x1, labels, seeded(9))
    assert torch.equal(batch.x0, inner[permutation]) and torch.equal(batch.cond.labels, labels)


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match="MinibatchOT method = 'hungarian': expected one of exact, sinkhorn"):
        MinibatchOT("hungarian")
    with pytest.raises(ValueError, match="MinibatchOT regularization = 0.0: expected a number > 0"):
        MinibatchOT("sinkhorn", regularization=0.0)
    with pytest.raises(ValueError, match="MinibatchOT inner = SuperResolution.*expected a coupling with a Gaussian"):
        MinibatchOT(inner=SuperResolution(2))


def run_ranks(tmp_path: Path, method: str, per_rank: int) -> list[dict]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    init_file = tmp_path / f"init-{method}"
    processes = [
        subprocess.Popen(
            [sys.executable, ddp_run.__file__, str(rank), "2", str(init_file), str(tmp_path), method, str(per_rank)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    return [torch.load(tmp_path / f"rank-{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_cross_rank_plan_equals_the_one_process_plan_on_the_concatenated_batch(tmp_path, method):
    per_rank = 48
    ranks = run_ranks(tmp_path, method, per_rank)
    x1, labels = ddp_run.global_batch(2 * per_rank)
    # One process: the base points each rank drew (generator seeded by its rank), one plan on all of them;
    # rank 0 solves, with its generator in the state after its own draw.
    generators = [seeded(rank) for rank in range(2)]
    x0 = torch.cat([torch.randn(per_rank, 2, generator=generators[rank]) for rank in range(2)])
    permutation = MinibatchOT(method).permutation(x0, x1, labels, generators[0])
    expected = x0[permutation]
    for rank in range(2):
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        assert torch.equal(ranks[rank]["x1"], x1[mine])
        assert torch.equal(ranks[rank]["x0"], expected[mine])
    # The global plan pairs across the ranks: some x1 of rank 0 gets a base point rank 1 drew.
    assert bool((permutation[:per_rank] >= per_rank).any())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_unequal_batches_across_ranks_are_refused_in_one_line(tmp_path):
    ranks = run_ranks(tmp_path, "unequal", 8)
    for result in ranks:
        assert result["error"] == (
            "MinibatchOT distributed = True: expected equal batch sizes on every rank, got [8, 7] "
            "(drop the last incomplete batch)"
        )
