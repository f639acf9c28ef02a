"""FID and KID metric objects: torchmetrics states merged across shards, cached real side, KID closed form."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from si_lightning.metrics import (
    FeatureExtractor,
    FeatureStatistics,
    FrechetDistance,
    KernelDistance,
    extract_features,
    frechet_distance,
    kernel_distance,
    quantize_to_uint8,
)


class PixelFeatures(FeatureExtractor):
    """A pluggable extractor for tests: the four pixels of a (B, 1, 2, 2) image as features."""

    name = "pixels"
    feature_dim = 4

    def extract(self, images: Tensor) -> Tensor:
        return images.float().flatten(1)


def pixel_images(num: int, seed: int, low: int = 0, high: int = 256) -> Tensor:
    return torch.randint(low, high, (num, 1, 2, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_fid_merged_from_shards_equals_fid_of_all_features() -> None:
    extractor = PixelFeatures()
    real, fake = pixel_images(300, seed=0), pixel_images(257, seed=1, low=40)
    rank_zero, rank_one = FrechetDistance(extractor), FrechetDistance(extractor)
    rank_zero.update(real[:100], real=True)
    rank_one.update(real[100:], real=True)
    for batch in fake[:130].split(7):  # uneven shards in different batch sizes
        rank_zero.update(batch, real=False)
    rank_one.update(fake[130:], real=False)
    rank_zero.merge_state(rank_one)  # the reduction torchmetrics' sync applies (sum of the states)
    expected = frechet_distance(real.float().flatten(1), fake.float().flatten(1))
    assert float(rank_zero.compute()) == pytest.approx(expected, rel=1e-9)


def test_fid_with_cached_real_statistics_and_float_images() -> None:
    extractor = PixelFeatures()
    real = pixel_images(300, seed=0)
    generated = torch.rand(200, 1, 2, 2, generator=torch.Generator().manual_seed(2)) * 2.2 - 1.1  # overshoots [-1, 1]
    metric = FrechetDistance(extractor, real_statistics=FeatureStatistics.from_features(real.float().flatten(1)))
    metric.update(generated, real=False)
    expected = frechet_distance(real.float().flatten(1), quantize_to_uint8(generated).float().flatten(1))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)
    metric.reset()  # a new evaluation keeps the cached real side and starts the generated side afresh
    metric.update(generated[:50], real=False)
    expected = frechet_distance(real.float().flatten(1), quantize_to_uint8(generated[:50]).float().flatten(1))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)


def test_fid_metric_rejects_bad_input() -> None:
    extractor = PixelFeatures()
    metric = FrechetDistance(extractor, real_statistics=FeatureStatistics.from_features(torch.randn(10, 4)))
    with pytest.raises(ValueError, match="real=True"):
        metric.update(pixel_images(4, seed=0), real=True)
    metric.update(pixel_images(1, seed=0), real=False)
    with pytest.raises(ValueError, match="at least 2 generated samples; got 1"):
        metric.compute()
    with pytest.raises(ValueError, match="5-d features.*4-d"):
        metric.set_real_statistics(FeatureStatistics.from_features(torch.randn(10, 5)))
    with pytest.raises(ValueError, match="int32"):
        metric.update(pixel_images(4, seed=0).int(), real=False)
    with pytest.raises(ValueError, match="FeatureExtractor"):
        FrechetDistance(torch.nn.Identity())


def test_extractor_stays_in_eval_mode() -> None:
    metric = FrechetDistance(PixelFeatures())
    metric.train()
    assert not metric.extractor.training


def test_kid_matches_closed_form_for_zero_mean_gaussians() -> None:
    """For zero-mean Gaussians and k(x, y) = (x.y / d + 1)^3, odd moments vanish and
    MMD^2 = 3 / d^2 ||S_1 - S_2||_F^2. The estimator is unbiased: the mean of R independent
    estimates must lie within 4 standard errors of the closed form."""
    variances_real, variances_fake = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.5, 1.0, 0.5])
    dim = 3
    closed_form = 3.0 / dim**2 * float((variances_real - variances_fake).square().sum())
    generator = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(40):
        real = torch.randn(300, dim, generator=generator) * variances_real.sqrt()
        fake = torch.randn(300, dim, generator=generator) * variances_fake.sqrt()
        estimates.append(float(kernel_distance(real, fake, subsets=1, subset_size=300)[0]))
    estimates = torch.tensor(estimates, dtype=torch.float64)
    standard_error = float(estimates.std() / len(estimates) ** 0.5)
    assert abs(float(estimates.mean()) - closed_form) < 4 * standard_error
    assert standard_error < 0.1 * closed_form  # the check has power: the error bar is well below the value


def test_kid_does_not_depend_on_sample_order() -> None:
    generator = torch.Generator().manual_seed(1)
    real, fake = torch.randn(200, 5, generator=generator), torch.randn(150, 5, generator=generator) + 0.3
    reference = kernel_distance(real, fake, subsets=5, subset_size=100)
    shuffled = kernel_distance(real.flip(0), fake[torch.randperm(150, generator=generator)], subsets=5, subset_size=100)
    assert torch.equal(reference[0], shuffled[0]) and torch.equal(reference[1], shuffled[1])
    with pytest.raises(ValueError, match="subset_size = 300"):
        kernel_distance(real, fake, subset_size=300)


def test_kid_metric_merged_from_shards_with_cached_real_features() -> None:
    extractor = PixelFeatures()
    real, fake = pixel_images(120, seed=0), pixel_images(110, seed=1, low=30)
    real_features = extract_features(extractor, real)
    rank_zero = KernelDistance(extractor, real_features=real_features, subsets=4, subset_size=50)
    rank_one = KernelDistance(extractor, real_features=real_features, subsets=4, subset_size=50)
    rank_zero.update(fake[60:], real=False)
    rank_one.update(fake[:60], real=False)
    rank_zero.merge_state(rank_one)
    expected = kernel_distance(real_features, fake.float().flatten(1), subsets=4, subset_size=50)
    mean, std = rank_zero.compute()
    assert torch.equal(mean, expected[0]) and torch.equal(std, expected[1])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        rank_zero.set_real_features(torch.randn(10, 3))
