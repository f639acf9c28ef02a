"""The sampling choices of ``sample`` beyond the sampler: ``--path``, ``--grid``/``--pilot`` and ``--search``.

``request`` checks the command line before the checkpoint is read; ``resolve`` checks what depends on
the model (a path it converts to) and fits a requested grid (or takes the one a previous session of the
same command recorded). ``SamplingChoices`` is picklable and every process applies it alike: the fields
along the path, the sampler on the fitted grid, a batch by search or by the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor

from si_lightning.callbacks.generation import sample_with_labels
from si_lightning.commands.fitted import FITTED_GRIDS, build_sampler, check_grid_request, fit_grid, recorded_grid
from si_lightning.commands.paths import along_path, check_path, parse_path
from si_lightning.commands.samplers import SamplerSpec
from si_lightning.commands.search import (
    SEARCHES,
    SearchSpec,
    assemble_rewards,
    build_reward,
    search_spec,
    write_rewards_shard,
)
from si_lightning.condition import Condition
from si_lightning.errors import ConfigurationError
from si_lightning.sampling.fields import Fields
from si_lightning.sampling.seeds import base_noise


def add_choice_arguments(parser: Any) -> None:
    """``--path``, ``--grid``, ``--pilot``, ``--search``, ``--reward``, ``--budget``, ``--search-temperature``."""
    parser.add_argument(
        "--path",
        type=str | None,
        help="another interpolant, SCHEDULE[:GAMMA]; multimarginal models: edge or through-base",
    )
    parser.add_argument("--grid", type=str | None, help=f"time grid fitted on a pilot batch: {', '.join(FITTED_GRIDS)}")
    parser.add_argument("--pilot", type=PositiveInt, default=64, help="with --grid: pilot samples (seeds 0 .. N-1)")
    parser.add_argument("--search", type=str | None, help=f"inference-time search: {', '.join(SEARCHES)}")
    parser.add_argument("--reward", type=str | None, help="with --search: digits-class:K or module:factory")
    parser.add_argument("--budget", type=int | None, help="with --search: network evaluations per sample")
    parser.add_argument("--search-temperature", type=float, default=1.0, help="with --search smc: reward weight")


@dataclass(frozen=True)
class SamplingChoices:
    """path: {"schedule", "gamma"} or None; grid: the request, then the recorded fitted grid; search: or None."""

    path: dict[str, Any] | None = None
    path_text: str | None = None
    grid: str | None = None
    pilot: int = 64
    fitted: dict[str, Any] | None = None
    search: SearchSpec | None = None

    def settings(self) -> dict[str, Any]:
        """The record.json settings entries of the choices made (none for a plain run)."""
        entries: dict[str, Any] = {}
        if self.path is not None:
            entries["path"] = self.path
        if self.fitted is not None:
            entries["grid"] = self.fitted
        if self.search is not None:
            entries["search"] = self.search.as_dict()
        return entries

    def fields(self, fields: Fields) -> Fields:
        return along_path(fields, self.path)

    def sampler(self, spec: SamplerSpec) -> Any:
        return spec.build() if self.fitted is None else build_sampler(spec.init_args, self.fitted)

    def batch(
        self,
        fields: Fields,
        sampler: Any,
        search: Any,
        reward: Any,
        seeds: list[int],
        data_shape: tuple[int, ...],
        device: torch.device,
        labels: Tensor | None,
    ) -> tuple[Tensor, float, Tensor | None]:
        """(samples (n, ...), NFE per sample, rewards (n,) or None) of one batch."""
        if search is None:
            result = sample_with_labels(fields, sampler, seeds, data_shape, device, labels)
            return result.x, float(result.nfe), None
        found = search.search(fields, reward, seeds, data_shape, self.search.budget, labels=labels, device=device)
        return found.x, float(found.nfe), found.reward

    def searcher(self) -> tuple[Any, Any]:
        """(search, reward) of this process, or (None, None)."""
        if self.search is None:
            return None, None
        return self.search.build(), build_reward(self.search.reward)

    def write_rewards(self, out: Path, shard: int, seeds: list[int], rewards: list[Tensor]) -> None:
        """The reward shard, written before the sample shard (the sample shard marks the shard done)."""
        if self.search is not None:
            write_rewards_shard(out, shard, seeds, torch.cat(rewards))

    def summary(self, out: Path, num_shards: int, keep_shards: bool) -> dict[str, Any]:
        """record.json entries of a finished run: the search's mean reward (``rewards.csv`` written here)."""
        if self.search is None:
            return {}
        return {"search": {**self.search.as_dict(), "mean_reward": assemble_rewards(out, num_shards, keep_shards)}}


def request(options: Any, spec: SamplerSpec) -> SamplingChoices:
    """The choices of the command line, checked before the checkpoint is read."""
    check_grid_request(options.grid, options.pilot, spec.init_args, spec.class_path)
    for key, value in (("--labels", options.labels), ("--guidance-scale", options.guidance_scale)):
        if options.search is not None and value is not None:
            expected = "unset with --search: a class-conditional model is searched on its unconditional branch"
            raise ConfigurationError(key, value, expected)
    if options.grid is not None and options.search is not None:
        raise ConfigurationError("--grid", options.grid, "unset with --search (the search takes the sampler's grid)")
    return SamplingChoices(
        path=parse_path(options.path),
        path_text=options.path,
        grid=options.grid,
        pilot=options.pilot,
        search=search_spec(
            options.search, options.reward, options.budget, options.search_temperature, spec.class_path, spec.init_args
        ),
    )


def resolve(
    choices: SamplingChoices,
    module: Any,
    spec: SamplerSpec,
    data_shape: tuple[int, ...],
    num_classes: int,
    guidance_scale: float | None,
    restoring: bool,
    latent: bool,
    previous_settings: dict[str, Any] | None,
    plain_settings: dict[str, Any],
) -> SamplingChoices:
    """Check the choices against the model; fit the grid (or reuse the one recorded in ``--out``)."""
    if restoring and (choices.path or choices.grid or choices.search):
        key, value = next(
            (key, value)
            for key, value in (("--path", choices.path_text), ("--grid", choices.grid), ("--search", choices.search))
            if value
        )
        shown = value.method if isinstance(value, SearchSpec) else value
        raise ConfigurationError(key, shown, "unset for a model that restores --inputs (a data-dependent coupling)")
    if latent and choices.search is not None:
        raise ConfigurationError("--search", choices.search.method, "unset for a latent model (rewards read pixels)")
    fields = module.fields(ema=True, guidance_scale=guidance_scale)
    check_path(fields, choices.path, choices.path_text)
    if choices.grid is None:
        return choices
    previous = previous_settings or {}
    same_run = {key: value for key, value in previous.items() if key != "grid"} == plain_settings
    fitted = recorded_grid(choices.grid, choices.pilot, previous.get("grid")) if same_run else None
    if fitted is None:
        seeds = list(range(choices.pilot))
        x0 = base_noise(seeds, tuple(data_shape), device=torch.device("cpu"))
        labels = torch.tensor([seed % num_classes for seed in seeds]) if num_classes > 0 else None
        cond = None if labels is None else Condition(labels=labels)
        method = spec.init_args.get("method", "heun")
        fitted = fit_grid(choices.fields(fields), choices.grid, choices.pilot, method, x0, cond)
    return replace(choices, fitted=fitted)
