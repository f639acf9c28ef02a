"""The metrics of ``evaluate``: FID, KID, IS, precision/recall of images, and bits/dim of the data.

``METRICS`` names each one. Image metrics compare the features of generated images with the real
side: a folder or .npz of reference images, or N points of the run's data whose features are cached
by ``StatisticsCache`` under the same key the FID callback uses (so a callback's cache is reused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from si_lightning.callbacks.fid import dataset_identity
from si_lightning.callbacks.generation import batched
from si_lightning.callbacks.likelihood import standard_normal_log_prob, units_for
from si_lightning.metrics import (
    FeatureExtractor,
    FeatureStatistics,
    StatisticsCache,
    StatisticsKey,
    extract_features,
    frechet_distance_from_statistics,
    kernel_distance,
)
from si_lightning.metrics.fidelity import class_logits, inception_score, precision_recall
from si_lightning.module import InterpolantModule
from si_lightning.sampling import log_likelihood

METRICS = ("fid", "kid", "is", "precision-recall", "nll")
IMAGE_METRICS = ("fid", "kid", "is", "precision-recall")
NEEDS_REAL_FEATURES = ("kid", "precision-recall")


@dataclass
class RealSide:
    """Where the real features come from: reference images, or the run's data (cached statistics)."""

    images: Tensor | None = None
    datamodule: Any = None
    split: str = "train"
    num_samples: int = 0
    real_seed: int = 0
    cache: StatisticsCache | None = None

    def statistics(self, extractor: FeatureExtractor, features_needed: bool, batch_size: int) -> FeatureStatistics:
        if self.images is not None:
            features = extract_features(extractor, self.images, batch_size)
            return FeatureStatistics.from_features(features, keep_features=True)
        key = StatisticsKey(
            dataset_identity(self.datamodule, self.real_seed), self.split, extractor.identity(), self.num_samples
        )

        def compute() -> FeatureStatistics:
            generator = torch.Generator().manual_seed(self.real_seed)
            real = self.datamodule.real_samples(self.num_samples, generator, split=self.split)
            features = extract_features(extractor, real, batch_size)
            return FeatureStatistics.from_features(features, keep_features=features_needed)

        return self.cache.get_or_compute(key, compute, extractor.feature_dim, need_features=features_needed)


def image_metrics(
    images: Tensor,
    metrics: list[str],
    extractor: FeatureExtractor,
    real: RealSide,
    batch_size: int = 256,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
) -> dict[str, float]:
    """The requested image metrics of uint8 (N, C, H, W) generated images against the real side."""
    wanted = [metric for metric in metrics if metric in IMAGE_METRICS]
    if not wanted:
        return {}
    values: dict[str, float] = {}
    needs_features = any(metric in NEEDS_REAL_FEATURES for metric in wanted)
    generated = extract_features(extractor, images, batch_size)
    if any(metric != "is" for metric in wanted):
        statistics = real.statistics(extractor, needs_features, batch_size)
        mine = FeatureStatistics.from_features(generated)
        if "fid" in wanted:
            values["fid"] = frechet_distance_from_statistics(
                statistics.mean, statistics.covariance, mine.mean, mine.covariance
            )
        if "kid" in wanted:
            size = min(kid_subset_size, generated.shape[0], statistics.features.shape[0])
            mean, std = kernel_distance(statistics.features, generated, subsets=kid_subsets, subset_size=size)
            values.update({"kid": float(mean), "kid-std": float(std)})
        if "precision-recall" in wanted:
            precision, recall = precision_recall(statistics.features, generated)
            values.update({"precision": precision, "recall": recall})
    if "is" in wanted:
        mean, std = inception_score(class_logits(extractor, images, batch_size), splits=min(10, images.shape[0]))
        values.update({"is": mean, "is-std": std})
    return values


def data_likelihood(
    module: InterpolantModule,
    datamodule: Any,
    num_points: int,
    split: str,
    solver: Any,
    divergence: str,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, float]:
    """Mean negative log-likelihood of ``num_points`` points of ``split``: bits/dim for images, else nats.

    Probability-flow ODE (``log_likelihood``) with a N(0, I) base; 8-bit images are uniformly
    dequantised first (an upper bound on the discrete data's bits/dim).
    """
    generator = torch.Generator().manual_seed(seed)
    points = datamodule.real_samples(num_points, generator, split=split).float().cpu()
    units = units_for(None, tuple(points.shape[1:]))
    points = units.prepare(points, generator)
    fields = module.fields(ema=True)
    values, evaluations = [], 0.0
    for batch in batched(list(range(num_points)), batch_size):
        result = log_likelihood(
            fields,
            points[batch].to(device),
            standard_normal_log_prob,
            divergence=divergence,
            probes=1,
            method=solver.method_name,
            atol=solver.atol,
            rtol=solver.rtol,
            steps=solver.steps,
            grid=solver.grid_name,
            seeds=batch,
        )
        values.append(result.log_prob.detach().double().cpu())
        evaluations += result.nfe * len(batch)
    per_point = units.report(torch.cat(values), int(points[0].numel()))
    stderr = float(per_point.std() / math.sqrt(num_points)) if num_points > 1 else float("nan")
    return {
        units.name: float(per_point.mean()),
        f"{units.name}-stderr": stderr,
        "nfe-likelihood": evaluations / num_points,
    }
