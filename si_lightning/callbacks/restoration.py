"""RestorationCallback: how well a data-dependent coupling's model restores held-out images.

For M fixed held-out images (``HeldOutData``: image i through the coupling with randomness from
seed first_seed + i alone), every rank restores its shard with each sampler, and the callback reports

- PSNR and SSIM (torchmetrics, data range 2 for [-1, 1] images) of the restorations against the
  truth, each the mean over images of the per-image value;
- the same for the plain baselines of the coupling (``BASELINES``): bicubic up-sampling for
  super-resolution; for in-painting the noise-filled input x0 and the per-pixel mean of the training
  images in the hole; a Gaussian filter for denoising, and for rain also the training mean on the
  streaks; the blurred input itself for deblurring. In-painting's PSNR is over hidden pixels only
  (``psnr-hidden``), where the restoration does its work (kept pixels are exact by construction);
- nearest-neighbour baselines (``si_lightning.callbacks.neighbours``): kNN-1 copies the training image
  closest on the observed pixels (or low-resolution image), kNN-5 averages the 5 closest;
- with ``posterior_draws`` K > 1, the same scores for the per-pixel mean of K draws of each image
  (draw k: the image's degradation, the noise of draw k), keyed ``{sampler}-mean{K}``;
- the Fréchet distance of restored versus real images in the features of ``extractor``
  (``fid-digits`` for the shipped digits classifier, ``fid`` for InceptionV3);
- a picture, one row per image: degraded input | k restorations (k noise draws) | ground truth.

Keys name the metric, the sampler with its NFE per sample and N: ``psnr/ode-heun-nfe39/n256``,
``ssim/...``, ``fid-digits/...``; baselines ``psnr/bicubic/n256``. Records go to every logger and
to ``evaluation/metrics.jsonl``; the picture to ``restoration/{sampler}/step-*.png``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from si_lightning.callbacks.artifacts import image_grid, publish_image, publish_metrics, run_directory
from si_lightning.callbacks.generation import (
    HeldOutData,
    Sampler,
    batched,
    check_guidance_scales,
    check_samplers,
    evaluation_mode,
    gather_in_order,
    is_data_dependent,
    local_indices,
    sample_from_inputs,
)
from si_lightning.callbacks.generation import held_out_data as load_held_out
from si_lightning.callbacks.neighbours import neighbour_baselines
from si_lightning.callbacks.schedule import PeriodicEvaluation
from si_lightning.checks import positive_count
from si_lightning.couplings import (
    Batch,
    Blur,
    ClassLabels,
    Coupling,
    Denoising,
    Inpainting,
    Rain,
    SuperResolution,
    gaussian_filter,
)
from si_lightning.metrics import build_feature_extractor, extract_features, frechet_distance, metric_name
from si_lightning.sampling import ODESampler, SDESampler
from si_lightning.seeding import derived_seed

DATA_RANGE = 2.0  # images live in [-1, 1]


def psnr_per_image(predictions: Tensor, truth: Tensor, region: Tensor | None = None) -> Tensor:
    """PSNR in dB of each image (B,), over the pixels where ``region`` (B, 1 or C, ...) is True (all if None).

    Images whose region is empty are left out (NaN), so they do not count in the mean.
    """
    values = []
    for index in range(truth.shape[0]):
        prediction, target = predictions[index], truth[index]
        if region is not None:
            inside = region[index].expand_as(target)
            if not bool(inside.any()):
                values.append(torch.tensor(float("nan")))
                continue
            prediction, target = prediction[inside], target[inside]
        values.append(peak_signal_noise_ratio(prediction, target, data_range=DATA_RANGE).cpu())
    return torch.stack(values).double()


def ssim_per_image(predictions: Tensor, truth: Tensor) -> Tensor:
    """SSIM of each image (B,): a Gaussian window of sigma 1.5 and the largest odd size <= min(11, H, W)."""
    size = min(11, *truth.shape[-2:])
    size -= 1 - size % 2
    return structural_similarity_index_measure(
        predictions.float(), truth.float(), data_range=DATA_RANGE, kernel_size=size, reduction="none"
    ).double()


def nan_mean(values: Tensor) -> float:
    return float(values[~values.isnan()].mean())


def base_coupling(coupling: Coupling) -> Coupling:
    """The image coupling inside a ClassLabels wrapper."""
    return coupling.inner if isinstance(coupling, ClassLabels) else coupling


# ------------------------------------------------------------------------------------ baselines
# Each: (coupling, batch, training mean image (C, H, W)) -> ({name: baseline images}, region or None).
Baselines = Callable[[Any, Batch, Tensor], tuple[dict[str, Tensor], Tensor | None]]


def super_resolution_baselines(coupling: SuperResolution, batch: Batch, mean: Tensor) -> tuple[dict, None]:
    return {"bicubic": coupling.bicubic(batch.x1)}, None


def inpainting_baselines(coupling: Inpainting, batch: Batch, mean: Tensor) -> tuple[dict, Tensor]:
    keep = batch.cond.keep.bool()
    mean_fill = torch.where(keep, batch.x1, mean.to(batch.x1).expand_as(batch.x1))
    return {"noise-fill": batch.x0, "mean-fill": mean_fill}, ~keep


FILTER_WIDTH = 1.0  # the Gaussian filter baseline's standard deviation, in pixels


def denoising_baselines(coupling: Denoising, batch: Batch, mean: Tensor) -> tuple[dict, None]:
    return {"gaussian-filter": gaussian_filter(coupling.degraded(batch), FILTER_WIDTH)}, None


def blur_baselines(coupling: Blur, batch: Batch, mean: Tensor) -> tuple[dict, None]:
    return {"blurred-input": coupling.degraded(batch)}, None


def rain_baselines(coupling: Rain, batch: Batch, mean: Tensor) -> tuple[dict, None]:
    """The Gaussian filter, and the training mean on the streaks as drawn (the pixels A changed)."""
    degraded = coupling.degraded(batch)
    streaks = degraded != batch.x1
    mean_fill = torch.where(streaks, mean.to(degraded).expand_as(degraded), degraded)
    return {"gaussian-filter": gaussian_filter(degraded, FILTER_WIDTH), "mean-fill": mean_fill}, None


BASELINES: dict[type[Coupling], Baselines] = {
    SuperResolution: super_resolution_baselines,
    Inpainting: inpainting_baselines,
    Denoising: denoising_baselines,
    Blur: blur_baselines,
    Rain: rain_baselines,
}


class RestorationCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` steps and at the end: PSNR, SSIM, FID and a picture of restored held-out images.

    Args:
        num_samples: N held-out images restored (all of ``split`` if it has fewer).
        samples_per_image: k restorations per pictured image (k noise draws of one degraded input).
        rows: images in the picture.
        every_n_steps: evaluate after every N-th optimiser step (None: only at the end).
        at_end: evaluate when fit ends.
        samplers: {name: ODESampler | SDESampler}; default a Heun ODE with 50 steps.
        batch_size: images per sampler call on each rank.
        split: the held-out split.
        data_seed: chooses the N images.
        first_seed: the seed of image 0's degradation and noise.
        extractor: features for FID of restored versus real images (``digits``, ``inception``; None: no FID).
        weights_path: the extractor's weights file.
        mean_images: training images averaged for in-painting's mean-fill baseline.
        guidance_scale: classifier-free guidance w for a class-conditional restoration model.
        ema: use the EMA weights (the raw weights if False).
        posterior_draws: K draws per image whose mean is scored too (1: none).
    """

    def __init__(
        self,
        num_samples: int = 256,
        samples_per_image: int = 4,
        rows: int = 8,
        every_n_steps: int | None = None,
        at_end: bool = True,
        samplers: dict[str, ODESampler | SDESampler] | None = None,
        batch_size: int = 256,
        split: str = "val",
        data_seed: int = 0,
        first_seed: int = 0,
        extractor: str | None = "digits",
        weights_path: str | None = None,
        mean_images: int = 2000,
        guidance_scale: float | None = None,
        ema: bool = True,
        posterior_draws: int = 1,
    ) -> None:
        super().__init__(every_n_steps, at_end)
        self.num_samples = positive_count("num_samples", num_samples, minimum=2)
        self.samples_per_image = positive_count("samples_per_image", samples_per_image)
        self.rows = positive_count("rows", rows)
        default = {"ode-heun": ODESampler(method="heun", steps=50)}
        self.samplers: dict[str, Sampler] = check_samplers(default if samplers is None else samplers)
        self.batch_size = positive_count("batch_size", batch_size)
        self.split = split
        self.data_seed = positive_count("data_seed", data_seed, minimum=0)
        self.first_seed = positive_count("first_seed", first_seed, minimum=0)
        self.mean_images = positive_count("mean_images", mean_images)
        self.guidance_scale, self.ema = guidance_scale, bool(ema)
        self.posterior_draws = positive_count("posterior_draws", posterior_draws)
        options = {} if weights_path is None else {"weights_path": weights_path}
        self.extractor = None if extractor is None else build_feature_extractor(extractor, **options)
        self.data: HeldOutData | None = None
        self.mean_image: Tensor | None = None
        self.baselines: Baselines | None = None
        self.training_images: Tensor | None = None

    # ---------------------------------------------------------------------------------- set-up
    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the coupling; choose the held-out images; the mean training image for mean-fill."""
        datamodule = getattr(trainer, "datamodule", None)
        coupling = getattr(datamodule, "coupling", None)
        kind = type(base_coupling(coupling)) if coupling is not None else None
        if not is_data_dependent(trainer) or kind not in BASELINES:
            names = ", ".join(item.__name__ for item in BASELINES)
            raise ValueError(f"RestorationCallback needs a data-dependent image coupling ({names}); got {coupling!r}")
        check_guidance_scales(trainer, self.guidance_scale, None)
        self.baselines = BASELINES[kind]
        self.data = load_held_out(datamodule, self.num_samples, self.data_seed, self.split)
        if self.data.x1.shape[0] < 2:
            raise ValueError(f"RestorationCallback needs at least 2 held-out images in {self.split!r}")
        generator = torch.Generator().manual_seed(self.data_seed)
        count = min(self.mean_images, len(datamodule.dataset("train")))
        self.training_images = datamodule.real_samples(count, generator, split="train")
        self.mean_image = self.training_images.double().mean(0).float()

    @property
    def count(self) -> int:
        return int(self.data.x1.shape[0])

    def seeds(self, indices: list[int]) -> list[int]:
        return [self.first_seed + index for index in indices]

    # ------------------------------------------------------------------------------- sampling
    def restore(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, sampler: Sampler
    ) -> tuple[Tensor, float, Tensor]:
        """(restorations (M, ...) in image order on every rank, mean NFE per image, the k-draw picture rows)."""
        device = pl_module.device
        chunks, evaluations = [], 0
        with evaluation_mode(pl_module, self.ema):
            fields = pl_module.fields(ema=self.ema, guidance_scale=self.guidance_scale)
            for batch in batched(local_indices(trainer, self.count), self.batch_size, trainer):
                seeds = self.seeds(batch)
                inputs = self.data.inputs(seeds, device)
                result = sample_from_inputs(fields, sampler, seeds, inputs.x0, inputs.cond)
                chunks.append(result.x)
                evaluations += result.nfe * len(batch)
            # The picture's extra draws (1 .. k-1) for its first rows: few, made on every rank alike.
            rows = self.seeds(list(range(min(self.rows, self.count))))
            extra = []
            for draw in range(1, self.samples_per_image):
                inputs = self.data.inputs(rows, device, draw=draw)
                extra.append(sample_from_inputs(fields, sampler, rows, inputs.x0, inputs.cond).x)
        local = torch.cat(chunks) if chunks else torch.zeros((0, *self.data.x1.shape[1:]), device=device)
        restored = gather_in_order(trainer, local, self.count)
        total = trainer.strategy.reduce(torch.tensor(float(evaluations), device=device), reduce_op="sum")
        draws = torch.stack([restored[: len(rows)], *extra], dim=1) if extra else restored[: len(rows), None]
        return restored, float(total) / self.count, draws

    def posterior_mean(self, trainer: pl.Trainer, pl_module: pl.LightningModule, sampler: Sampler, first: Tensor):
        """The per-pixel mean (M, ...) of ``posterior_draws`` draws per image, draw 0 being ``first``."""
        device = pl_module.device
        chunks = []
        with evaluation_mode(pl_module, self.ema):
            fields = pl_module.fields(ema=self.ema, guidance_scale=self.guidance_scale)
            for batch in batched(local_indices(trainer, self.count), self.batch_size, trainer):
                seeds = self.seeds(batch)
                total = first[batch].to(device).clone()
                for draw in range(1, self.posterior_draws):
                    inputs = self.data.inputs(seeds, device, draw=draw)
                    noise_seeds = [derived_seed("posterior-draw", seed, draw) for seed in seeds]  # as `sample`
                    total += sample_from_inputs(fields, sampler, noise_seeds, inputs.x0, inputs.cond).x
                chunks.append(total / self.posterior_draws)
        local = torch.cat(chunks) if chunks else torch.zeros((0, *self.data.x1.shape[1:]), device=device)
        return gather_in_order(trainer, local, self.count)

    # -------------------------------------------------------------------------------- metrics
    def scores(self, predictions: Tensor, truth: Tensor, region: Tensor | None) -> dict[str, float]:
        """{"psnr" or "psnr-hidden": ..., "ssim": ...} (means over images)."""
        name = "psnr" if region is None else "psnr-hidden"
        return {
            name: nan_mean(psnr_per_image(predictions, truth, region)),
            "ssim": nan_mean(ssim_per_image(predictions, truth)),
        }

    def fid(self, restored: Tensor, truth: Tensor) -> dict[str, float]:
        if self.extractor is None:
            return {}
        extractor = self.extractor.to(restored.device)
        restored_features = extract_features(extractor, restored, self.batch_size)
        real_features = extract_features(extractor, truth, self.batch_size)
        return {"fid": frechet_distance(restored_features, real_features)}

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        directory = run_directory(trainer)
        device = pl_module.device
        reference = self.data.inputs(self.seeds(list(range(self.count))), device)
        coupling = base_coupling(self.data.coupling)
        baselines, region = self.baselines(coupling, reference, self.mean_image)
        baselines.update(neighbour_baselines(coupling, reference, self.training_images))
        extractor_name = "inception" if self.extractor is None else self.extractor.name
        metrics: dict[str, float] = {}
        for name, images in baselines.items():
            for metric, value in self.scores(images, reference.x1, region).items():
                metrics[metric_name(metric, name, self.count)] = value
        details: dict[str, Any] = {"coupling": repr(self.data.coupling), "split": self.split}
        for name, sampler in self.samplers.items():
            restored, nfe, draws = self.restore(trainer, pl_module, sampler)
            label = f"{name}-nfe{nfe:g}"
            values = {**self.scores(restored, reference.x1, region), **self.fid(restored, reference.x1)}
            for metric, value in values.items():
                metrics[metric_name(metric, label, self.count, extractor_name if metric == "fid" else "inception")] = (
                    value
                )
            metrics[metric_name("nfe", name, self.count)] = nfe
            if self.posterior_draws > 1:
                mean = self.posterior_mean(trainer, pl_module, sampler, restored)
                for metric, value in self.scores(mean, reference.x1, region).items():
                    metrics[metric_name(metric, f"{name}-mean{self.posterior_draws}", self.count)] = value
            details[name] = repr(sampler)
            if trainer.is_global_zero:
                rows = draws.shape[0]
                degraded = self.data.coupling.degraded(reference)[:rows]
                picture = torch.cat([degraded[:, None], draws, reference.x1[:rows, None]], dim=1)
                grid = image_grid(picture.flatten(0, 1), columns=picture.shape[1])
                publish_image(trainer, directory, f"restoration/{name}", grid)
        publish_metrics(trainer, directory, metrics, details)
