"""Closed-form oracle of the multimarginal interpolant for Gaussian marginals (docs/math.md section 12).

x_k ~ N(m_k, C_k) independent across k and of z ~ N(0, I). Then x(alpha) = sum_k alpha_k x_k + gamma z
is Gaussian, N(mu, Sigma) with mu = sum_k alpha_k m_k and Sigma = sum_k alpha_k^2 C_k + gamma^2 I, and
(x_k, x(alpha)) are jointly Gaussian with Cov(x_k, x(alpha)) = alpha_k C_k, Cov(z, x(alpha)) = gamma I, so
the conditional expectations are the linear regressions

    g_k(alpha, x) = m_k + alpha_k C_k Sigma^{-1} (x - mu),    eta(alpha, x) = gamma Sigma^{-1} (x - mu),

and the score is -Sigma^{-1} (x - mu). x is (batch, d); use float64 for tests to the digit.

``GaussianMixtureMarginals``: each marginal a mixture of classes, the K marginals of one draw either of
one shared class (the label-shared coupling) or of independent classes; the fields are the posterior-
weighted sums of the fields above over the class tuples.
"""

from __future__ import annotations

import itertools

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


class GaussianMixtureMarginals:
    """Exact g_k, eta and score when marginal k is the class mixture sum_c w_c N(m_kc, C_kc).

    How the K marginals of one draw are coupled decides the fields:

    - ``label-shared``: one class c ~ w for the whole draw, then x_k ~ N(m_kc, C_kc) independently given c;
    - ``independent``: each x_k has its own class c_k ~ w, independently across k.

    Either way the draw is a mixture over class tuples t = (c_0 .. c_{K-1}) (the diagonal tuples with
    weight w_c, or all C^K tuples with weight prod_k w_{c_k}) of independent Gaussian marginals, so with
    the posterior p(t | x) proportional to weight_t N(x; mu_t(alpha), Sigma_t(alpha)) (``GaussianMarginals``
    of the tuple),

        g_k = sum_t p(t | x) [m_{k t_k} + alpha_k C_{k t_k} Sigma_t^{-1} (x - mu_t)],   likewise eta and the score.

    Under ``label-shared`` the tuples weighting g_k are those of x's own class, so g_k is class-consistent.

    Args:
        weights: (C,) class probabilities.
        means: (K, C, d).
        covariances: (K, C, d, d), each positive definite.
        interpolant: the multimarginal interpolant.
        coupling: ``label-shared`` or ``independent``.
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        covariances: Tensor,
        interpolant: MultimarginalInterpolant,
        coupling: str = "label-shared",
    ) -> None:
        means = torch.as_tensor(means)
        weights = torch.as_tensor(weights, dtype=means.dtype)
        covariances = torch.as_tensor(covariances, dtype=means.dtype)
        count, classes, dim = means.shape
        if count != interpolant.num_marginals or weights.shape != (classes,):
            raise ValueError(
                f"means must have shape ({interpolant.num_marginals}, C, d) and weights (C,), got "
                f"{tuple(means.shape)} and {tuple(weights.shape)}"
            )
        if covariances.shape != (count, classes, dim, dim):
            raise ValueError(
                f"covariances must have shape {(count, classes, dim, dim)}, got {tuple(covariances.shape)}"
            )
        if coupling == "label-shared":
            tuples = [(c,) * count for c in range(classes)]
        elif coupling == "independent":
            tuples = list(itertools.product(range(classes), repeat=count))
        else:
            raise ValueError(f"coupling must be 'label-shared' or 'independent', got {coupling!r}")
        weights = weights / weights.sum()
        self.weights, self.means, self.covariances = weights, means, covariances
        self.interpolant, self.dim, self.coupling = interpolant, dim, coupling
        self.tuples = torch.tensor(tuples)  # (T, K) the class of each marginal in each tuple
        marginals = torch.arange(count)
        self.tuple_weights = weights[self.tuples].prod(dim=1)  # (T,)
        self.components = [
            GaussianMarginals(means[marginals, t], covariances[marginals, t], interpolant) for t in self.tuples
        ]

    def posterior(self, alpha: Tensor, x: Tensor) -> Tensor:
        """p(t | x(alpha) = x): (batch, T)."""
        alpha = alpha.to(x.dtype)
        logits = []
        for weight, component in zip(self.tuple_weights, self.components, strict=True):
            mean, covariance = component.moments(alpha)
            normal = torch.distributions.MultivariateNormal(mean, covariance)
            logits.append(weight.log() + normal.log_prob(x))
        return torch.softmax(torch.stack(logits, dim=1), dim=1)

    def predict(self, alpha: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(g (batch, K, d), eta (batch, d) or None when gamma = 0) at (alpha (batch, K), x (batch, d))."""
        posterior = self.posterior(alpha, x)
        fields = [component.predict(alpha, x) for component in self.components]
        g = torch.einsum("bt,tbki->bki", posterior, torch.stack([g for g, _ in fields]))
        if not self.interpolant.has_denoiser:
            return g, None
        return g, torch.einsum("bt,tbi->bi", posterior, torch.stack([eta for _, eta in fields]))

    def output(self, alpha: Tensor, x: Tensor) -> Tensor:
        """The fields stacked as a network emits them: (batch, outputs * d) = [g_0, .., g_{K-1}, eta]."""
        g, eta = self.predict(alpha, x)
        fields = g if eta is None else torch.cat([g, eta[:, None]], dim=1)
        return fields.flatten(1)

    def score(self, alpha: Tensor, x: Tensor) -> Tensor:
        """grad log rho_alpha(x) = sum_t p(t | x) (-Sigma_t^{-1} (x - mu_t)): (batch, d)."""
        posterior = self.posterior(alpha, x)
        scores = torch.stack([component.score(alpha, x) for component in self.components])
        return torch.einsum("bt,tbi->bi", posterior, scores)

    def sample(self, count: int, generator: torch.Generator | None = None) -> tuple[list[Tensor], Tensor]:
        """One coupled draw of all K marginals: (K tensors (count, d), classes (count, K))."""
        rows = torch.multinomial(self.tuple_weights, count, replacement=True, generator=generator)
        classes = self.tuples[rows]
        xs = []
        for marginal in range(self.interpolant.num_marginals):
            roots = torch.linalg.cholesky(self.covariances[marginal])[classes[:, marginal]]  # (count, d, d)
            noise = torch.randn(count, self.dim, dtype=self.means.dtype, generator=generator)
            xs.append(self.means[marginal, classes[:, marginal]] + torch.einsum("bij,bj->bi", roots, noise))
        return xs, classes
