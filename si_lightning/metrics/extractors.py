"""Feature extractors by name: ``build_feature_extractor("inception", weights_path=...)``.

A new dataset plugs in its own extractor by subclassing `FeatureExtractor` and adding it to
``FEATURE_EXTRACTORS`` (or by passing the instance directly to the metric objects).
"""

from __future__ import annotations

from typing import Any

from si_lightning.metrics.digits import DigitsFeatureExtractor
from si_lightning.metrics.feature_extractor import FeatureExtractor
from si_lightning.metrics.inception import InceptionFeatureExtractor
from si_lightning.registry import lookup

FEATURE_EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "inception": InceptionFeatureExtractor,
    "digits": DigitsFeatureExtractor,
}


def build_feature_extractor(name: str, **kwargs: Any) -> FeatureExtractor:
    """The extractor registered as ``name``, constructed with ``kwargs`` (e.g. ``weights_path``)."""
    return lookup(FEATURE_EXTRACTORS, name, "feature extractor")(**kwargs)
