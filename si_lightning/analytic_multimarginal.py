"""Closed-form oracle of the multimarginal interpolant for Gaussian marginals (docs/math.md section 12).

x_k ~ N(m_k, C_k) independent across k and of z ~ N(0, I). Then x(alpha) = sum_k alpha_k x_k + gamma z
is Gaussian, N(mu, Sigma) with mu = sum_k alpha_k m_k and Sigma = sum_k alpha_k^2 C_k + gamma^2 I, and
(x_k, x(alpha)) are jointly Gaussian with Cov(x_k, x(alpha)) = alpha_k C_k, Cov(z, x(alpha)) = gamma I, so
the conditional expectations are the linear regressions

    g_k(alpha, x) = m_k + alpha_k C_k Sigma^{-1} (x - mu),    eta(alpha, x) = gamma Sigma^{-1} (x - mu),

and the score is -Sigma^{-1} (x - mu). x is (batch, d); use float64 for tests to the digit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.interpolants.multimarginal import MultimarginalInterpolant


class GaussianMarginals:
    """Exact g_k, eta and score for independent Gaussian marginals N(m_k, C_k), k = 0 .. K-1.

    Args:
        means: (K, d).
        covariances: (K, d, d), symmetric positive semi-definite; Sigma(alpha) must be invertible
            where the fields are evaluated (it is wherever gamma > 0, or any alpha_k > 0 with C_k definite).
        interpolant: the multimarginal interpolant whose x(alpha) the fields describe.
    """

    def __init__(self, means: Tensor, covariances: Tensor, interpolant: MultimarginalInterpolant) -> None:
        means = torch.as_tensor(means)
        covariances = torch.as_tensor(covariances, dtype=means.dtype)
        if means.dim() != 2 or means.shape[0] != interpolant.num_marginals:
            raise ValueError(f"means must have shape ({interpolant.num_marginals}, d), got {tuple(means.shape)}")
        count, dim = means.shape
        if covariances.shape != (count, dim, dim):
            raise ValueError(f"covariances must have shape ({count}, {dim}, {dim}), got {tuple(covariances.shape)}")
        self.means = means
        self.covariances = 0.5 * (covariances + covariances.transpose(-1, -2))
        self.interpolant = interpolant
        self.dim = dim

    def moments(self, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """(mu (batch, d), Sigma (batch, d, d)) of x(alpha) for alpha (batch, K)."""
        alpha = alpha.to(self.means.dtype)
        mean = alpha @ self.means
        gamma = self.interpolant.gamma(alpha)
        covariance = torch.einsum("bk,kij->bij", alpha**2, self.covariances)
        covariance = covariance + gamma[:, None, None] ** 2 * torch.eye(self.dim, dtype=alpha.dtype)
        return mean, covariance

    def _whitened(self, alpha: Tensor, x: Tensor) -> Tensor:
        """Sigma^{-1} (x - mu): (batch, d)."""
        mean, covariance = self.moments(alpha)
        return torch.linalg.solve(covariance, (x - mean).unsqueeze(-1)).squeeze(-1)

    def predict(self, alpha: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(g (batch, K, d), eta (batch, d) or None when gamma = 0) at (alpha (batch, K), x (batch, d))."""
        alpha = alpha.to(x.dtype)
        whitened = self._whitened(alpha, x)
        regression = torch.einsum("kij,bj->bki", self.covariances, whitened)  # C_k Sigma^{-1} (x - mu)
        g = self.means[None] + alpha[:, :, None] * regression
        if not self.interpolant.has_denoiser:
            return g, None
        return g, self.interpolant.gamma(alpha)[:, None] * whitened

    def output(self, alpha: Tensor, x: Tensor) -> Tensor:
        """The fields stacked as a network emits them: (batch, outputs * d) = [g_0, .., g_{K-1}, eta]."""
        g, eta = self.predict(alpha, x)
        fields = g if eta is None else torch.cat([g, eta[:, None]], dim=1)
        return fields.flatten(1)

    def score(self, alpha: Tensor, x: Tensor) -> Tensor:
        """grad log rho_alpha(x) = -Sigma^{-1} (x - mu): (batch, d)."""
        return -self._whitened(alpha.to(x.dtype), x)

    def sample(self, marginal: int, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``count`` draws (count, d) of marginal ``marginal``."""
        root = torch.linalg.cholesky(self.covariances[marginal])
        noise = torch.randn(count, self.dim, dtype=self.means.dtype, generator=generator)
        return self.means[marginal] + noise @ root.T
