"""Inference-time search with a reward: best-of-N, sequential Monte Carlo, beam search, rollover budget forcing.

A reward is any callable ``reward(images)`` or, when labels are given, ``reward(images, labels)`` that
returns one finite number per image: (n, ...) -> (n,). Every method explores branches of the generative
SDE dX = (b + eps s) dt + sqrt(2 eps) dW (Euler-Maruyama on a time grid from t_start to t_end - h, then
the Tweedie step X_1 = E[x1 | X]; eps = 0 gives the probability-flow ODE) and scores a branch by the
reward of its predicted data E[x1 | x_t] = (x + alpha_bar^2 s) / beta, which the same field evaluation gives.

One path costs ``steps + 1`` evaluations (one per grid time before the end); every method takes a
``budget`` of evaluations per output sample and reports ``nfe``: the evaluations it spent per output
sample, every particle and branch counted. The reward's own cost is not counted.

Randomness is per sample: output sample i with seed s_i draws its base noise, its Brownian increments
and its resampling choices from generators seeded by (s_i, branch, stream) alone, so a search is
reproducible and does not depend on the batch it runs in.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from si_lightning.checks import is_integer, lookup, non_negative_float, positive_float, positive_int
from si_lightning.interpolants import conversions
from si_lightning.sampling.checks import batch_time, resolve_interval
from si_lightning.sampling.diffusion import DIFFUSIONS
from si_lightning.sampling.fields import as_fields
from si_lightning.sampling.grids import GRIDS, TimeGrid

Reward = Callable[..., Tensor]  # reward(images (n, ...)[, labels (n,)]) -> (n,)

_BRANCHES = 1 << 20  # branches per output sample that get distinct generator seeds
_SEARCH_STREAMS = {"base": 0, "sde": 1, "resample": 2}


def branch_generator(seed: int, branch: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of ``stream`` for branch ``branch`` of the output sample with seed ``seed`` (injective)."""
    value = (seed * _BRANCHES + branch) * len(_SEARCH_STREAMS) + _SEARCH_STREAMS[stream]
    return torch.Generator(device=device).manual_seed(value)


def evaluate_reward(reward: Reward, images: Tensor, labels: Tensor | None) -> Tensor:
    """reward(images[, labels]) checked to be a finite float tensor of shape (n,)."""
    values = reward(images) if labels is None else reward(images, labels)
    count = images.shape[0]
    if not isinstance(values, Tensor) or values.shape != (count,):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"reward must return a tensor of shape ({count},) (one value per image), got {shape}")
    if not values.is_floating_point() or not bool(torch.isfinite(values).all()):
        raise ValueError(f"reward must return finite floating-point values, got {values.dtype} with non-finite entries")
    return values.to(torch.float64)


def _check_seeds(seeds: Sequence[int] | Tensor) -> list[int]:
    values = seeds.tolist() if isinstance(seeds, Tensor) else list(seeds)
    if not values:
        raise ValueError("seeds must not be empty: one seed per output sample")
    for value in values:
        if not is_integer(value) or value < 0:
            raise ValueError(f"seeds must be ints >= 0, got {value!r}")
    return values


@dataclass(frozen=True)
class SearchResult:
    """x: the chosen samples (batch, ...); reward: their rewards (batch,); nfe: evaluations per output sample."""

    x: Tensor
    reward: Tensor
    nfe: float


@dataclass
class Branches:
    """Paths being explored: states, the field at them and the reward of their predicted data, row by row.

    ``owner`` (rows,) is the output sample each row belongs to; ``noise`` (rows, steps, ...) the standard
    normal increments of each row for every step, drawn at once from the row's own generator when the
    branch is created (one generator call per branch, not per step).
    """

    x: Tensor
    drift: Tensor  # b + eps s at the current time
    data: Tensor  # E[x1 | x_t = x]
    reward: Tensor  # reward of ``data`` (rows,) float64
    owner: Tensor
    noise: Tensor

    def select(self, rows: Tensor) -> Branches:
        return Branches(
            self.x[rows], self.drift[rows], self.data[rows], self.reward[rows], self.owner[rows], self.noise[rows]
        )


