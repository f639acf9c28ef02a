"""Sampling from per-sample seeds across ranks: the shared machinery of the evaluation callbacks.

Sample i is drawn from seed ``first_seed + i`` alone (base noise, SDE noise, class label i mod K),
so the set of samples does not depend on the batch size or the number of ranks. Rank r handles
the indices r, r + W, r + 2W, ... (W = world size); ``gather_in_order`` puts them back in index
order after every rank has finished its shard (no collective inside a solve).

Data-dependent couplings (super-resolution, in-painting): sample i starts from held-out image
i mod M of a fixed validation subset (``HeldOutData``), put through the coupling with generators
seeded by seed i alone (one for the degradation, such as the in-painting mask, one for the noise), so
conditional samples are reproducible and sharded exactly like unconditional ones.

Fixed-step samplers give the same samples for any sharding, up to floating-point differences of
batched kernels. An adaptive solver (dopri5) chooses one step size for a whole batch, so its
samples depend on which samples share a batch, to within its tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from si_lightning.callbacks.preemption import stop_if_preempted
from si_lightning.checks import is_integer, is_number
from si_lightning.condition import Condition
from si_lightning.couplings import Batch, ClassLabels, Coupling
from si_lightning.data.base import derived_seed, to_model_input
from si_lightning.data.datasets import fetch
from si_lightning.sampling import Fields, ODESampler, SampleResult, SDESampler, base_noise

Sampler = ODESampler | SDESampler
LabelChoice = str | Sequence[int] | None  # "balanced" (seed mod K, the default), "per-seed", or a list cycled
LABEL_CHOICES = ("balanced", "per-seed")


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


def check_labels(labels: LabelChoice, num_classes: int) -> LabelChoice:
    """The label choice of an evaluation, checked against the data's K classes (at setup)."""
    if labels is None:
        return None
    if isinstance(labels, str):
        if labels not in LABEL_CHOICES:
            raise ValueError(f"labels = {labels!r}: expected {' or '.join(LABEL_CHOICES)} or a list of class labels")
    else:
        values = list(labels)
        if not values or any(not is_integer(v) for v in values):
            raise ValueError(f"labels = {labels!r}: expected a non-empty list of integer class labels")
        bad = [v for v in values if not 0 <= v < num_classes]
        if bad:
            raise ValueError(f"labels = {values!r}: expected class labels in [0, {num_classes - 1}], got {bad}")
    if num_classes <= 0:
        raise ValueError(f"labels = {labels!r} needs class-conditional data (a ClassLabels coupling)")
    return labels


def seed_labels(seeds: Sequence[int], num_classes: int, choice: LabelChoice = None) -> list[int]:
    """The label of each seed: seed mod K (``balanced``), drawn from the seed (``per-seed``), or a list cycled."""
    if choice is None or choice == "balanced":
        return [seed % num_classes for seed in seeds]
    if choice == "per-seed":
        return [
            int(torch.randint(num_classes, (1,), generator=torch.Generator().manual_seed(derived_seed("label", s))))
            for s in seeds
        ]
    values = list(choice)
    return [values[seed % len(values)] for seed in seeds]


def class_labels(
    seeds: Sequence[int], num_classes: int, device: torch.device, choice: LabelChoice = None
) -> Condition | None:
    """Class labels (see ``seed_labels``) for a class-conditional model (K = num_classes > 0), else None."""
    if num_classes <= 0:
        return None
    return Condition(labels=torch.tensor(seed_labels(seeds, num_classes, choice), dtype=torch.long, device=device))


@dataclass
class HeldOutData:
    """A fixed subset of held-out data and the coupling that turns it into sampler inputs.

    x1 (M, *data_shape) in [-1, 1] and labels (M,) (None if unlabelled), on the CPU; sample seed s
    uses item s mod M. ``coupling`` is the data's coupling in its evaluation form (no label drop).
    """

    coupling: Coupling
    x1: Tensor
    labels: Tensor | None

    def inputs(self, seeds: Sequence[int], device: torch.device, draw: int = 0, choice: LabelChoice = None) -> Batch:
        """Batch(x0, x1, cond) for ``seeds``: item s mod M through the coupling, randomness from seed s alone.

        The degradation (in-painting's mask) comes from seed s; the noise zeta from (seed s, ``draw``),
        so draws 0, 1, ... are several base points for one degraded image. With a label ``choice``
        the labels are chosen as for unconditional data; otherwise the items' own labels are used.
        """
        batches = []
        for seed in seeds:
            item = seed % self.x1.shape[0]
            x1 = self.x1[item : item + 1].to(device)
            labels = None
            if isinstance(self.coupling, ClassLabels):
                if choice is not None or self.labels is None:
                    labels = torch.tensor(seed_labels([seed], self.coupling.num_classes, choice), device=device)
                else:
                    labels = self.labels[item : item + 1].to(device)
            batches.append(coupled_input(self.coupling, x1, labels, seed, draw))
        return Batch.concatenate(batches)


