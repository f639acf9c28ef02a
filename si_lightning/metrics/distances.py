"""FID and KID metric objects for the callbacks: torchmetrics' metrics on our feature extractors.

`FrechetDistance` subclasses torchmetrics' ``FrechetInceptionDistance``: generated images
accumulate into its fake-side states (feature sum, sum of outer products, count) through
``update(images, real=False)``, and ``compute()`` merges them across ranks by torchmetrics' own
sync (a sum of the three states). The real side is usually injected from the statistics cache as
a `FeatureStatistics` (mean, covariance) kept outside torchmetrics' states: states are summed over
ranks at sync, so real sums written into them on every rank would be counted world-size times.
Without injected statistics, real images go through ``update(images, real=True)`` as in torchmetrics.
``compute()`` evaluates `frechet_distance_from_statistics` (float64, symmetric square root) rather
than torchmetrics' eigenvalues of the non-symmetric product.

`KernelDistance` does the same for KID (unbiased polynomial-kernel MMD^2 over random subsets);
its real features (not just statistics) come from the cache entry (``keep_features=True``).

Both accept uint8 images or floating-point images in [-1, 1], which are quantised by
`quantize_to_uint8` before features are extracted.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd
from torchmetrics.utilities.data import dim_zero_cat

from si_lightning.metrics.feature_extractor import FeatureExtractor
from si_lightning.metrics.frechet import frechet_distance_from_statistics
from si_lightning.metrics.quantize import as_uint8_images
from si_lightning.metrics.statistics import FeatureStatistics


def _check_extractor(extractor: object) -> FeatureExtractor:
    if not isinstance(extractor, FeatureExtractor):
        raise ValueError(f"extractor must be a FeatureExtractor (see build_feature_extractor); got {type(extractor)}")
    return extractor


def _statistics_from_sums(total: Tensor, outer_total: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) from sum_i f_i, sum_i f_i f_i^T and N (float64)."""
    mean = total.double() / count
    covariance = (outer_total.double() - count * torch.outer(mean, mean)) / (count - 1)
    return mean, covariance


class FrechetDistance(FrechetInceptionDistance):
    """FID on a `FeatureExtractor`, fake side merged across ranks, real side from the cache or from updates."""

    def __init__(
        self, extractor: FeatureExtractor, real_statistics: FeatureStatistics | None = None, **kwargs: Any
    ) -> None:
        super().__init__(feature=_check_extractor(extractor), reset_real_features=False, normalize=False, **kwargs)
        self.real_statistics: FeatureStatistics | None = None
        if real_statistics is not None:
            self.set_real_statistics(real_statistics)

    @property
    def extractor(self) -> FeatureExtractor:
        return self.inception

    def set_real_statistics(self, statistics: FeatureStatistics) -> None:
        """Use cached real statistics instead of real images (they are not summed across ranks)."""
        if statistics.feature_dim != self.extractor.feature_dim:
            raise ValueError(
                f"real statistics have {statistics.feature_dim}-d features but extractor {self.extractor.name!r} "
                f"produces {self.extractor.feature_dim}-d features"
            )
        self.real_statistics = statistics

    def update(self, images: Tensor, real: bool) -> None:
        """Add (B, C, H, W) images (uint8, or floats in [-1, 1]) to the real or the generated side."""
        if real and self.real_statistics is not None:
            raise ValueError("real statistics were set from the cache; update(..., real=True) would be ignored")
        super().update(as_uint8_images(images), real)

    def compute(self) -> Tensor:
        """Squared Fréchet distance (float64 scalar) between real and generated feature Gaussians."""
        fake_count = int(self.fake_features_num_samples)
        if fake_count < 2:
            raise ValueError(f"FID needs at least 2 generated samples; got {fake_count}")
        mean_fake, cov_fake = _statistics_from_sums(self.fake_features_sum, self.fake_features_cov_sum, fake_count)
        if self.real_statistics is not None:
            mean_real, cov_real = self.real_statistics.mean, self.real_statistics.covariance
        else:
            real_count = int(self.real_features_num_samples)
            if real_count < 2:
                raise ValueError(f"FID needs at least 2 real samples (or set_real_statistics); got {real_count}")
            mean_real, cov_real = _statistics_from_sums(self.real_features_sum, self.real_features_cov_sum, real_count)
        value = frechet_distance_from_statistics(mean_real, cov_real, mean_fake, cov_fake)
        return torch.tensor(value, dtype=torch.float64)


