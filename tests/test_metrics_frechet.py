"""Fréchet distance against scipy's sqrtm formula and the Gaussian closed form; quantisation; metric names."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from si_lightning.metrics import (
    as_uint8_images,
    feature_mean_and_covariance,
    frechet_distance,
    frechet_distance_from_statistics,
    metric_logs,
    metric_name,
    quantize_to_uint8,
)


def random_covariance(dim: int, generator: torch.Generator) -> torch.Tensor:
    factor = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    return factor @ factor.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


def gaussian_features(mean: torch.Tensor, covariance: torch.Tensor, num: int, generator: torch.Generator):
    return (
        mean
        + torch.randn(num, mean.shape[0], generator=generator, dtype=torch.float64)
        @ torch.linalg.cholesky(covariance).T
    )


def features_with_exact_statistics(mean, covariance, num: int, generator: torch.Generator) -> torch.Tensor:
    """(num, D) features whose sample mean is exactly ``mean`` and unbiased sample covariance exactly ``covariance``."""
    noise = torch.randn(num, mean.shape[0], generator=generator, dtype=torch.float64)
    noise = noise - noise.mean(dim=0)
    whitening = torch.linalg.cholesky(noise.T @ noise / (num - 1))
    white = torch.linalg.solve_triangular(whitening, noise.T, upper=False).T
    return mean + white @ torch.linalg.cholesky(covariance).T


def scipy_frechet(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """The pytorch-fid / torch-fidelity formula: tr(sqrtm(S_a S_b)) with scipy."""
    a, b = features_a.numpy(), features_b.numpy()
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float((mean_a - mean_b) @ (mean_a - mean_b) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross))


@pytest.mark.parametrize("dim", [4, 16, 48])
def test_frechet_distance_matches_scipy_sqrtm(dim: int) -> None:
    generator = torch.Generator().manual_seed(dim)
    mean_a, mean_b = torch.zeros(dim, dtype=torch.float64), torch.randn(dim, generator=generator, dtype=torch.float64)
    features_a = gaussian_features(mean_a, random_covariance(dim, generator), 400, generator)
    features_b = gaussian_features(mean_b, random_covariance(dim, generator), 300, generator)
    expected = scipy_frechet(features_a, features_b)
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(features_b, features_a) == pytest.approx(expected, rel=1e-6)


def test_low_sample_route_matches_statistics_route() -> None:
    """With N <= D frechet_distance uses the nuclear norm of C_a C_b^T; it must equal the eigen route."""
    generator = torch.Generator().manual_seed(0)
    features_a = torch.randn(30, 40, generator=generator, dtype=torch.float64)
    features_b = 1.5 * torch.randn(25, 40, generator=generator, dtype=torch.float64) + 0.2
    by_statistics = frechet_distance_from_statistics(
        *feature_mean_and_covariance(features_a), *feature_mean_and_covariance(features_b)
    )
    assert frechet_distance(features_a, features_b) == pytest.approx(by_statistics, rel=1e-10)


@pytest.mark.parametrize("num", [10, 500])  # N <= D (nuclear-norm route) and N > D (eigen route)
def test_set_against_itself_is_zero(num: int) -> None:
    generator = torch.Generator().manual_seed(1)
    features = gaussian_features(torch.ones(32, dtype=torch.float64), random_covariance(32, generator), num, generator)
    scale = float(torch.trace(feature_mean_and_covariance(features)[1]))
    assert abs(frechet_distance(features, features)) < 1e-10 * scale
    assert abs(frechet_distance(features.float(), features.float())) < 1e-5 * scale


def commuting_gaussians(dim: int, generator: torch.Generator):
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    eigenvalues_a = torch.rand(dim, generator=generator, dtype=torch.float64) * 2 + 0.1
    eigenvalues_b = torch.rand(dim, generator=generator, dtype=torch.float64) * 3 + 0.05
    cov_a = rotation @ torch.diag(eigenvalues_a) @ rotation.T
    cov_b = rotation @ torch.diag(eigenvalues_b) @ rotation.T
    mean_a = torch.randn(dim, generator=generator, dtype=torch.float64)
    mean_b = torch.randn(dim, generator=generator, dtype=torch.float64)
    # |m_a - m_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) with a shared eigenbasis: sum_i (sqrt(a_i) - sqrt(b_i))^2.
    closed_form = float((mean_a - mean_b).square().sum() + (eigenvalues_a.sqrt() - eigenvalues_b.sqrt()).square().sum())
    return mean_a, cov_a, mean_b, cov_b, closed_form


def test_statistics_match_closed_form_for_commuting_covariances() -> None:
    mean_a, cov_a, mean_b, cov_b, closed_form = commuting_gaussians(24, torch.Generator().manual_seed(2))
    assert frechet_distance_from_statistics(mean_a, cov_a, mean_b, cov_b) == pytest.approx(closed_form, rel=1e-10)
    assert frechet_distance_from_statistics(mean_a, cov_a, mean_a, cov_a) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("num_a,num_b", [(300, 200), (12, 20)])
def test_features_with_known_statistics_match_closed_form(num_a: int, num_b: int) -> None:
    """Features built to have exactly the given sample mean and unbiased covariance: no Monte-Carlo error,
    so the value must equal the closed form to round-off (a 1/N covariance would be off by ~1/N)."""
    generator = torch.Generator().manual_seed(3)
    dim = 8
    mean_a, cov_a, mean_b, cov_b, closed_form = commuting_gaussians(dim, generator)
    features_a = features_with_exact_statistics(mean_a, cov_a, num_a, generator)
    features_b = features_with_exact_statistics(mean_b, cov_b, num_b, generator)
    assert frechet_distance(features_a, features_b) == pytest.approx(closed_form, rel=1e-9)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="N = 1"):
        frechet_distance(torch.zeros(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="N = 1"):
        feature_mean_and_covariance(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="D = 3.*D = 4"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(torch.full((5, 3), float("nan")), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        frechet_distance(torch.randn(5), torch.randn(5, 1))
    with pytest.raises(ValueError, match="cov_b"):
        frechet_distance_from_statistics(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(4))


def test_quantize_maps_minus_one_one_to_uint8_as_reference() -> None:
    images = torch.tensor([-7.0, -1.0, -0.999, 0.0, 0.5, 1.0, 1.5]).reshape(1, 1, 1, 7)
    # (x + 1) * 127.5 = 0, 0, 0.1275, 127.5, 191.25, 255, 255 -> round (half to even) -> 0 0 0 128 191 255 255
    expected = torch.tensor([0, 0, 0, 128, 191, 255, 255], dtype=torch.uint8).reshape(1, 1, 1, 7)
    assert torch.equal(quantize_to_uint8(images), expected)
    # Every uint8 level u survives the round trip through u / 127.5 - 1, the extractors' inverse map.
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(quantize_to_uint8(levels.double() / 127.5 - 1), levels)
    assert torch.equal(quantize_to_uint8(levels.float() / 127.5 - 1), levels)


def test_as_uint8_images_passes_uint8_and_rejects_other_integers() -> None:
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert as_uint8_images(images) is images
    with pytest.raises(ValueError, match="int64"):
        as_uint8_images(images.long())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        as_uint8_images(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="floating-point"):
        quantize_to_uint8(images)


def test_metric_names_carry_sampler_and_sample_count() -> None:
    assert metric_name("fid", "ode-dopri5", 2000) == "fid/ode-dopri5/n2000"
    assert metric_name("fid", "sde-250", 50000, extractor="digits") == "fid-digits/sde-250/n50000"
    logs = metric_logs({"fid": 3.5, "kid": 0.25}, sampler="ode-dopri5", num_samples=2000, nfe=128)
    assert logs == {"fid/ode-dopri5/n2000": 3.5, "kid/ode-dopri5/n2000": 0.25, "nfe/ode-dopri5/n2000": 128.0}
    with pytest.raises(ValueError, match="num_samples"):
        metric_name("fid", "ode-dopri5", 1)
    with pytest.raises(ValueError, match="sampler"):
        metric_name("fid", "ode/dopri5", 2000)
