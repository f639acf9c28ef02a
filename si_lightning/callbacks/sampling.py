"""SamplingCallback: fixed-seed samples from each configured sampler, saved and logged as pictures.

Images (C, H, W) become a PNG grid; 2-D points a scatter plot over a density histogram of the
data. Files: ``{run directory}/samples/{sampler name}/step-{global step}.png`` (rank 0), the same
picture logged under ``samples/{sampler name}`` to every logger that shows images.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from si_lightning.callbacks.artifacts import image_grid, publish_image, run_directory, scatter_image
from si_lightning.callbacks.generation import (
    Sampler,
    batched,
    check_gaussian_base,
    check_guidance,
    check_samplers,
    data_shape_of,
    evaluation_mode,
    gather_in_order,
    local_indices,
    num_classes_of,
    positive_count,
    sample_from_seeds,
)
from si_lightning.callbacks.schedule import PeriodicEvaluation
from si_lightning.sampling import ODESampler, SDESampler


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

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the data can be pictured; draw the reference points of a 2-D scatter plot."""
        check_gaussian_base(trainer, type(self).__name__)
        check_guidance(self.guidance_scale, num_classes_of(trainer))
        self.data_shape = data_shape_of(trainer, pl_module)
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

    def generate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, sampler: Sampler) -> Tensor:
        """All ``num_samples`` samples (num_samples, *data_shape) in seed order, on every rank."""
        indices = local_indices(trainer, self.num_samples)
        num_classes = num_classes_of(trainer)
        chunks = []
        with evaluation_mode(pl_module, self.ema):
            fields = pl_module.fields(ema=self.ema, guidance_scale=self.guidance_scale)
            for batch in batched(indices, self.batch_size, trainer):
                seeds = [self.first_seed + index for index in batch]
                result = sample_from_seeds(fields, sampler, seeds, self.data_shape, pl_module.device, num_classes)
                chunks.append(result.x)
        local = torch.cat(chunks) if chunks else torch.zeros((0, *self.data_shape), device=pl_module.device)
        return gather_in_order(trainer, local, self.num_samples)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        directory = run_directory(trainer)
        for name, sampler in self.samplers.items():
            samples = self.generate(trainer, pl_module, sampler)
            if trainer.is_global_zero:
                publish_image(trainer, directory, f"samples/{name}", self.picture(samples))
