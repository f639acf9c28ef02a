"""torch-fidelity's InceptionV3 path end to end, on a weights file the test writes (random weights).

The file has exactly the format torch-fidelity downloads: ``torch.save`` of the state_dict of
``FeatureExtractorInceptionV3``. Random weights prove the loading code and the feature plumbing;
they say nothing about Inception's real features, which need the real file (never downloaded here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from si_lightning.metrics import (
    FrechetDistance,
    InceptionFeatureExtractor,
    build_feature_extractor,
    frechet_distance,
    inception_cache_path,
    resolve_inception_weights,
)
from si_lightning.metrics.inception import (
    INCEPTION_WEIGHTS_FILENAME,
    INCEPTION_WEIGHTS_URL,
    write_random_inception_weights,
)


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    write_random_inception_weights(path)
    return path


@pytest.fixture(scope="module")
def extractor(weights_path) -> InceptionFeatureExtractor:
    return build_feature_extractor("inception", weights_path=weights_path)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere must not shadow TORCH_HOME
    return tmp_path / "torch-home"


def tiny_images(num: int, seed: int, channels: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (num, channels, 12, 12), generator=torch.Generator().manual_seed(seed)).to(torch.uint8)


@pytest.mark.slow  # ~10 s on one core: torchmetrics takes eigenvalues of a 2048 x 2048 product
def test_features_and_fid_match_torchmetrics_on_the_same_weights(weights_path, extractor) -> None:
    real, fake = tiny_images(3, seed=0), tiny_images(3, seed=1) // 2
    real_features, fake_features = extractor(real), extractor(fake)
    assert real_features.shape == (3, 2048) and torch.isfinite(real_features).all()
    assert float(real_features.std(dim=0).mean()) > 0  # the features do depend on the image

    reference = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(weights_path), antialias=False
    )
    reference.update(real, real=True)
    reference.update(fake, real=False)
    # torchmetrics' own InceptionV3 (torch-fidelity's resize) on the same file saw the same features ...
    assert torch.allclose(reference.real_features_sum, real_features.double().sum(dim=0), rtol=1e-5, atol=1e-6)
    assert torch.allclose(reference.fake_features_sum, fake_features.double().sum(dim=0), rtol=1e-5, atol=1e-6)
    value = float(reference.compute())
    # ... and its FID equals ours on those features.
    assert value > 0 and value == pytest.approx(frechet_distance(real_features, fake_features), rel=1e-4)


def test_inception_extractor_works_inside_the_metric(extractor) -> None:
    images = tiny_images(2, seed=2)
    metric = FrechetDistance(extractor)
    metric.update(images.float() / 127.5 - 1.0, real=False)  # floats in [-1, 1] are quantised back to `images`
    features = extractor(images).double()
    assert int(metric.fake_features_num_samples) == 2
    assert torch.allclose(metric.fake_features_sum, features.sum(dim=0), rtol=1e-12)
    assert torch.allclose(metric.fake_features_cov_sum, features.T @ features, rtol=1e-12)


def test_grayscale_is_repeated_to_three_channels(extractor) -> None:
    gray = tiny_images(2, seed=3, channels=1)
    assert torch.equal(extractor(gray), extractor(gray.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="1 or 3 channels; got 2"):
        extractor(tiny_images(2, seed=3, channels=2))


def test_weights_are_found_in_the_torch_hub_cache(weights_path, empty_torch_home) -> None:
    cached = empty_torch_home / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILENAME
    assert inception_cache_path() == cached
    cached.parent.mkdir(parents=True)
    cached.symlink_to(weights_path)
    assert resolve_inception_weights() == cached
    missing = empty_torch_home / "elsewhere.pth"
    with pytest.warns(UserWarning, match="does not exist; using the cached file"):
        assert resolve_inception_weights(missing) == cached
    assert resolve_inception_weights(weights_path) == weights_path  # a configured file wins over the cache


def test_missing_weights_error_names_both_paths(empty_torch_home, tmp_path) -> None:
    configured = tmp_path / "configured" / "inception.pth"
    with pytest.raises(FileNotFoundError) as error:
        InceptionFeatureExtractor(weights_path=configured)
    message = str(error.value)
    assert str(configured) in message and str(inception_cache_path()) in message and INCEPTION_WEIGHTS_URL in message
    with pytest.raises(FileNotFoundError, match="weights_path not set"):
        build_feature_extractor("inception")


def test_a_file_that_is_not_inception_weights_is_rejected(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a torch-fidelity InceptionV3 state_dict"):
        InceptionFeatureExtractor(weights_path=path)
