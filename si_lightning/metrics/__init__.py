"""Sample-quality metrics: Fréchet distance, FID/KID metric objects, feature extractors, statistics cache.

Plain PyTorch + torchmetrics + torch-fidelity (no Lightning). Typical use by a callback::

    extractor = build_feature_extractor("digits")             # or "inception", weights_path=...
    key = StatisticsKey("digits", "train", extractor.identity(), num_samples=2000)
    real = StatisticsCache(cache_dir).get_or_compute(
        key, lambda: FeatureStatistics.from_features(extract_features(extractor, real_images)), extractor.feature_dim
    )
    fid = FrechetDistance(extractor, real_statistics=real)
    fid.update(generated_images_in_minus_one_one, real=False)  # on every rank, its own shard of seeds
    logs = metric_logs({"fid": float(fid.compute())}, sampler="ode-dopri5", num_samples=2000, nfe=nfe,
                       extractor=extractor.name)

A new dataset plugs in its own extractor by subclassing ``FeatureExtractor`` and adding it to
``FEATURE_EXTRACTORS`` (or by passing the instance directly to the metric objects).
"""

from __future__ import annotations

from typing import Any

from si_lightning.checks import lookup
from si_lightning.metrics.digits import DigitsClassifier, DigitsFeatureExtractor, load_digits_classifier
from si_lightning.metrics.distances import FrechetDistance, KernelDistance, kernel_distance
from si_lightning.metrics.feature_extractor import FeatureExtractor, extract_features
from si_lightning.metrics.frechet import (
    feature_mean_and_covariance,
    frechet_distance,
    frechet_distance_from_statistics,
)
from si_lightning.metrics.inception import InceptionFeatureExtractor, inception_cache_path, resolve_inception_weights
from si_lightning.metrics.naming import metric_logs, metric_name
from si_lightning.metrics.quantize import as_uint8_images, quantize_to_uint8
from si_lightning.metrics.statistics import FeatureStatistics, StatisticsCache, StatisticsKey

FEATURE_EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "inception": InceptionFeatureExtractor,
    "digits": DigitsFeatureExtractor,
}


def build_feature_extractor(name: str, **kwargs: Any) -> FeatureExtractor:
    """The extractor registered as ``name``, constructed with ``kwargs`` (e.g. ``weights_path``)."""
    return lookup(FEATURE_EXTRACTORS, name, "feature extractor")(**kwargs)


__all__ = [
    "FEATURE_EXTRACTORS",
    "DigitsClassifier",
    "DigitsFeatureExtractor",
    "FeatureExtractor",
    "FeatureStatistics",
    "FrechetDistance",
    "InceptionFeatureExtractor",
    "KernelDistance",
    "StatisticsCache",
    "StatisticsKey",
    "as_uint8_images",
    "build_feature_extractor",
    "extract_features",
    "feature_mean_and_covariance",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "inception_cache_path",
    "kernel_distance",
    "load_digits_classifier",
    "metric_logs",
    "metric_name",
    "quantize_to_uint8",
    "resolve_inception_weights",
]