def _canonical_order(features: Tensor) -> Tensor:
    """Rows sorted by a fixed random projection: the order in which ranks or batches delivered them is forgotten."""
    direction = torch.randn(features.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return features[torch.argsort(features.double() @ direction.to(features.device))]


def kernel_distance(
    real_features: Tensor,
    fake_features: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """KID: mean and standard deviation over ``subsets`` of the unbiased MMD^2 with k(x, y) = (gamma x.y + coef)^degree.

    real_features (N_r, D), fake_features (N_f, D); each subset draws ``subset_size`` rows of each
    without replacement, from a generator seeded by ``seed`` after sorting rows into a canonical
    order, so the value does not depend on how samples were split across ranks. gamma defaults to 1/D.
    """
    for name, features in (("real_features", real_features), ("fake_features", fake_features)):
        if features.dim() != 2 or features.shape[0] < subset_size:
            raise ValueError(
                f"{name} has shape {tuple(features.shape)}; KID needs (N, D) with N >= subset_size = {subset_size}"
            )
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"feature sizes differ: {real_features.shape[1]} (real) vs {fake_features.shape[1]} (fake)")
    if subset_size < 2 or subsets < 1:
        raise ValueError(f"KID needs subset_size >= 2 and subsets >= 1; got {subset_size} and {subsets}")
    real_features = _canonical_order(real_features.double())
    fake_features = _canonical_order(fake_features.double())
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        real_subset = real_features[torch.randperm(real_features.shape[0], generator=generator)[:subset_size]]
        fake_subset = fake_features[torch.randperm(fake_features.shape[0], generator=generator)[:subset_size]]
        scores.append(poly_mmd(real_subset, fake_subset, degree, gamma, coef))
    stacked = torch.stack(scores)
    return stacked.mean(), stacked.std(unbiased=False)


class KernelDistance(KernelInceptionDistance):
    """KID on a `FeatureExtractor`; fake features gathered across ranks, real features injected or updated."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        real_features: Tensor | None = None,
        subsets: int = 100,
        subset_size: int = 1000,
        degree: int = 3,
        gamma: float | None = None,
        coef: float = 1.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        with warnings.catch_warnings():
            # torchmetrics warns that KID keeps all features in memory; that is the documented design here.
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
            super().__init__(
                feature=_check_extractor(extractor),
                subsets=subsets,
                subset_size=subset_size,
                degree=degree,
                gamma=gamma,
                coef=coef,
                reset_real_features=False,
                normalize=False,
                **kwargs,
            )
        self.seed = seed
        self.injected_real_features: Tensor | None = None
        if real_features is not None:
            self.set_real_features(real_features)

    @property
    def extractor(self) -> FeatureExtractor:
        return self.inception

    def set_real_features(self, features: Tensor) -> None:
        """Use cached real features (N, D), e.g. `FeatureStatistics.features`, instead of real images."""
        if features.dim() != 2 or features.shape[1] != self.extractor.feature_dim:
            raise ValueError(
                f"real features must be (N, {self.extractor.feature_dim}) for extractor {self.extractor.name!r}; "
                f"got {tuple(features.shape)}"
            )
        self.injected_real_features = features.detach().cpu()

    def update(self, images: Tensor, real: bool) -> None:
        """Add (B, C, H, W) images (uint8, or floats in [-1, 1]) to the real or the generated side."""
        if real and self.injected_real_features is not None:
            raise ValueError("real features were set from the cache; update(..., real=True) would be ignored")
        super().update(as_uint8_images(images), real)

    def compute(self) -> tuple[Tensor, Tensor]:
        """(mean, standard deviation) of KID over subsets, see `kernel_distance`."""
        if self.injected_real_features is not None:
            real = self.injected_real_features
        elif self.real_features:
            real = dim_zero_cat(self.real_features).cpu()
        else:
            raise ValueError("KID has no real features: call set_real_features or update(..., real=True)")
        if not self.fake_features:
            raise ValueError("KID has no generated features: call update(..., real=False)")
        fake = dim_zero_cat(self.fake_features).cpu()
        return kernel_distance(
            real, fake, self.subsets, self.subset_size, self.degree, self.gamma, self.coef, seed=self.seed
        )
