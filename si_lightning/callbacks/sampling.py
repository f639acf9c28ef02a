"""SamplingCallback: fixed-seed samples from each configured sampler, saved and logged as pictures.

Images (C, H, W) become a PNG grid; 2-D points a scatter plot over a density histogram of the
data. Files: ``{run directory}/samples/{sampler name}/step-{global step}.png`` (rank 0), the same
picture logged under ``samples/{sampler name}`` to every logger that shows images.

Class-conditional models: the labels to draw (``labels``: balanced, per-seed or a list) and one or
several guidance scales (each its own picture, ``{sampler}-cfg{w}``), optionally on a t-interval only.
Data-dependent couplings: sample i starts from held-out image i mod M through the coupling (see
``HeldOutData``).
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from si_lightning.callbacks.artifacts import image_grid, publish_image, run_directory, scatter_image
from si_lightning.callbacks.generation import (
    HeldOutData,
    LabelChoice,
    Sampler,
    batched,
    check_guidance_scales,
    check_labels,
    check_samplers,
    data_shape_of,
    evaluation_data,
    evaluation_mode,
    gather_in_order,
    guided_name,
    local_indices,
    num_classes_of,
    sample_from_seeds,
)
from si_lightning.callbacks.schedule import PeriodicEvaluation
from si_lightning.checks import positive_count
from si_lightning.sampling import ODESampler, SDESampler
from si_lightning.sampling.guidance import check_guidance_interval


class SamplingCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` steps and at the end: ``num_samples`` samples per sampler, with EMA weights.

    Args:
        num_samples: samples per picture, from seeds first_seed .. first_seed + num_samples - 1.
        every_n_steps: sample after every N-th optimiser step (None: only at the end).
        at_end: sample when fit ends.
        samplers: {name: ODESampler | SDESampler}; the name appears in paths and logger keys.
            Default: ``default_samplers()`` (Heun ODE, Euler-Maruyama SDE with sbdm diffusion).
        batch_size: samples per sampler call on each rank.
        columns: images per grid row (default: ceil(sqrt(num_samples))).
        first_seed: the seed of sample 0.
        guidance_scale: classifier-free guidance w for class-conditional models (None: labels as given).
        ema: use the EMA weights (the raw weights if False).
        reference_samples: data points under a 2-D scatter plot.
        labels: the class labels to draw: ``balanced`` (seed mod K, the default), ``per-seed`` (drawn
            from each seed) or a list cycled over the seeds ([3]: only threes).
        guidance_scales: several guidance scales, one picture each (instead of ``guidance_scale``).
        guidance_interval: [t_low, t_high]: guide only for t in it (None: every t).
        split: the held-out split a data-dependent coupling's inputs come from.
        data_seed: chooses the held-out images.
    """

    def __init__(
        self,
        num_samples: int = 64,
        every_n_steps: int | None = 1000,
        at_end: bool = True,
        samplers: dict[str, ODESampler | SDESampler] | None = None,
        batch_size: int = 64,
        columns: int | None = None,
        first_seed: int = 0,
        guidance_scale: float | None = None,
        ema: bool = True,
        reference_samples: int = 2000,
        labels: LabelChoice = None,
        guidance_scales: list[float] | None = None,
        guidance_interval: list[float] | None = None,
        split: str = "val",
        data_seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps, at_end)
        self.num_samples = positive_count("num_samples", num_samples)
        self.samplers: dict[str, Sampler] = check_samplers(samplers)
        self.batch_size = positive_count("batch_size", batch_size)
        self.columns = math.ceil(math.sqrt(num_samples)) if columns is None else positive_count("columns", columns)
        self.first_seed = positive_count("first_seed", first_seed, minimum=0)
        self.guidance_scale = guidance_scale
        self.ema = bool(ema)
        self.reference_samples = positive_count("reference_samples", reference_samples)
        self.data_shape: tuple[int, ...] = ()
        self.reference: Tensor | None = None
        self.labels = labels
        self.guidance_scales = guidance_scales
        self.guidance_interval = check_guidance_interval(guidance_interval)
        self.split, self.data_seed = split, positive_count("data_seed", data_seed, minimum=0)
        self.scales: list[float | None] = [guidance_scale]
        self.data: HeldOutData | None = None

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the data can be pictured; draw the reference points of a 2-D scatter plot."""
        self.scales = check_guidance_scales(trainer, self.guidance_scale, self.guidance_scales)
        check_labels(self.labels, num_classes_of(trainer))
        self.data_shape = data_shape_of(trainer, pl_module)
        self.data = evaluation_data(trainer, self.num_samples, self.data_seed, self.split)
        if self.data_shape == (2,):
            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "real_samples"):
                raise ValueError("a 2-D scatter plot needs a datamodule with real_samples() for the data density")
            generator = torch.Generator().manual_seed(self.first_seed)
            self.reference = datamodule.real_samples(self.reference_samples, generator).cpu()
        elif len(self.data_shape) != 3 or self.data_shape[0] not in (1, 3):
            raise ValueError(
                "SamplingCallback pictures images (1 or 3, H, W) or 2-D points (2,); "
                f"the data has shape {self.data_shape}"
            )

    def picture(self, samples: Tensor) -> np.ndarray:
        """uint8 (H, W, C): a grid of images, or a scatter plot of 2-D points over the data density."""
        if self.reference is not None:
            return scatter_image(samples, self.reference)
        return image_grid(samples, self.columns)

    def generate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, sampler: Sampler, guidance_scale: float | None = None
    ) -> Tensor:
        """All ``num_samples`` samples (num_samples, *data_shape) in seed order, on every rank.

        ``guidance_scale`` defaults to the first configured scale.
        """
        scale = self.scales[0] if guidance_scale is None else guidance_scale
        indices = local_indices(trainer, self.num_samples)
        num_classes = num_classes_of(trainer)
        chunks = []
        with evaluation_mode(pl_module, self.ema):
            fields = pl_module.fields(ema=self.ema, guidance_scale=scale, guidance_interval=self.guidance_interval)
            for batch in batched(indices, self.batch_size, trainer):
                seeds = [self.first_seed + index for index in batch]
                result = sample_from_seeds(
                    fields, sampler, seeds, self.data_shape, pl_module.device, num_classes, self.labels, self.data
                )
                chunks.append(result.x)
        local = torch.cat(chunks) if chunks else torch.zeros((0, *self.data_shape), device=pl_module.device)
        return gather_in_order(trainer, local, self.num_samples)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        directory = run_directory(trainer)
        for name, sampler in self.samplers.items():
            for scale in self.scales:
                samples = self.generate(trainer, pl_module, sampler, scale)
                if trainer.is_global_zero:
                    key = f"samples/{guided_name(name, scale, len(self.scales) > 1)}"
                    publish_image(trainer, directory, key, self.picture(samples))
