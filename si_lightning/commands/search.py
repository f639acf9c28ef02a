"""``--search best-of-n|smc|beam|rbf --reward NAME --budget NFE``: inference-time search from ``sample``.

Each output sample is searched for alone (``si_lightning.sampling.search``): its base noise, Brownian
increments and resampling draws come from generators seeded by its seed, so the chosen samples depend
only on the seeds and the settings, not on the batch or the number of processes. The branches follow the
``--sampler``'s steps, grid and diffusion (an ODE sampler: diffusion scale 0, branches differ only in
their base noise; an SDE preset such as ``sde-euler-sigma-20`` lets SMC, beam search and rollover
budget forcing branch). ``--budget`` is the evaluations per output sample (at least steps + 1). A
class-conditional model is searched on its unconditional branch (the null label it was trained with
by label dropout): the reward steers it, not a label, so ``--labels`` and ``--guidance-scale`` are refused.

Rewards: ``digits-class:K`` is log p(K | x) of the shipped digits classifier
(``si_lightning.metrics.digits``) on the predicted data in [-1, 1]; ``module:factory`` names a callable
returning a function images (n, ...) -> rewards (n,). The reward of each chosen sample goes to
``rewards.csv`` (seed, reward) and the NFE spent to ``record.json``.
"""

from __future__ import annotations

import csv
import importlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from si_lightning.errors import ConfigurationError
from si_lightning.files import write_atomically
from si_lightning.sampling import GRIDS
from si_lightning.sampling.search import BeamSearch, BestOfN, RolloverBudgetForcing, Search, SequentialMonteCarlo

SEARCHES: dict[str, type[Search]] = {
    "best-of-n": BestOfN,
    "smc": SequentialMonteCarlo,
    "beam": BeamSearch,
    "rbf": RolloverBudgetForcing,
}
REWARD_EXPECTED = "digits-class:K (K in 0..9) or module:factory (a callable returning images -> rewards)"


@dataclass(frozen=True)
class SearchSpec:
    """A search as it is recorded (picklable: every process builds its own reward)."""

    method: str
    reward: str
    budget: int
    temperature: float
    steps: int
    diffusion: str
    scale: float
    grid: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def build(self) -> Search:
        common = {"steps": self.steps, "diffusion": self.diffusion, "scale": self.scale, "grid": self.grid}
        if self.method == "smc":
            return SequentialMonteCarlo(**common, temperature=self.temperature)
        return SEARCHES[self.method](**common)


class DigitsClassReward:
    """log p(K | x) of the shipped digits classifier for images x (n, C, H, W) in [-1, 1] -> (n,)."""

    def __init__(self, label: int) -> None:
        from si_lightning.metrics.digits import DIGITS_SIZE, load_digits_classifier

        self.label, self.size = label, DIGITS_SIZE
        self.classifier = load_digits_classifier()

    def __call__(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        grayscale = images.float().clamp(-1, 1).mean(dim=1, keepdim=True)
        if grayscale.shape[-2:] != (self.size, self.size):
            grayscale = F.interpolate(grayscale, size=(self.size, self.size), mode="bilinear", align_corners=False)
        classifier = self.classifier.to(images.device)
        return torch.log_softmax(classifier(grayscale), dim=1)[:, self.label].double()


class IgnoringLabels:
    """A user's reward images -> rewards, called with the labels the search passes for conditional models."""

    def __init__(self, function: Any) -> None:
        self.function = function

    def __call__(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.function(images)


def build_reward(name: str, key: str = "--reward") -> Any:
    """The reward function named ``name``; a bad name is a ConfigurationError."""
    prefix, _, rest = name.partition(":")
    if prefix == "digits-class":
        if not rest.isdigit() or not 0 <= int(rest) <= 9:
            raise ConfigurationError(key, name, REWARD_EXPECTED)
        return DigitsClassReward(int(rest))
    if not prefix or not rest:
        raise ConfigurationError(key, name, REWARD_EXPECTED)
    try:
        factory = getattr(importlib.import_module(prefix), rest)
        function = factory()
    except (ImportError, AttributeError, ValueError, TypeError) as error:
        raise ConfigurationError(key, name, f"{REWARD_EXPECTED}; {type(error).__name__}: {error}") from None
    if not callable(function):
        raise ConfigurationError(key, name, f"{REWARD_EXPECTED}; {rest}() did not return a callable")
    return IgnoringLabels(function)


def search_spec(
    method: str | None,
    reward: str | None,
    budget: int | None,
    temperature: float,
    sampler_class: str,
    sampler_args: dict[str, Any],
) -> SearchSpec | None:
    """The checked search of the command line (None without ``--search``), refused before any model is read."""
    if method is None:
        for key, value in (("--reward", reward), ("--budget", budget)):
            if value is not None:
                raise ConfigurationError(key, value, "unset without --search (best-of-n, smc, beam, rbf)")
        return None
    if method not in SEARCHES:
        raise ConfigurationError("--search", method, f"one of {', '.join(SEARCHES)}")
    if reward is None:
        raise ConfigurationError("--reward", None, f"a reward for --search: {REWARD_EXPECTED}")
    build_reward(reward)
    if "steps" not in sampler_args:
        raise ConfigurationError("--sampler", sampler_args, "a fixed-step sampler for --search (its steps)")
    grid = sampler_args.get("grid", "uniform")
    if grid not in GRIDS:
        raise ConfigurationError("--sampler", grid, f"a grid of {', '.join(GRIDS)} for --search")
    steps = int(sampler_args["steps"])
    if budget is None or budget < steps + 1:
        raise ConfigurationError("--budget", budget, f"an integer >= {steps + 1} (one path of {steps} steps)")
    if not temperature >= 0:
        raise ConfigurationError("--search-temperature", temperature, "a number >= 0")
    is_sde = sampler_class.endswith("SDESampler")
    return SearchSpec(
        method=method,
        reward=reward,
        budget=int(budget),
        temperature=float(temperature),
        steps=steps,
        diffusion=str(sampler_args.get("diffusion", "sigma")) if is_sde else "sigma",
        scale=float(sampler_args.get("scale", 1.0)) if is_sde else 0.0,
        grid=grid,
    )


def rewards_path(out: Path, shard: int) -> Path:
    return out / "shards" / f"rewards-{shard:06d}.pt"


def write_rewards_shard(out: Path, shard: int, seeds: list[int], rewards: Tensor) -> None:
    path = rewards_path(out, shard)
    buffer = io.BytesIO()
    torch.save({"seeds": torch.tensor(seeds), "rewards": rewards.double().cpu()}, buffer)
    write_atomically(path, buffer.getvalue())


def assemble_rewards(out: Path, num_shards: int, keep_shards: bool) -> float:
    """``rewards.csv`` (seed, reward) from the reward shards, in seed order; returns the mean reward."""
    rows = []
    for shard in range(num_shards):
        content = torch.load(rewards_path(out, shard), weights_only=True)
        rows += list(zip(content["seeds"].tolist(), content["rewards"].tolist(), strict=True))
        if not keep_shards:
            rewards_path(out, shard).unlink()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["seed", "reward"])
    writer.writerows([seed, repr(value)] for seed, value in rows)
    write_atomically(out / "rewards.csv", buffer.getvalue().encode())
    return sum(value for _, value in rows) / len(rows)
