"""FIDCallback: FID (and optionally KID) of N generated samples per sampler against cached real statistics.

Generated side: N samples from seeds first_seed .. first_seed + N - 1, sharded across ranks
(``rank_indices``), quantised to uint8 and passed through the feature extractor by
``FrechetDistance.update``; torchmetrics' own sync sums the per-rank feature states at ``compute``.

Real side: N points of ``datamodule.real_samples(N, generator(real_seed), split)``, their feature
statistics cached on disk under a hash of (dataset identity, split, extractor identity, N) by
``StatisticsCache`` (atomic writes, checksummed; a corrupted file is recomputed with a warning, a
file whose feature size does not match the extractor is a ValueError). Rank 0 loads or computes
them once, in ``setup``, and broadcasts them.

Logged as ``metric_logs``: ``fid/{sampler}/n{N}`` for InceptionV3 (``fid-digits/...`` for another
extractor), ``kid/...`` and ``kid-std/...`` if enabled, ``nfe/{sampler}/n{N}`` (mean per sample).
With several guidance scales the sampler name carries the scale: ``fid/{sampler}-cfg{w}/n{N}``.
A data-dependent coupling's samples start from held-out images (``HeldOutData``): FID of restored
versus real images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from si_lightning.callbacks.artifacts import publish_metrics, run_directory
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
    guided_name,
    local_indices,
    num_classes_of,
    sample_from_seeds,
)
from si_lightning.callbacks.schedule import PeriodicEvaluation
from si_lightning.checks import positive_count
from si_lightning.metrics import (
    FeatureExtractor,
    FeatureStatistics,
    FrechetDistance,
    KernelDistance,
    StatisticsCache,
    StatisticsKey,
    build_feature_extractor,
    extract_features,
    metric_logs,
)
from si_lightning.sampling import ODESampler, SDESampler
from si_lightning.sampling.guidance import check_guidance_interval

# Datamodule attributes that do not change which data real_samples() returns.
NOT_DATA_SETTINGS = frozenset(
    {
        "batch_size",
        "num_workers",
        "download",
        "prepare_data_per_node",
        "allow_zero_length_dataloader_with_multiple_devices",
        "trainer",
    }
)


def default_cache_directory() -> Path:
    """``$XDG_CACHE_HOME/si_lightning/feature-statistics`` (``~/.cache/...`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "si_lightning" / "feature-statistics"


def dataset_identity(datamodule: Any, real_seed: int) -> str:
    """The datamodule's class and its data settings (public attributes of plain types), plus the real-data seed."""
    settings = {}
    for name, value in sorted(vars(datamodule).items()):
        if name.startswith("_") or name in NOT_DATA_SETTINGS:
            continue
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, (str, int, float, bool, tuple, list, type(None))):
            settings[name] = value
    kind = f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"
    return f"{kind}{json.dumps(settings, sort_keys=True)};real_seed={real_seed}"


class FIDCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` steps and at the end: FID of ``num_samples`` samples for each sampler.

    Args:
        num_samples: N, generated and real (>= 2); part of every metric name.
        every_n_steps: evaluate after every N-th optimiser step (None: only at the end).
        at_end: evaluate when fit ends.
        samplers: {name: ODESampler | SDESampler}; default ``default_samplers()``.
        batch_size: samples per sampler call on each rank.
        extractor: a name in ``FEATURE_EXTRACTORS``: ``inception`` (torch-fidelity's InceptionV3, FID
            proper) or ``digits`` (the shipped digits classifier).
        weights_path: the extractor's weights file; for InceptionV3, else the torch hub cache file
            (nothing is downloaded; a missing file is an error naming both places).
        split: the data split of the real samples.
        real_seed: chooses which N real points.
        cache_dir: the real-statistics cache (default ``default_cache_directory()``).
        dataset_name: identifies the data in the cache key (default: ``dataset_identity``).
        kid: also compute KID (keeps the N real features in the cache).
        kid_subsets, kid_subset_size: KID's random subsets (subset size <= N).
        first_seed: the seed of generated sample 0.
        guidance_scale: classifier-free guidance w for class-conditional models.
        ema: use the EMA weights (the raw weights if False).
        labels: the class labels to draw (``balanced``, ``per-seed`` or a list; see SamplingCallback).
        guidance_scales: several guidance scales, each its own FID (instead of ``guidance_scale``).
        guidance_interval: [t_low, t_high]: guide only for t in it (None: every t).
        data_split, data_seed: the held-out images a data-dependent coupling starts from.
    """

    sample_counts = ("num_samples", "kid_subset_size")

    def __init__(
        self,
        num_samples: int = 2000,
        every_n_steps: int | None = 5000,
        at_end: bool = True,
        samplers: dict[str, ODESampler | SDESampler] | None = None,
        batch_size: int = 250,
        extractor: str = "inception",
        weights_path: str | None = None,
        split: str = "train",
        real_seed: int = 0,
        cache_dir: str | None = None,
        dataset_name: str | None = None,
        kid: bool = False,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        first_seed: int = 0,
        guidance_scale: float | None = None,
        ema: bool = True,
        labels: LabelChoice = None,
        guidance_scales: list[float] | None = None,
        guidance_interval: list[float] | None = None,
        data_split: str = "val",
        data_seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps, at_end)
        self.num_samples = positive_count("num_samples", num_samples, minimum=2)
        self.samplers: dict[str, Sampler] = check_samplers(samplers)
        self.batch_size = positive_count("batch_size", batch_size)
        self.split, self.real_seed = split, positive_count("real_seed", real_seed, minimum=0)
        self.cache = StatisticsCache(default_cache_directory() if cache_dir is None else cache_dir)
        self.dataset_name = dataset_name
        self.kid = bool(kid)
        if self.kid:
            positive_count("kid_subsets", kid_subsets)
            positive_count("kid_subset_size", kid_subset_size, minimum=2)
            if kid_subset_size > num_samples:
                raise ValueError(f"kid_subset_size = {kid_subset_size} exceeds num_samples = {num_samples}")
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.first_seed = positive_count("first_seed", first_seed, minimum=0)
        self.guidance_scale = guidance_scale
        self.ema = bool(ema)
        options = {} if weights_path is None else {"weights_path": weights_path}
        self.extractor: FeatureExtractor = build_feature_extractor(extractor, **options)
        self.real_statistics: FeatureStatistics | None = None
        self.statistics_key_used: StatisticsKey | None = None
        self.data_shape: tuple[int, ...] = ()
        self.labels, self.guidance_scales = labels, guidance_scales
        self.guidance_interval = check_guidance_interval(guidance_interval)
        self.data_split, self.data_seed = data_split, positive_count("data_seed", data_seed, minimum=0)
        self.scales: list[float | None] = [guidance_scale]
        self.data: HeldOutData | None = None

    # ------------------------------------------------------------------------------ real side
    def statistics_key(self, datamodule: Any) -> StatisticsKey:
        """The cache key of the real statistics for ``datamodule``."""
        dataset = self.dataset_name or dataset_identity(datamodule, self.real_seed)
        return StatisticsKey(dataset, self.split, self.extractor.identity(), self.num_samples)

    def compute_real_statistics(self, datamodule: Any, device: torch.device) -> FeatureStatistics:
        """Features of N real points (quantised to uint8 like the generated ones) and their statistics."""
        generator = torch.Generator().manual_seed(self.real_seed)
        real = datamodule.real_samples(self.num_samples, generator, split=self.split)
        features = extract_features(self.extractor.to(device), real, self.batch_size)
        return FeatureStatistics.from_features(features, keep_features=self.kid)

    def load_real_statistics(self, trainer: pl.Trainer) -> None:
        """Rank 0 loads or computes (and caches) the real statistics; every rank receives them."""
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "real_samples"):
            raise ValueError("FIDCallback needs a datamodule with real_samples() for the real statistics")
        key = self.statistics_key(datamodule)
        if self.real_statistics is not None and key == self.statistics_key_used:
            return
        outcome: tuple[FeatureStatistics | None, BaseException | None] = (None, None)
        if trainer.is_global_zero:
            try:
                statistics = self.cache.get_or_compute(
                    key,
                    lambda: self.compute_real_statistics(datamodule, trainer.strategy.root_device),
                    self.extractor.feature_dim,
                    need_features=self.kid,
                )
                outcome = (statistics, None)
            except Exception as error:  # every rank must leave the broadcast below, then raise
                outcome = (None, error)
        statistics, error = trainer.strategy.broadcast(outcome, src=0)
        if error is not None:
            if trainer.is_global_zero:
                raise error
            raise RuntimeError(f"rank 0 could not prepare the real feature statistics: {error}")
        self.real_statistics, self.statistics_key_used = statistics, key

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.scales = check_guidance_scales(trainer, self.guidance_scale, self.guidance_scales)
        check_labels(self.labels, num_classes_of(trainer))
        self.data_shape = data_shape_of(trainer, pl_module)
        self.data = evaluation_data(trainer, self.num_samples, self.data_seed, self.data_split)
        if len(self.data_shape) != 3:
            raise ValueError(f"FIDCallback needs image data (C, H, W); the data has shape {self.data_shape}")
        if self.num_samples < trainer.world_size:
            raise ValueError(f"num_samples = {self.num_samples} is fewer than the {trainer.world_size} ranks")
        self.load_real_statistics(trainer)

    # -------------------------------------------------------------------------- generated side
    def metrics_for(self, device: torch.device) -> tuple[FrechetDistance, KernelDistance | None]:
        fid = FrechetDistance(self.extractor, real_statistics=self.real_statistics).to(device)
        kid = None
        if self.kid:
            kid = KernelDistance(
                self.extractor,
                real_features=self.real_statistics.features,
                subsets=self.kid_subsets,
                subset_size=self.kid_subset_size,
            ).to(device)
        return fid, kid

    def evaluate_sampler(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, sampler: Sampler, guidance_scale: float | None = None
    ) -> dict:
        """{"fid": ..., ["kid": ..., "kid-std": ...]} and the mean NFE per sample, merged over ranks."""
        scale = self.scales[0] if guidance_scale is None else guidance_scale
        device = pl_module.device
        fid, kid = self.metrics_for(device)
        num_classes = num_classes_of(trainer)
        evaluations = torch.zeros((), dtype=torch.float64, device=device)
        with evaluation_mode(pl_module, self.ema):
            fields = pl_module.fields(ema=self.ema, guidance_scale=scale, guidance_interval=self.guidance_interval)
            for batch in batched(local_indices(trainer, self.num_samples), self.batch_size, trainer):
                seeds = [self.first_seed + index for index in batch]
                result = sample_from_seeds(
                    fields, sampler, seeds, self.data_shape, device, num_classes, self.labels, self.data
                )
                fid.update(result.x, real=False)
                if kid is not None:
                    kid.update(result.x, real=False)
                evaluations += result.nfe * len(batch)
        values = {"fid": float(fid.compute())}  # torchmetrics syncs the generated-side states here
        if kid is not None:
            kid_mean, kid_std = kid.compute()
            values.update({"kid": float(kid_mean), "kid-std": float(kid_std)})
        total = trainer.strategy.reduce(evaluations, reduce_op="sum")
        return {"values": values, "nfe": float(total) / self.num_samples}

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.load_real_statistics(trainer)
        directory = run_directory(trainer)
        logs: dict[str, float] = {}
        details: dict[str, Any] = {"extractor": self.extractor.identity(), "split": self.split}
        for name, sampler in self.samplers.items():
            for scale in self.scales:
                outcome = self.evaluate_sampler(trainer, pl_module, sampler, scale)
                label = guided_name(name, scale, len(self.scales) > 1)
                logs.update(
                    metric_logs(outcome["values"], label, self.num_samples, outcome["nfe"], self.extractor.name)
                )
            details[name] = repr(sampler)
        publish_metrics(trainer, directory, logs, details)