class Search(ABC):
    """Common settings and the SDE branch engine of every search method.

    Args:
        steps: Euler-Maruyama steps of one path (one path costs steps + 1 evaluations).
        diffusion: one of ``DIFFUSIONS`` (eps(t) of the branches); ``scale`` multiplies it (0: the ODE).
        last_step_size: h > 0: the path stops at t_end - h and returns E[x1 | x] there.
        grid: one of ``GRIDS`` or a ``TimeGrid``.
    """

    def __init__(
        self,
        steps: int = 50,
        diffusion: str = "sigma",
        scale: float = 1.0,
        last_step_size: float = 0.02,
        grid: str | TimeGrid = "uniform",
    ) -> None:
        self.steps = positive_int("steps", steps)
        self.diffusion = lookup(DIFFUSIONS, diffusion, "diffusion")(scale)
        self.last_step_size = positive_float("last_step_size", last_step_size)
        self.grid = grid if isinstance(grid, TimeGrid) else lookup(GRIDS, grid, "time grid")()

    @property
    def path_nfe(self) -> int:
        """Evaluations of one path: one at every grid time but the last (the Tweedie step reuses it)."""
        return self.steps + 1

    def search(
        self,
        fields: object,
        reward: Reward,
        seeds: Sequence[int] | Tensor,
        shape: Sequence[int],
        budget: int,
        labels: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> SearchResult:
        """One searched sample per seed, of shape (len(seeds), *shape), spending at most ``budget`` NFE each."""
        seeds = _check_seeds(seeds)
        if not is_integer(budget) or budget < self.path_nfe:
            raise ValueError(
                f"budget must be an int >= {self.path_nfe} evaluations per sample (one path of {self.steps} steps "
                f"costs {self.path_nfe}), got {budget!r}"
            )
        if labels is not None and (labels.dim() != 1 or labels.shape[0] != len(seeds)):
            raise ValueError(f"labels must have shape ({len(seeds)},) (one per seed), got {tuple(labels.shape)}")
        self.fields = as_fields(fields)
        if not self.fields.has_score:
            raise ValueError(f"{type(self).__name__} needs the score for E[x1 | x_t], but {self.fields!r} has none")
        start, end = resolve_interval(self.fields, None, need_score=True, who=type(self).__name__)
        stop = end - self.last_step_size
        if stop <= start:
            raise ValueError(f"last_step_size = {self.last_step_size!r} leaves no room on [{start}, {end}]")
        self.times = self.grid(start, stop, self.steps, device=device, dtype=dtype, interpolant=self.fields.interpolant)
        self.eps = self.diffusion.on_grid(self.times, self.fields.interpolant)
        self.reward_function, self.labels = reward, labels
        self.seeds, self.shape, self.dtype, self.device = seeds, tuple(shape), dtype, device
        self.evaluations = 0
        x, rewards = self.run(budget)
        return SearchResult(x, rewards, self.evaluations / len(seeds))

    @abstractmethod
    def run(self, budget: int) -> tuple[Tensor, Tensor]:
        """(samples (batch, ...), rewards (batch,)) within ``budget`` evaluations per sample."""

    # ------------------------------------------------------------------ the branch engine
    def start(self, owner: Tensor, branch: Tensor) -> Branches:
        """Fresh paths at t_start for output samples ``owner`` (rows,), branch numbers ``branch`` (rows,)."""
        pairs = list(zip(owner.tolist(), branch.tolist(), strict=True))
        x = torch.stack(
            [
                torch.randn(self.shape, generator=branch_generator(self.seeds[i], j, "base"), dtype=self.dtype)
                for i, j in pairs
            ]
        ).to(self.device)
        return self.evaluate(0, x, owner.to(self.device), self.draw_noise(owner.tolist(), branch.tolist()))

    def draw_noise(self, owners: list[int], numbers: list[int]) -> Tensor:
        """Increments (rows, steps, ...) of branches ``numbers`` of output samples ``owners``."""
        draws = [
            torch.randn(
                (self.steps, *self.shape), generator=branch_generator(self.seeds[i], j, "sde"), dtype=self.dtype
            )
            for i, j in zip(owners, numbers, strict=True)
        ]
        return torch.stack(draws).to(self.device)

    def evaluate(self, index: int, x: Tensor, owner: Tensor, noise: Tensor) -> Branches:
        """The field at grid time ``index`` for every row: one evaluation per row."""
        t = batch_time(self.times[index], x.shape[0])
        velocity, score = self.fields.velocity_and_score(t, x)
        self.evaluations += x.shape[0] * self.fields.evaluations_per_call
        data = conversions.data_from_score(self.fields.interpolant, t, x, score)
        labels = None if self.labels is None else self.labels.to(owner.device)[owner]
        rewards = evaluate_reward(self.reward_function, data, labels)
        return Branches(x, velocity + self.eps[index] * score, data, rewards, owner, noise)

    def advance(self, index: int, branches: Branches) -> Branches:
        """One Euler-Maruyama step from grid time ``index`` to ``index + 1``, each row with its own noise."""
        step = self.times[index + 1] - self.times[index]
        noise = branches.noise[:, index]
        x = branches.x + step * branches.drift + torch.sqrt(2 * self.eps[index] * step) * noise
        return self.evaluate(index + 1, x, branches.owner, branches.noise)

    def clone(self, branches: Branches, rows: Tensor, numbers: Tensor) -> Branches:
        """Copies of ``rows`` that continue with fresh noise: branch numbers ``numbers`` name their generators."""
        chosen = branches.select(rows)
        chosen.noise = self.draw_noise(chosen.owner.tolist(), numbers.tolist())
        return chosen

    @property
    def batch(self) -> int:
        return len(self.seeds)


def _best_per_owner(values: Tensor, owner: Tensor, batch: int) -> Tensor:
    """The row index of the largest value of each owner (batch,)."""
    best = torch.full((batch,), -math.inf, dtype=values.dtype, device=values.device)
    best = best.scatter_reduce(0, owner, values, reduce="amax")
    rows = torch.arange(values.shape[0], device=values.device)
    candidate = torch.where(values == best[owner], rows, torch.full_like(rows, values.shape[0]))
    return torch.full((batch,), values.shape[0], dtype=rows.dtype, device=rows.device).scatter_reduce(
        0, owner, candidate, reduce="amin"
    )


class BestOfN(Search):
    """N = budget // (steps + 1) independent paths per sample; keep the one whose sample has the best reward."""

    def run(self, budget: int) -> tuple[Tensor, Tensor]:
        count = budget // self.path_nfe
        owner = torch.arange(self.batch).repeat_interleave(count)
        branch = torch.arange(count).repeat(self.batch)
        branches = self.start(owner, branch)
        for index in range(self.steps):
            branches = self.advance(index, branches)
        rows = _best_per_owner(branches.reward, branches.owner, self.batch)
        return branches.data[rows], branches.reward[rows]


class SequentialMonteCarlo(Search):
    """Particle filtering on SDE branches toward p(x1) exp(temperature * reward(x1)).

    K = budget // (steps + 1) particles per sample carry log-weights; after each step a particle's weight
    is multiplied by the potential exp(temperature * (r_k - r_{k-1})), r_k the reward of its predicted
    data at step k. The potentials telescope to exp(temperature * r) of the final sample, so the weighted
    particles target the tilted law (exactly, as K grows, for exact fields and small steps). Whenever the
    effective sample size of a sample's particles falls below ``ess_threshold`` * K they are resampled
    (systematically, with the sample's own generator). The output is one particle per sample, drawn by its
    final weight, so that outputs are independent draws of the tilted law.

    With reward = log p(y | x1) and temperature 1 the target is the class-conditional law p(x1 | y).
    """

    def __init__(self, *args, temperature: float = 1.0, ess_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = non_negative_float("temperature", temperature)
        if not 0 <= ess_threshold <= 1:
            raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}")
        self.ess_threshold = float(ess_threshold)
        self.resamplings = 0

    def run(self, budget: int) -> tuple[Tensor, Tensor]:
        count = budget // self.path_nfe
        owner = torch.arange(self.batch).repeat_interleave(count)
        branches = self.start(owner, torch.arange(count).repeat(self.batch))
        resamplers = [branch_generator(seed, 0, "resample") for seed in self.seeds]
        log_weights = torch.zeros(self.batch, count, dtype=torch.float64, device=branches.x.device)
        next_number = [count] * self.batch  # branch numbers used so far per sample: clones get new ones
        self.resamplings = 0
        for index in range(self.steps):
            previous = branches.reward
            branches = self.advance(index, branches)
            log_weights = log_weights + self.temperature * (branches.reward - previous).reshape(self.batch, count)
            if index == self.steps - 1:
                break
            weights = torch.softmax(log_weights, dim=1)
            resample = 1 / weights.pow(2).sum(dim=1) < self.ess_threshold * count
            if not bool(resample.any()):
                continue
            rows = torch.arange(self.batch * count, device=weights.device).reshape(self.batch, count)
            numbers = torch.zeros(self.batch, count, dtype=torch.long)
            for sample in resample.nonzero().flatten().tolist():
                rows[sample] = systematic_resample(weights[sample], resamplers[sample]) + sample * count
                numbers[sample] = torch.arange(next_number[sample], next_number[sample] + count)
                next_number[sample] += count
                self.resamplings += 1
            # Particles of samples that did not resample keep their own noise; resampled ones draw fresh noise.
            moved = resample.repeat_interleave(count)
            clones = self.clone(branches, rows.flatten()[moved], numbers.flatten()[moved.cpu()])
            branches = _replace_rows(
                branches.select(rows.flatten()),
                moved.nonzero().flatten(),
                clones,
                torch.arange(clones.x.shape[0], device=clones.x.device),
            )
            log_weights = torch.where(resample[:, None], torch.zeros_like(log_weights), log_weights)
        weights = torch.softmax(log_weights, dim=1)
        chosen = torch.stack(
            [torch.multinomial(weights[i], 1, generator=resamplers[i]) for i in range(self.batch)]
        ).flatten()
        rows = chosen + count * torch.arange(self.batch, device=chosen.device)
        return branches.data[rows], branches.reward[rows]


def systematic_resample(weights: Tensor, generator: torch.Generator) -> Tensor:
    """K ancestor indices (K,) by systematic resampling of normalised ``weights`` (K,)."""
    count = weights.shape[0]
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    positions = (offset + torch.arange(count, dtype=torch.float64)) / count
    cumulative = torch.cumsum(weights.double().cpu(), 0)
    cumulative[-1] = 1.0
    return torch.searchsorted(cumulative, positions).clamp(max=count - 1).to(weights.device)


class BeamSearch(Search):
    """``beams`` paths per sample; at each step each branches ``width`` times and the best ``beams`` survive.

    A step costs beams * width evaluations; the number of branching steps fits the budget, the remaining
    steps continue every beam alone. Greedy in the reward of the predicted data: a maximiser, not a sampler.
    """

    def __init__(self, *args, beams: int = 2, width: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.beams, self.width = positive_int("beams", beams), positive_int("width", width)

    def run(self, budget: int) -> tuple[Tensor, Tensor]:
        beams, width = self.beams, self.width
        if budget < beams * self.path_nfe:
            raise ValueError(
                f"budget must be >= {beams * self.path_nfe} evaluations per sample for {beams} beams of "
                f"{self.path_nfe}, got {budget}"
            )
        # Branching steps b satisfy beams * (1 + steps) + b * beams * (width - 1) <= budget.
        extra = beams * (width - 1)
        branching = self.steps if extra == 0 else min(self.steps, (budget - beams * self.path_nfe) // extra)
        owner = torch.arange(self.batch).repeat_interleave(beams)
        branches = self.start(owner, torch.arange(beams).repeat(self.batch))
        number = beams
        for index in range(self.steps):
            if index < branching and width > 1:
                rows = torch.arange(branches.x.shape[0]).repeat_interleave(width)
                numbers = number + torch.arange(rows.shape[0]) % (beams * width)
                candidates = self.clone(branches, rows, numbers)
                number += beams * width
                candidates = self.advance(index, candidates)
                keep = _top_per_owner(candidates.reward, self.batch, beams * width, beams)
                branches = candidates.select(keep)
            else:
                branches = self.advance(index, branches)
        rows = _best_per_owner(branches.reward, branches.owner, self.batch)
        return branches.data[rows], branches.reward[rows]


def _top_per_owner(values: Tensor, batch: int, per_owner: int, keep: int) -> Tensor:
    """Row indices of the ``keep`` largest values in each owner's block of ``per_owner`` rows."""
    top = values.reshape(batch, per_owner).topk(keep, dim=1).indices
    return (top + per_owner * torch.arange(batch, device=values.device)[:, None]).flatten()


class RolloverBudgetForcing(Search):
    """One path per sample that, at each step, draws branches until one improves the reward (Kim et al. 2025).

    The budget beyond one path is shared out evenly over the steps; at each step a sample tries new
    branches (one evaluation each) while it has budget left and has not found one whose predicted data
    scores higher than the current state. Budget left unused at a step rolls over to the next. When no
    branch improves, the best branch tried is taken.
    """

    def run(self, budget: int) -> tuple[Tensor, Tensor]:
        batch = self.batch
        branches = self.start(torch.arange(batch), torch.zeros(batch, dtype=torch.long))
        spare = budget - self.path_nfe  # evaluations beyond one branch per step
        allowance = [spare // self.steps + (1 if k < spare % self.steps else 0) for k in range(self.steps)]
        available = torch.zeros(batch, dtype=torch.long)
        number = torch.ones(batch, dtype=torch.long)
        for index in range(self.steps):
            available += allowance[index]
            current = branches.reward
            best = self.advance(index, branches)  # the first branch, always taken at least
            improved = best.reward > current
            # Later branches start from the same state with their own noise (new branch numbers).
            while True:
                active = (~improved.cpu()) & (available > 0)
                if not bool(active.any()):
                    break
                rows = active.nonzero().flatten()
                trial = self.advance(index, self.clone(branches, rows.to(branches.x.device), number[rows]))
                number[rows] += 1
                available[rows] -= 1
                better = trial.reward > best.reward[rows.to(best.reward.device)]
                target = rows.to(best.x.device)
                replace = target[better]
                source = better.nonzero().flatten()
                best = _replace_rows(best, replace, trial, source)
                improved[target] = best.reward[target] > current[target]
            branches = best
        return branches.data, branches.reward


def _replace_rows(branches: Branches, rows: Tensor, other: Branches, source: Tensor) -> Branches:
    """``branches`` with rows ``rows`` taken from ``other``'s rows ``source``."""
    if rows.numel() == 0:
        return branches
    x, drift, data, reward = (value.clone() for value in (branches.x, branches.drift, branches.data, branches.reward))
    x[rows], drift[rows] = other.x[source], other.drift[source]
    data[rows], reward[rows] = other.data[source], other.reward[source]
    noise = branches.noise.clone()
    noise[rows] = other.noise[source]
    return Branches(x, drift, data, reward, branches.owner, noise)


SEARCHES: dict[str, type[Search]] = {
    "best-of-n": BestOfN,
    "smc": SequentialMonteCarlo,
    "beam": BeamSearch,
    "rollover": RolloverBudgetForcing,
}
