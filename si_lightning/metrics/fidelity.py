"""Inception score and precision/recall through torch-fidelity, on any of our feature extractors.

IS needs class probabilities: InceptionV3's unbiased logits (torch-fidelity's ``logits_unbiased``,
the layer its own ``isc`` uses) or the digits classifier's logits. Precision and recall are
torch-fidelity's k-nearest-neighbour estimates (Kynkäänniemi et al. 2019) on the extractor's
features (torch-fidelity defaults to VGG-16 features; here the FID features are used, so the
numbers are comparable between runs of this package, not with papers that use VGG-16).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_prc import calculate_precision_recall_full

from si_lightning.metrics.digits import DigitsFeatureExtractor, digits_classifier_input
from si_lightning.metrics.feature_extractor import FeatureExtractor
from si_lightning.metrics.inception import InceptionFeatureExtractor
from si_lightning.metrics.quantize import as_uint8_images


def _inception_logits(extractor: InceptionFeatureExtractor) -> Callable[[Tensor], Tensor]:
    network = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(extractor.weights_path)
    ).eval()

    def logits(images: Tensor) -> Tensor:
        images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return network(images)[0]

    return logits


def _digits_logits(extractor: DigitsFeatureExtractor) -> Callable[[Tensor], Tensor]:
    return lambda images: extractor.classifier(digits_classifier_input(images))


CLASS_LOGITS: dict[type[FeatureExtractor], Callable[[FeatureExtractor], Callable[[Tensor], Tensor]]] = {
    InceptionFeatureExtractor: _inception_logits,
    DigitsFeatureExtractor: _digits_logits,
}


def class_logits(extractor: FeatureExtractor, images: Tensor, batch_size: int = 256) -> Tensor:
    """Class logits (N, K) of N images (uint8 (N, C, H, W) or floats in [-1, 1]) from the extractor's classifier."""
    if type(extractor) not in CLASS_LOGITS:
        raise ValueError(f"the inception score needs a classifier; extractor {extractor.name!r} has none")
    logits = CLASS_LOGITS[type(extractor)](extractor)
    with torch.no_grad():
        return torch.cat([logits(as_uint8_images(batch)).double().cpu() for batch in images.split(batch_size)])


def inception_score(logits: Tensor, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) over ``splits`` of exp(E_x KL(p(y|x) || p(y))), torch-fidelity's ``isc`` on (N, K) logits."""
    result = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=seed)
    return float(result["inception_score_mean"]), float(result["inception_score_std"])


def precision_recall(
    real_features: Tensor, generated_features: Tensor, neighborhood: int = 3, batch_size: int = 10000
) -> tuple[float, float]:
    """(precision, recall): the share of generated points inside the real k-NN balls, and vice versa."""
    precision, recall = calculate_precision_recall_full(
        generated_features.float(), real_features.float(), neighborhood, batch_size
    )
    return float(precision), float(recall)
