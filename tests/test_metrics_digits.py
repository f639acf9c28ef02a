"""The shipped digits classifier and the digits FID it defines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from si_lightning.metrics import (
    DigitsFeatureExtractor,
    FeatureStatistics,
    FrechetDistance,
    build_feature_extractor,
    extract_features,
    frechet_distance,
    quantize_to_uint8,
)
from si_lightning.metrics.digits import DIGITS_WEIGHTS_PATH, digits_holdout_split, load_digits_data


@pytest.fixture(scope="module")
def extractor() -> DigitsFeatureExtractor:
    return build_feature_extractor("digits")


@pytest.fixture(scope="module")
def digits():
    return load_digits_data()


def test_shipped_weights_are_small() -> None:
    assert DIGITS_WEIGHTS_PATH.stat().st_size < 1_000_000


@pytest.mark.parametrize("factor,mode", [(1, "nearest"), (4, "nearest"), (4, "bilinear")])
def test_held_out_accuracy_above_95_percent(extractor, digits, factor: int, mode: str) -> None:
    images, labels = digits
    _, holdout = digits_holdout_split(len(images))
    stored = images[holdout]
    if factor > 1:  # as a data module may store the digits: up-sampled, then quantised
        stored = F.interpolate(
            stored, scale_factor=factor, mode=mode, **({"align_corners": False} if mode == "bilinear" else {})
        )
    predictions = extractor.classify(quantize_to_uint8(stored)).argmax(dim=1)
    accuracy = float((predictions == labels[holdout]).double().mean())
    assert accuracy > 0.95, f"held-out accuracy {accuracy:.4f} at {8 * factor}x{8 * factor} ({mode})"


def test_features_are_64_dimensional_and_size_independent(extractor, digits) -> None:
    images = digits[0][:16]
    features = extractor(quantize_to_uint8(images))
    assert features.shape == (16, 64) and features.dtype == torch.float32
    # Nearest up-sampling by an integer factor is undone exactly by the area down-sampling.
    upsampled = quantize_to_uint8(F.interpolate(images, scale_factor=4, mode="nearest"))
    assert torch.allclose(extractor(upsampled), features, rtol=1e-5, atol=1e-5)
    assert torch.allclose(extractor(upsampled.expand(-1, 3, -1, -1)), features, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        extractor(images)


def test_real_versus_real_far_below_real_versus_noise(extractor, digits) -> None:
    images = digits[0]
    train, holdout = digits_holdout_split(len(images), holdout_fraction=0.5)
    features_a = extract_features(extractor, images[train])
    features_b = extract_features(extractor, images[holdout])
    noise = torch.rand(len(holdout), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real_versus_real = frechet_distance(features_a, features_b)
    real_versus_noise = frechet_distance(features_a, extract_features(extractor, noise))
    assert 0 < real_versus_real < 0.02 * real_versus_noise, (real_versus_real, real_versus_noise)


def test_digits_fid_metric_with_cached_statistics(extractor, digits) -> None:
    images = digits[0]
    train, holdout = digits_holdout_split(len(images), holdout_fraction=0.5)
    real_features = extract_features(extractor, images[train])
    metric = FrechetDistance(extractor, real_statistics=FeatureStatistics.from_features(real_features))
    for batch in images[holdout].split(100):  # floats in [-1, 1], quantised inside
        metric.update(batch, real=False)
    expected = frechet_distance(real_features, extract_features(extractor, images[holdout]))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)


def test_missing_weights_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        DigitsFeatureExtractor(weights_path=tmp_path / "nothing.pt")


def test_unknown_extractor_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="digits, inception"):
        build_feature_extractor("resnet")