def coupling_generators(seed: int, device: torch.device, draw: int = 0) -> tuple[torch.Generator, torch.Generator]:
    """(degradation, noise) generators of sample seed ``seed``: the mask from the seed, zeta from (seed, draw)."""
    degradation = torch.Generator(device=device).manual_seed(derived_seed("coupling", seed))
    noise = torch.Generator(device=device).manual_seed(derived_seed("coupling-noise", seed, draw))
    return degradation, noise


def coupled_input(coupling: Coupling, x1: Tensor, labels: Tensor | None, seed: int, draw: int = 0) -> Batch:
    """One image x1 (1, ...) through ``coupling`` with the randomness of sample seed ``seed`` alone."""
    degradation, noise = coupling_generators(seed, x1.device, draw)
    return coupling(x1, labels, degradation, noise_generator=noise)


def held_out_data(datamodule: Any, count: int, seed: int, split: str = "val") -> HeldOutData:
    """``count`` distinct items of ``split`` (all if fewer), chosen by ``seed``, with the evaluation coupling."""
    dataset = datamodule.dataset(split)
    size = len(dataset)
    indices = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[: min(count, size)].sort().values
    x1, labels, *_ = fetch(dataset, indices.tolist())
    labels = labels if getattr(datamodule, "dataset_classes", 0) else None
    coupling = datamodule.coupling.evaluation_coupling()
    return HeldOutData(coupling, to_model_input(x1).float(), None if labels is None else labels.long())


def sample_from_seeds(
    fields: Fields,
    sampler: Sampler,
    seeds: Sequence[int],
    data_shape: Sequence[int],
    device: torch.device,
    num_classes: int = 0,
    labels: LabelChoice = None,
    data: HeldOutData | None = None,
) -> SampleResult:
    """Samples (len(seeds), *data_shape), each from its own seed; an SDE's noise too.

    With ``data`` (a data-dependent coupling) x0 and cond come from the held-out items
    (``HeldOutData.inputs``); otherwise x0 ~ N(0, I) from the seed and labels by ``labels``.
    """
    if data is not None:
        batch = data.inputs(seeds, device, choice=labels)
        return sample_from_inputs(fields, sampler, seeds, batch.x0, batch.cond)
    x0 = base_noise(list(seeds), tuple(data_shape), device=device)
    return sample_from_inputs(fields, sampler, seeds, x0, class_labels(seeds, num_classes, device, labels))


def sample_from_inputs(
    fields: Fields, sampler: Sampler, seeds: Sequence[int], x0: Tensor, cond: Condition | None
) -> SampleResult:
    """``sampler`` from x0 (len(seeds), ...) with condition ``cond``; an SDE's noise from the seeds."""
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


def is_data_dependent(trainer: pl.Trainer) -> bool:
    """Whether the datamodule's coupling draws x0 from data (super-resolution, in-painting)."""
    return getattr(getattr(trainer, "datamodule", None), "gaussian_base", True) is False


def evaluation_data(trainer: pl.Trainer, count: int, seed: int, split: str = "val") -> HeldOutData | None:
    """The held-out items a data-dependent coupling makes sampler inputs from; None for a Gaussian base."""
    if not is_data_dependent(trainer):
        return None
    datamodule = trainer.datamodule
    if not hasattr(datamodule, "dataset"):
        raise ValueError("conditional sampling from data needs a datamodule with dataset(split) for held-out images")
    return held_out_data(datamodule, count, seed, split)


def check_guidance_scales(
    trainer: pl.Trainer, guidance_scale: float | None, guidance_scales: Sequence[float] | None
) -> list[float | None]:
    """The guidance scales to evaluate ([None]: no guidance), refused where the model cannot be guided.

    Guidance needs the unconditional field, learnt only if labels were dropped in training.
    """
    if guidance_scale is not None and guidance_scales is not None:
        raise ValueError(
            f"guidance_scales = {list(guidance_scales)!r}: give guidance_scale or guidance_scales, not both"
        )
    scales: list[float | None] = [guidance_scale] if guidance_scales is None else list(guidance_scales)
    if not scales:
        raise ValueError("guidance_scales = []: expected at least one scale (or null for no guidance)")
    for scale in scales:
        if scale is not None and not is_number(scale):
            raise ValueError(f"guidance_scales = {scales!r}: expected numbers")
        check_guidance(scale, num_classes_of(trainer))
        coupling = getattr(getattr(trainer, "datamodule", None), "coupling", None)
        # w = 1 is the conditional field alone (no null branch), so it needs no label drop.
        if scale not in (None, 1.0) and isinstance(coupling, ClassLabels) and not coupling.supports_guidance:
            raise ValueError(
                f"guidance_scale = {scale!r} needs a model trained with label drop; the data's ClassLabels has "
                "drop_probability = 0.0 (set it > 0, e.g. 0.1, or guidance_scale to null)"
            )
    return scales


def guided_name(name: str, scale: float | None, several: bool) -> str:
    """The sampler name in keys and paths: ``{name}-cfg{w}`` when several guidance scales are evaluated."""
    return f"{name}-cfg{scale:g}" if several and scale is not None else name


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
