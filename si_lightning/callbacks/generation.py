"""Sampling from per-sample seeds across ranks: the shared machinery of the evaluation callbacks.

Sample i is drawn from seed ``first_seed + i`` alone (base noise, SDE noise, class label i mod K),
so the set of samples does not depend on the batch size or the number of ranks. Rank r handles
the indices r, r + W, r + 2W, ... (W = world size); ``gather_in_order`` puts them back in index
order after every rank has finished its shard (no collective inside a solve).

Fixed-step samplers give the same samples for any sharding, up to floating-point differences of
batched kernels. An adaptive solver (dopri5) chooses one step size for a whole batch, so its
samples depend on which samples share a batch, to within its tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import lightning.pytorch as pl
import torch
from torch import Tensor

from si_lightning.callbacks.preemption import stop_if_preempted
from si_lightning.condition import Condition
from si_lightning.sampling import Fields, ODESampler, SampleResult, SDESampler, base_noise

Sampler = ODESampler | SDESampler


def default_samplers() -> dict[str, Sampler]:
    """A cheap probability-flow ODE and an SDE with the KL-optimal (sbdm) diffusion."""
    return {
        "ode-heun": ODESampler(method="heun", steps=50),
        "sde-euler-sbdm": SDESampler(steps=100, method="euler-maruyama", diffusion="sbdm"),
    }


def check_samplers(samplers: dict[str, Sampler] | None) -> dict[str, Sampler]:
    """``samplers`` (default ``default_samplers()``) with names usable in metric keys and paths."""
    samplers = default_samplers() if samplers is None else dict(samplers)
    if not samplers:
        raise ValueError("samplers must name at least one sampler, e.g. {'ode-heun': ODESampler('heun', steps=50)}")
    for name, sampler in samplers.items():
        if not isinstance(name, str) or not name or "/" in name or name.strip() != name:
            raise ValueError(f"sampler names must be non-empty strings without '/' or spaces; got {name!r}")
        if not isinstance(sampler, (ODESampler, SDESampler)):
            raise ValueError(f"sampler {name!r} must be an ODESampler or SDESampler; got {type(sampler).__name__}")
    return samplers


def positive_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def rank_indices(count: int, rank: int, world_size: int) -> list[int]:
    """The sample indices of ``rank``: rank, rank + W, ... below ``count``."""
    return list(range(rank, count, world_size))


def local_indices(trainer: pl.Trainer, count: int) -> list[int]:
    """This rank's sample indices (``rank_indices`` of the trainer's rank and world size)."""
    return rank_indices(count, trainer.global_rank, trainer.world_size)


def batched(items: Sequence[int], batch_size: int, trainer: pl.Trainer | None = None) -> Iterator[list[int]]:
    """``items`` in batches; with a trainer, a run asked to stop (SIGTERM) stops before the next batch."""
    for start in range(0, len(items), batch_size):
        stop_if_preempted(trainer)
        yield list(items[start : start + batch_size])


def gather_in_order(trainer: pl.Trainer, local: Tensor, count: int) -> Tensor:
    """(count, ...) on every rank from each rank's ``local`` (its ``rank_indices`` rows, in order).

    Shards differ in length by at most one; each is padded to ceil(count / W) rows so every rank
    sends the same shape, and the padding (which lands after index count - 1) is dropped.
    """
    world_size = trainer.world_size
    if world_size == 1:
        return local
    length = -(-count // world_size)
    padded = local.new_zeros((length, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = trainer.strategy.all_gather(padded)  # (W, length, ...): row j of rank r is index j W + r
    return gathered.transpose(0, 1).reshape(world_size * length, *local.shape[1:])[:count]


def evaluation_modules(pl_module: pl.LightningModule, ema: bool) -> list[torch.nn.Module]:
    """The modules whose weights an evaluation uses: the module and the backbone that holds the weights now."""
    return [pl_module, pl_module.weights_backbone(ema)]


@contextmanager
def evaluation_mode(pl_module: pl.LightningModule, ema: bool) -> Iterator[None]:
    """Evaluation mode (dropout off) and no autograd for the duration; every submodule's mode restored after."""
    modes = [(module, module.training) for root in evaluation_modules(pl_module, ema) for module in root.modules()]
    try:
        for module, _ in modes:
            module.training = False
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def class_labels(seeds: Sequence[int], num_classes: int, device: torch.device) -> Condition | None:
    """Label seed mod K for each sample of a class-conditional model (K = num_classes > 0), else None."""
    if num_classes <= 0:
        return None
    return Condition(labels=torch.tensor([seed % num_classes for seed in seeds], dtype=torch.long, device=device))


def sample_from_seeds(
    fields: Fields,
    sampler: Sampler,
    seeds: Sequence[int],
    data_shape: Sequence[int],
    device: torch.device,
    num_classes: int = 0,
) -> SampleResult:
    """Samples (len(seeds), *data_shape), each from its own seed; an SDE's noise too."""
    x0 = base_noise(list(seeds), tuple(data_shape), device=device)
    cond = class_labels(seeds, num_classes, device)
    if isinstance(sampler, SDESampler):
        return sampler.sample(fields, x0, cond, seeds=list(seeds))
    return sampler.sample(fields, x0, cond)


def data_shape_of(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[int, ...]:
    """The data's shape (channels, ...) from the datamodule, else from the backbone."""
    shape = getattr(getattr(trainer, "datamodule", None), "data_shape", None)
    shape = shape or getattr(getattr(pl_module, "backbone", None), "data_shape", None)
    if not shape:
        raise ValueError("cannot tell the data shape: neither the datamodule nor the backbone has data_shape")
    return tuple(int(size) for size in shape)


def num_classes_of(trainer: pl.Trainer) -> int:
    """Class labels of the datamodule's coupling (0: unconditional)."""
    return int(getattr(getattr(trainer, "datamodule", None), "num_classes", 0) or 0)


def check_gaussian_base(trainer: pl.Trainer, who: str) -> None:
    """Sampling from seeds draws x0 ~ N(0, I): refuse a data-dependent coupling (its x0 comes from data)."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and getattr(datamodule, "gaussian_base", True) is False:
        coupling = getattr(datamodule, "coupling", None)
        raise ValueError(
            f"{who} draws x0 ~ N(0, I) from per-sample seeds, but the data's coupling {coupling!r} has a "
            "data-dependent base; it supports independent and class-label couplings only"
        )


def check_guidance(guidance_scale: float | None, num_classes: int) -> None:
    """Classifier-free guidance needs class labels: refuse a guidance scale for unconditional data."""
    if guidance_scale is not None and num_classes <= 0:
        raise ValueError(
            f"guidance_scale = {guidance_scale!r} needs class-conditional data (a ClassLabels coupling); "
            "the data has no class labels: set guidance_scale to null"
        )


def sample_with_labels(
    fields: Fields,
    sampler: Sampler,
    seeds: Sequence[int],
    data_shape: Sequence[int],
    device: torch.device,
    labels: Tensor | None = None,
) -> SampleResult:
    """Samples (len(seeds), *data_shape) from per-sample seeds, with the given class ``labels`` (len(seeds),).

    ``labels`` None samples unconditionally; ``class_labels`` gives the default labels (seed mod K).
    """
    x0 = base_noise(list(seeds), tuple(data_shape), device=device)
    cond = None if labels is None else Condition(labels=labels.to(device=device, dtype=torch.long))
    if isinstance(sampler, SDESampler):
        return sampler.sample(fields, x0, cond, seeds=list(seeds))
    return sampler.sample(fields, x0, cond)
