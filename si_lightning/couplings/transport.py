"""Minibatch optimal-transport couplings: re-pair the base points x0 with the data x1 of a batch.

Given a batch x0_1..x0_n (from an inner coupling with a Gaussian base) and x1_1..x1_n, the coupling
keeps x1 in place and gives x1_j the base point x0_{pi(j)}, pi a permutation chosen from the cost
C_ij = |x0_i - x1_j|^2 (flattened):

- ``exact``: pi minimises sum_j C_{pi(j) j} (``scipy.optimize.linear_sum_assignment``);
- ``sinkhorn``: pi is a random permutation with Pr(pi(j) = i) = n P_ij, P = argmin <P, C> - eps H(P) the
  entropic plan with uniform marginals (Sinkhorn iterations, eps = regularization x mean(C), so the setting
  does not depend on the data's scale). Every x0 and every x1 is used exactly once, unlike sampling pairs
  from P with replacement, and over many draws on the same batch x1_j meets x0_i with frequency n P_ij:
  pi is drawn from a Birkhoff-von Neumann decomposition of n P rounded to multiples of 2^-30
  (``sample_permutation``). For one j chosen uniformly the pair (x0_{pi(j)}, x1_j) has law P, so a loss
  averaged over the batch has the expectation it has under P.

With labels (``ClassLabels(inner=MinibatchOT(...))``), pairs are formed within each class only.
``distributed=True`` solves one plan for the whole global batch under torch.distributed: every rank
gathers all x0, x1 (and labels), rank 0 solves, broadcasts pi, and each rank keeps its slice, so the
plan is the one a single process would find on the concatenated batch. Ranks must hold equal batches.

When the pairing is a Schrödinger-bridge coupling: with the linear schedule and the Brownian gamma of scale
a (``Interpolant("linear", "brownian", gamma_scale=a)``), x_t = (1 - t) x0 + t x1 + sqrt(a t (1 - t)) z
given (x0, x1) is the bridge from x0 to x1 of a Brownian motion of variance a per unit time in each
coordinate. The static Schrödinger problem on the batch's points with that reference, minimise KL(P || K)
over P with uniform marginals, K_ij proportional to exp(-C_ij / (2a)) (the motion's transition density from
x0_i to x1_j over [0, 1]), is <P, C> / (2a) - H(P) up to a constant: its solution is the entropic plan with
eps = 2a, and mixing the Brownian bridges over it gives the dynamic bridge, whose time-t marginal is the law
of the interpolant's x_t with (x0, x1) drawn from P. So the ``sinkhorn`` pairing draws from that coupling
exactly when regularization x mean(C) = 2a (a condition on each batch, as mean(C) changes between batches),
in the per-pair sense above. It is not the Schrödinger bridge between N(0, I) and the data distribution.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from si_lightning.checks import is_integer
from si_lightning.couplings.base import Batch, Coupling, IndependentCoupling

OT_METHODS = ("exact", "sinkhorn")
PLAN_TOLERANCE = 1e-10  # Sinkhorn stops once every row of n P sums to 1 within this (columns are exact)
ABSORB_EVERY = 20  # Sinkhorn iterations between rebuilding the kernel from the potentials
SAMPLING_BITS = 30  # n P is rounded to multiples of 2^-30 before a permutation is sampled from it


def squared_distances(x0: Tensor, x1: Tensor) -> Tensor:
    """C_ij = |x0_i - x1_j|^2 in float64: (n, ...) x (m, ...) -> (n, m)."""
    a, b = x0.flatten(1).double(), x1.flatten(1).double()
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def log_sum_exp(values: np.ndarray, axis: int) -> np.ndarray:
    """log sum exp of values (n, n) along axis, shifted by the maximum so that nothing overflows."""
    peak = values.max(axis=axis, keepdims=True)
    return (np.log(np.exp(values - peak).sum(axis=axis, keepdims=True)) + peak).squeeze(axis)


def sinkhorn_log_plan(cost: Tensor, epsilon: float, iterations: int, tolerance: float = PLAN_TOLERANCE) -> Tensor:
    """log P (n, n) float64 of the entropic plan with uniform marginals, after at most ``iterations`` Sinkhorn
    iterations on the cost (n, n).

    An iteration rescales the rows (f_i = -log n - logsumexp_j(-C_ij / eps + g_j)), then the columns (g
    likewise), so the columns of P are uniform after any number of iterations and the rows converge
    linearly; the loop stops early once every row of n P sums to 1 within ``tolerance``. The first iteration
    is done in the log domain; the following ones in blocks, as products with the kernel
    K = exp(-C / eps + f_i + g_j), the plan with the potentials so far (the same iterates, an order of
    magnitude faster than a logsumexp per update), whose row and column scalings are folded back into f and g
    after every block, before they can overflow; a block whose scalings leave float64 (an underflowed kernel) is
    replaced by a log-domain iteration.
    Plain numpy: at small n the per-call overhead of tensor operations would dominate.
    """
    scaled = -cost.detach().cpu().double().numpy() / epsilon
    count = scaled.shape[0]
    log_marginal = -math.log(count)

    def log_domain_iteration(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = log_marginal - log_sum_exp(scaled + g[None, :], axis=1)
        return f, log_marginal - log_sum_exp(scaled + f[:, None], axis=0)

    f, g = log_domain_iteration(np.zeros(count))
    done = 1
    while done < iterations:
        kernel = np.exp(scaled + f[:, None] + g[None, :])
        row_scale, column_scale = np.ones(count), np.ones(count)
        kernel_rows = kernel.sum(1)  # kernel @ column_scale: row i of the plan sums to row_scale_i times it
        steps, converged = 0, False
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # checked once per block, below
            while steps < min(ABSORB_EVERY, iterations - done):
                if np.abs(row_scale * kernel_rows * count - 1).max() <= tolerance:
                    converged = True
                    break
                row_scale = 1 / (count * kernel_rows)
                column_scale = 1 / (count * (row_scale @ kernel))
                kernel_rows = kernel @ column_scale
                steps += 1
        scales = np.concatenate([row_scale, column_scale])
        if not (np.isfinite(scales).all() and scales.min() > 0):  # underflowed kernel: a log-domain step instead
            f, g = log_domain_iteration(g)
            done += 1
            continue
        f, g = f + np.log(row_scale), g + np.log(column_scale)
        done += steps
        if converged:
            break
    return torch.from_numpy(scaled + f[:, None] + g[None, :])


def marginal_error(plan: Tensor) -> float:
    """max over rows and columns of |n (sum of the line of P) - 1| for a plan P (n, n)."""
    count = plan.shape[0]
    return max(float((plan.sum(1) * count - 1).abs().max()), float((plan.sum(0) * count - 1).abs().max()))


def integer_plan(doubly: np.ndarray, bits: int = SAMPLING_BITS) -> np.ndarray:
    """n P (n, n) float64 with lines summing to about 1 -> int64 (n, n) whose rows and columns all sum to 2^bits.

    Rows, then columns, above 1 are scaled down to 1 and the entries floored at 2^bits; the missing mass of
    row i and column j (r_i, c_j, with equal totals R) is added as floor(r_i c_j / R), and what that leaves by
    the north-west-corner rule (after the rounding of Altschuler, Weed and Rigollet, 2017, in integers). An
    entry moves by at most (n + 1) 2^-bits plus the marginal errors of its row and column.
    """
    total = 1 << bits
    scaled = doubly / np.maximum(doubly.sum(1), 1.0)[:, None]
    scaled = scaled / np.maximum(scaled.sum(0), 1.0)[None, :]
    counts = np.floor(scaled * total).astype(np.int64)
    for axis in (1, 0):  # a rounding error of the division may leave a line a few units above the total
        excess = counts.sum(axis) - total
        for line in np.flatnonzero(excess > 0):
            entries = counts[line] if axis == 1 else counts[:, line]
            entries[np.argmax(entries)] -= excess[line]
    rows, columns = total - counts.sum(1), total - counts.sum(0)
    if rows.sum() == 0:
        return counts
    counts += rows[:, None] * columns[None, :] // rows.sum()  # < 2^62: every deficit is at most 2^bits
    row_ends, column_ends = np.cumsum(total - counts.sum(1)), np.cumsum(total - counts.sum(0))
    ends = np.union1d(row_ends, column_ends)
    starts = np.concatenate([[0], ends[:-1]])
    starts, ends = starts[ends > starts], ends[ends > starts]
    np.add.at(
        counts,
        (np.searchsorted(row_ends, starts, side="right"), np.searchsorted(column_ends, starts, side="right")),
        ends - starts,
    )
    return counts


def orbits(successor: np.ndarray) -> np.ndarray:
    """For a permutation successor (m,): the smallest index on each index's cycle (m,), by pointer doubling.

    After k rounds label[e] is the minimum over the next 2^k indices of e's cycle. On a cycle longer than 2^k
    the index 2^k before the cycle's minimum still changes in round k + 1, so a round that changes nothing
    means every cycle is covered.
    """
    label = np.arange(successor.size, dtype=successor.dtype)
    jump = successor
    while True:
        widened = np.minimum(label, label[jump])
        if not (widened < label).any():
            return label
        label, jump = widened, jump[jump]


def halve(counts: np.ndarray, random: np.random.Generator) -> None:
    """In place: counts (n, n) int64 with every row and column sum equal and even -> a random matrix with the
    sums halved and expectation counts / 2.

    counts = 2 floor(counts / 2) + O with O the 0/1 matrix of odd entries, whose every row and column holds an
    even number of ones. O splits into two halves with half of those ones in each line: pair the ones of each
    row in column order and the ones of each column in row order; every one then has a row partner and a
    column partner, the pairs chain into cycles that alternate between the two kinds, and colouring each
    cycle alternately gives the halves. The result is floor(counts / 2) plus one half, each cycle choosing
    its half by a fair coin: each odd entry gains its 1 with probability 1/2.
    """
    size = counts.shape[0]
    odd = (counts & 1).astype(bool)
    counts >>= 1
    ones = np.flatnonzero(odd)  # row-major: the row pairs are (0, 1), (2, 3), ...
    if ones.size == 0:
        return
    index = np.empty(size * size, dtype=np.int64)
    index[ones] = np.arange(ones.size)
    by_column = index.reshape(size, size).T[odd.T]  # the same ones in column-major order
    column_partner = np.empty(ones.size, dtype=np.int64)
    column_partner[by_column[0::2]] = by_column[1::2]
    column_partner[by_column[1::2]] = by_column[0::2]
    # Going to the column partner, then its row partner (index ^ 1), keeps the colour: each cycle is two orbits
    # of this map, one per colour, and a one's column partner lies on the other.
    orbit = orbits(column_partner ^ 1)
    other = orbit[column_partner]
    coins = random.integers(0, 2, size=ones.size).astype(bool)  # indexed by the cycle's smaller orbit label
    chosen = coins[np.minimum(orbit, other)] ^ (orbit < other)
    counts.reshape(-1)[ones[chosen]] += 1


def sample_permutation(doubly: np.ndarray, random: np.random.Generator, bits: int = SAMPLING_BITS) -> Tensor:
    """pi (n,) int64 with Pr(pi[j] = i) = doubly[i, j], for doubly (n, n) doubly stochastic (float64).

    doubly is rounded to A / 2^bits with A an integer matrix whose rows and columns all sum to 2^bits
    (``integer_plan``), then halved ``bits`` times (``halve``): each halving keeps the expectation, so the
    final 0/1 matrix, a permutation matrix, has expectation A / 2^bits. This samples one permutation of the
    Birkhoff-von Neumann decomposition of A / 2^bits into 2^bits permutations of weight 2^-bits that
    repeated Euler splitting gives (a König edge colouring of the 2^bits-regular multigraph A), walking only
    its sampled branch: bits rounds of O(n^2 log n) array work.
    """
    counts = integer_plan(doubly, bits)
    for _ in range(bits):
        halve(counts, random)
    return torch.from_numpy(np.argmax(counts, axis=0))


def assignment(score: Tensor) -> Tensor:
    """pi (m,) with pi[j] the row given to column j, maximising sum_j score[pi(j), j] (square score)."""
    rows, columns = linear_sum_assignment(score.detach().cpu().numpy(), maximize=True)
    permutation = np.empty(len(columns), dtype=np.int64)
    permutation[columns] = rows
    return torch.from_numpy(permutation)


class MinibatchOT(Coupling):
    """Re-pairs an inner coupling's base points with the batch's data by an optimal-transport plan.

    Args:
        method: ``exact`` (linear assignment) or ``sinkhorn`` (entropic plan, sampled pairing).
        regularization: sinkhorn's eps as a fraction of the mean cost (> 0).
        iterations: at most this many sinkhorn iterations; they stop earlier once every row and column of
            n P sums to 1 within 1e-10. Fewer leave the plan's rows off uniform, and the pairing is then
            drawn from a doubly stochastic rounding of n P (``integer_plan``).
        distributed: one global plan over all ranks (torch.distributed all_gather, rank 0 solves).
        inner: the coupling that draws x0; it must have a Gaussian base (IndependentCoupling by default).
    """

    def __init__(
        self,
        method: str = "exact",
        regularization: float = 0.05,
        iterations: int = 1000,
        distributed: bool = False,
        inner: Coupling | None = None,
    ) -> None:
        if method not in OT_METHODS:
            raise ValueError(f"MinibatchOT method = {method!r}: expected one of {', '.join(OT_METHODS)}")
        if not regularization > 0:
            raise ValueError(f"MinibatchOT regularization = {regularization!r}: expected a number > 0")
        if not is_integer(iterations) or iterations < 1:
            raise ValueError(f"MinibatchOT iterations = {iterations!r}: expected an integer >= 1")
        inner = IndependentCoupling() if inner is None else inner
        if not inner.gaussian_base or inner.cond_channels(1) != 0:
            raise ValueError(
                f"MinibatchOT inner = {inner!r}: expected a coupling with a Gaussian base independent of x1 "
                "(re-pairing a data-dependent base would separate x0 from its condition)"
            )
        self.method, self.regularization, self.iterations = method, float(regularization), iterations
        self.distributed, self.inner = bool(distributed), inner

    @property
    def gaussian_base(self) -> bool:  # type: ignore[override]
        return True

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        self.inner.check_shape(data_shape)

    def evaluation_coupling(self) -> Coupling:
        """Sampling needs only the base N(0, I): the pairing is a training device."""
        return self.inner.evaluation_coupling()

    # --------------------------------------------------------------------------------- the plan
    def permutation(
        self, x0: Tensor, x1: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """pi (n,) on the CPU: x1[j] is paired with x0[pi[j]]; within each label's group if labels are given."""
        count = x0.shape[0]
        if labels is None:
            return self._solve(x0, x1, generator)
        labels = labels.cpu()
        permutation = torch.arange(count)
        for label in labels.unique().tolist():
            members = (labels == label).nonzero().flatten()
            permutation[members] = members[self._solve(x0[members], x1[members], generator)]
        return permutation

    def _solve(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        cost = squared_distances(x0, x1).cpu()
        if cost.shape[0] <= 1:
            return torch.arange(cost.shape[0])
        if self.method == "exact":
            return assignment(-cost)
        epsilon = self.regularization * float(cost.mean().clamp_min(1e-12))
        doubly = (sinkhorn_log_plan(cost, epsilon, self.iterations).exp() * cost.shape[0]).numpy()
        # One draw from the generator, on its device, seeds the sampler's stream: the pairing is reproducible
        # from the generator's state at the cost of one device synchronisation.
        device = generator.device if generator is not None else torch.device("cpu")
        seed = torch.randint(0, 2**62, (1,), generator=generator, device=device).cpu()
        return sample_permutation(doubly, np.random.default_rng(int(seed)))

    def global_permutation(
        self, x0: Tensor, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, int]:
        """(x0 of every rank (W n, ...), pi over the global batch (W n,), this rank's first index)."""
        world, rank = dist.get_world_size(), dist.get_rank()
        count = torch.tensor([x1.shape[0]], device=x1.device)
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        sizes = [int(item) for item in counts]
        if len(set(sizes)) != 1:
            raise ValueError(
                f"MinibatchOT distributed = True: expected equal batch sizes on every rank, got {sizes} "
                "(drop the last incomplete batch)"
            )

        def gathered(tensor: Tensor) -> Tensor:
            parts = [torch.empty_like(tensor) for _ in range(world)]
            dist.all_gather(parts, tensor.contiguous())
            return torch.cat(parts)

        all_x0, all_x1 = gathered(x0), gathered(x1)
        all_labels = None if labels is None else gathered(labels)
        permutation = torch.empty(world * sizes[0], dtype=torch.long, device=x1.device)
        if rank == 0:
            permutation.copy_(self.permutation(all_x0, all_x1, all_labels, generator).to(x1.device))
        dist.broadcast(permutation, src=0)
        return all_x0, permutation, rank * sizes[0]

    # ------------------------------------------------------------------------------- the coupling
    def couple(
        self,
        x1: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        extra = {} if noise_generator is None else {"noise_generator": noise_generator}
        inner = self.inner.couple(x1, None, generator, **extra)
        if self.distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            all_x0, permutation, first = self.global_permutation(inner.x0, x1, labels, generator)
            x0 = all_x0[permutation[first : first + x1.shape[0]]]
        else:
            x0 = inner.x0[self.permutation(inner.x0, x1, labels, generator).to(x1.device)]
        return Batch(x0, x1, inner.cond)
