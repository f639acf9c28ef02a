"""Fréchet distance between Gaussians fitted to two feature sets (the formula behind FID).

For features a ~ N(m_a, S_a) and b ~ N(m_b, S_b) the squared Fréchet (2-Wasserstein) distance is

    d^2 = |m_a - m_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}).

The reference implementations take tr(sqrtm(S_a S_b)) of the non-symmetric product (scipy's
``sqrtm`` or the eigenvalues of S_a S_b); both agree with the form above because S_a S_b is similar
to S_a^{1/2} S_b S_a^{1/2}. We use the symmetric form: two symmetric eigen-decompositions in float64,
with eigenvalues at round-off level (either sign) set to zero. It stays accurate when the
covariances are singular (dead feature units, fewer samples than feature dimensions), where the
product form needs an ad-hoc diagonal offset.

From features, with centred and scaled data C = (F - mean) / sqrt(N - 1) so that S = C^T C, the
cross term is also the nuclear norm (sum of singular values) of the (N_a, N_b) matrix C_a C_b^T:
the eigenvalues of S_a^{1/2} S_b S_a^{1/2} are the squared singular values of C_b S_a^{1/2}, i.e.
of C_b C_a^T. `frechet_distance` uses that route when N_a, N_b <= D (cost O(N^2 D) instead of
O(D^3)): FID of up to D samples needs no D x D decomposition.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _describe(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _check_features(features: Tensor, name: str) -> None:
    if not isinstance(features, Tensor) or features.dim() != 2:
        raise ValueError(f"{name} must be a (N, D) tensor of features; got {_describe(features)}")
    if features.shape[0] < 2:
        raise ValueError(f"{name} has N = {features.shape[0]} samples; a covariance needs N >= 2")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def feature_mean_and_covariance(features: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean (D,) and unbiased sample covariance (D, D), 1/(N - 1), of (N, D) features, in float64."""
    _check_features(features, "features")
    features = features.detach().to(torch.float64)
    mean = features.mean(dim=0)
    centered = features - mean
    covariance = centered.T @ centered / (features.shape[0] - 1)
    return mean, covariance


def _clean_eigenvalues(eigenvalues: Tensor) -> Tensor:
    """Eigenvalues of a PSD matrix with those at round-off level set to zero.

    A singular covariance (dead feature units, N <= D) has eigenvalues of order eps * lambda_max of
    either sign; their square roots, of order sqrt(eps * lambda_max), would add noise to the trace.
    Below D * eps * lambda_max (the noise floor of a symmetric eigen-solver) they are treated as zero.
    """
    floor = eigenvalues.shape[-1] * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > floor, eigenvalues, torch.zeros_like(eigenvalues))


def _psd_square_root(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite (D, D) matrix."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    roots = _clean_eigenvalues(eigenvalues).sqrt()
    return (eigenvectors * roots) @ eigenvectors.T


def _compute_device(*tensors: Tensor) -> torch.device:
    """The first CUDA device among the inputs (float64 linear algebra is fast there), else the CPU."""
    for tensor in tensors:
        if tensor.is_cuda:
            return tensor.device
    return torch.device("cpu")


def frechet_distance_from_statistics(mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor) -> float:
    """Squared Fréchet distance d^2 between N(mean_a, cov_a) and N(mean_b, cov_b).

    mean_*: (D,); cov_*: (D, D) symmetric positive semi-definite. Computed in float64 (on the GPU when an
    input is there, else on the CPU); O(D^3).
    """
    if not isinstance(mean_a, Tensor) or mean_a.dim() != 1:
        raise ValueError(f"mean_a must be a (D,) tensor; got {_describe(mean_a)}")
    dim = mean_a.shape[0]
    for name, value, shape in (("mean_b", mean_b, (dim,)), ("cov_a", cov_a, (dim, dim)), ("cov_b", cov_b, (dim, dim))):
        if not isinstance(value, Tensor) or tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match mean_a; got {_describe(value)}")
    device = _compute_device(mean_a, cov_a, mean_b, cov_b)
    mean_a, cov_a, mean_b, cov_b = (
        value.detach().to(device, torch.float64) for value in (mean_a, cov_a, mean_b, cov_b)
    )
    # Symmetrise: accumulated covariances are symmetric only up to round-off, and eigh reads one triangle.
    cov_a = (cov_a + cov_a.T) / 2
    cov_b = (cov_b + cov_b.T) / 2
    root_a = _psd_square_root(cov_a)
    middle = root_a @ cov_b @ root_a
    middle = (middle + middle.T) / 2
    trace_cross = _clean_eigenvalues(torch.linalg.eigvalsh(middle)).sqrt().sum()
    mean_term = (mean_a - mean_b).square().sum()
    return float(mean_term + cov_a.trace() + cov_b.trace() - 2.0 * trace_cross)


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Squared Fréchet distance between Gaussians fitted to (N_a, D) and (N_b, D) feature sets.

    Means and unbiased covariances are estimated in float64 (N >= 2 each); FID is this value on
    InceptionV3 pool features of uint8-quantised images. Uses the nuclear-norm form when
    N_a, N_b <= D and `frechet_distance_from_statistics` otherwise.
    """
    _check_features(features_a, "features_a")
    _check_features(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            f"feature sizes differ: features_a has D = {features_a.shape[1]}, features_b has D = {features_b.shape[1]}"
        )
    if max(features_a.shape[0], features_b.shape[0]) > features_a.shape[1]:
        mean_a, cov_a = feature_mean_and_covariance(features_a)
        mean_b, cov_b = feature_mean_and_covariance(features_b)
        return frechet_distance_from_statistics(mean_a, cov_a, mean_b, cov_b)
    device = _compute_device(features_a, features_b)
    features_a, features_b = (value.detach().to(device, torch.float64) for value in (features_a, features_b))
    mean_a, mean_b = features_a.mean(dim=0), features_b.mean(dim=0)
    scaled_a = (features_a - mean_a) / (features_a.shape[0] - 1) ** 0.5
    scaled_b = (features_b - mean_b) / (features_b.shape[0] - 1) ** 0.5
    trace_cross = torch.linalg.svdvals(scaled_a @ scaled_b.T).sum()
    mean_term = (mean_a - mean_b).square().sum()
    return float(mean_term + scaled_a.square().sum() + scaled_b.square().sum() - 2.0 * trace_cross)
