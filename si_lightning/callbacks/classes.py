"""ClassAccuracyCallback: does a class-conditional model draw the class it is asked for?

N samples from seeds first_seed .. first_seed + N - 1 with the requested labels (``labels``:
balanced, per-seed or a list, as in SamplingCallback) are classified by the shipped digits classifier
(si_lightning/metrics/digits.py, after the same uint8 quantisation as FID); the share whose predicted
class is the requested one is logged per sampler and guidance scale:
``accuracy-digits/{sampler}-cfg{w}/n{N}`` (``{sampler}`` alone without guidance).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from si_lightning.callbacks.artifacts import publish_metrics, run_directory
from si_lightning.callbacks.generation import (
    LabelChoice,
    Sampler,
    batched,
    check_guidance_scales,
    check_labels,
    check_samplers,
    data_shape_of,
    evaluation_mode,
    local_indices,
    num_classes_of,
    sample_from_seeds,
    seed_labels,
)
from si_lightning.callbacks.schedule import PeriodicEvaluation
from si_lightning.checks import positive_count
from si_lightning.metrics import metric_name, quantize_to_uint8
from si_lightning.metrics.digits import DigitsFeatureExtractor
from si_lightning.sampling import ODESampler, SDESampler
from si_lightning.sampling.guidance import check_guidance_interval


class ClassAccuracyCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` steps and at the end: the share of samples classified as their requested label.

    Args:
        num_samples: N samples per sampler and guidance scale.
        every_n_steps: evaluate after every N-th optimiser step (None: only at the end).
        at_end: evaluate when fit ends.
        samplers: {name: ODESampler | SDESampler}; default a Heun ODE with 50 steps.
        batch_size: samples per sampler call on each rank.
        labels: the labels to request (``balanced``: seed mod K; ``per-seed``; or a list cycled).
        guidance_scales: the classifier-free guidance scales to evaluate (null: the conditional model).
        guidance_interval: [t_low, t_high]: guide only for t in it (None: every t).
        first_seed: the seed of sample 0.
        weights_path: the digits classifier's weights (default: the file shipped in the package).
        ema: use the EMA weights (the raw weights if False).
    """

    def __init__(
        self,
        num_samples: int = 500,
        every_n_steps: int | None = None,
        at_end: bool = True,
        samplers: dict[str, ODESampler | SDESampler] | None = None,
        batch_size: int = 250,
        labels: LabelChoice = None,
        guidance_scales: list[float | None] | None = None,
        guidance_interval: list[float] | None = None,
        first_seed: int = 0,
        weights_path: str | None = None,
        ema: bool = True,
    ) -> None:
        super().__init__(every_n_steps, at_end)
        self.num_samples = positive_count("num_samples", num_samples, minimum=2)
        default = {"ode-heun": ODESampler(method="heun", steps=50)}
        self.samplers: dict[str, Sampler] = check_samplers(default if samplers is None else samplers)
        self.batch_size = positive_count("batch_size", batch_size)
        self.labels, self.guidance_scales = labels, guidance_scales
        self.guidance_interval = check_guidance_interval(guidance_interval)
        self.first_seed = positive_count("first_seed", first_seed, minimum=0)
        self.classifier = DigitsFeatureExtractor(weights_path)
        self.ema = bool(ema)
        self.scales: list[float | None] = [None]
        self.data_shape: tuple[int, ...] = ()

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        num_classes = num_classes_of(trainer)
        if num_classes <= 0:
            raise ValueError("ClassAccuracyCallback needs class-conditional data (a ClassLabels coupling)")
        self.scales = check_guidance_scales(trainer, None, self.guidance_scales)
        check_labels(self.labels, num_classes)
        self.data_shape = data_shape_of(trainer, pl_module)

    def accuracy(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, sampler: Sampler, scale: float | None
    ) -> float:
        """The share of the N samples classified as their requested label, merged over ranks."""
        device, num_classes = pl_module.device, num_classes_of(trainer)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        classifier = self.classifier.to(device)
        with evaluation_mode(pl_module, self.ema):
            fields = pl_module.fields(ema=self.ema, guidance_scale=scale, guidance_interval=self.guidance_interval)
            for batch in batched(local_indices(trainer, self.num_samples), self.batch_size, trainer):
                seeds = [self.first_seed + index for index in batch]
                samples = sample_from_seeds(fields, sampler, seeds, self.data_shape, device, num_classes, self.labels).x
                predicted = classifier.classify(quantize_to_uint8(samples)).argmax(1)
                requested = torch.tensor(seed_labels(seeds, num_classes, self.labels), device=device)
                correct += (predicted == requested).sum()
        return float(trainer.strategy.reduce(correct, reduce_op="sum")) / self.num_samples

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {}
        for name, sampler in self.samplers.items():
            for scale in self.scales:
                label = name if scale is None else f"{name}-cfg{scale:g}"
                metrics[metric_name("accuracy", label, self.num_samples, "digits")] = self.accuracy(
                    trainer, pl_module, sampler, scale
                )
        publish_metrics(trainer, run_directory(trainer), metrics, {"labels": repr(self.labels)})
