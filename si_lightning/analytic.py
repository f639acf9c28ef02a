"""Closed-form Gaussian-mixture oracle (docs/math.md section 7).

x0 ~ N(m0, s0^2 I), x1 ~ sum_j p_j N(mu_j, S_j), z ~ N(0, I), independent. Per component
x_t ~ N(m_j, C_j) with m_j = alpha m0 + beta mu_j and C_j = alpha^2 s0^2 I + beta^2 S_j + gamma^2 I.
Because the base covariance is isotropic, C_j shares the eigenvectors U_j of S_j (eigenvalues
lambda_j): C_j = U_j diag(beta^2 lambda_j + alpha^2 s0^2 + gamma^2) U_j^T, so every field costs
one (d x d) rotation per component, even for d = 128.

All methods take t of shape (batch,) (or a scalar) and x of shape (batch, d) and work in the
dtype of x; use float64 for tests to the digit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from si_lightning.interpolants import Interpolant, as_batch_time


@dataclass(frozen=True)
class _Components:
    """Per-component quantities at (t, x): shapes (batch, K) or (batch, K, d)."""

    log_weights: Tensor  # log w_j(x), (batch, K), posterior weights of the components
    log_density: Tensor  # log rho_t(x), (batch,)
    rotated: Tensor  # y_j = U_j^T (x - m_j), (batch, K, d)
    variance: Tensor  # diag of U_j^T C_j U_j, (batch, K, d)
    variance_rate: Tensor  # diag of U_j^T C_j' U_j, (batch, K, d)


class GaussianMixture:
    """Exact velocity, score, denoiser, data prediction, divergence and log-density for one interpolant.

    Args:
        weights: mixture weights p_j (K,), positive; normalised here.
        means: component means mu_j (K, d).
        covariances: component covariances S_j (K, d, d), symmetric positive definite.
        interpolant: the interpolant whose x_t the fields describe.
        base_mean: m0 (d,), zero when None.
        base_std: s0 > 0.
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        covariances: Tensor,
        interpolant: Interpolant,
        base_mean: Tensor | None = None,
        base_std: float = 1.0,
    ) -> None:
        means = torch.as_tensor(means)
        dtype = means.dtype if means.is_floating_point() else torch.get_default_dtype()
        means = means.to(dtype)
        weights = torch.as_tensor(weights, dtype=dtype)
        covariances = torch.as_tensor(covariances, dtype=dtype)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        count, dim = means.shape
        if weights.shape != (count,) or bool((weights <= 0).any()):
            raise ValueError(f"weights must be positive with shape ({count},), got {weights.tolist()}")
        if covariances.shape != (count, dim, dim):
            raise ValueError(f"covariances must have shape ({count}, {dim}, {dim}), got {tuple(covariances.shape)}")
        if not base_std > 0:
            raise ValueError(f"base_std must be > 0, got {base_std!r}")
        self.interpolant = interpolant
        self.weights = weights / weights.sum()
        self.means = means
        self.covariances = 0.5 * (covariances + covariances.transpose(-1, -2))
        eigenvalues, eigenvectors = torch.linalg.eigh(self.covariances)
        if bool((eigenvalues <= 0).any()):
            raise ValueError("covariances must be positive definite")
        self.eigenvalues, self.eigenvectors = eigenvalues, eigenvectors  # (K, d), (K, d, d)
        self.base_mean = torch.zeros(dim, dtype=dtype) if base_mean is None else torch.as_tensor(base_mean, dtype=dtype)
        self.base_std = float(base_std)
        self.dim = dim

    # ----------------------------------------------------------------------------------- sampling
    def sample_data(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw x1 ~ rho1: (count, d)."""
        components = torch.multinomial(self.weights, count, replacement=True, generator=generator)
        noise = torch.randn(count, self.dim, dtype=self.means.dtype, generator=generator)
        roots = self.eigenvectors * self.eigenvalues.sqrt().unsqueeze(-2)  # U diag(sqrt lambda)
        return self.means[components] + torch.einsum("nij,nj->ni", roots[components], noise)

    def sample_base(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw x0 ~ N(m0, s0^2 I): (count, d)."""
        noise = torch.randn(count, self.dim, dtype=self.means.dtype, generator=generator)
        return self.base_mean + self.base_std * noise

    def base_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; m0, s0^2 I): (batch,)."""
        squared = ((x - self.base_mean) / self.base_std).pow(2).sum(-1)
        return -0.5 * squared - self.dim * (math.log(self.base_std) + 0.5 * math.log(2 * math.pi))

    # ------------------------------------------------------------------------------------ algebra
    def _components(self, t: Tensor, x: Tensor) -> tuple[_Components, object]:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape (batch, {self.dim}), got {tuple(x.shape)}")
        t = as_batch_time(t, x.shape[0], x)
        c = self.interpolant.coefficients(t)
        alpha, beta, gamma = (v[:, None, None] for v in (c.alpha, c.beta, c.gamma))
        beta_dot = c.beta_dot[:, None, None]
        alpha_alpha_dot, gamma_gamma_dot = c.alpha_alpha_dot[:, None, None], c.gamma_gamma_dot[:, None, None]
        lam, s0_sq = self.eigenvalues.unsqueeze(0), self.base_std**2
        variance = beta**2 * lam + alpha**2 * s0_sq + gamma**2
        variance_rate = 2 * (beta * beta_dot * lam + alpha_alpha_dot * s0_sq + gamma_gamma_dot)
        centres = alpha * self.base_mean + beta * self.means.unsqueeze(0)  # (batch, K, d)
        rotated = torch.einsum("kji,bkj->bki", self.eigenvectors, x.unsqueeze(1) - centres)
        log_normal = -0.5 * (rotated.pow(2) / variance + variance.log()).sum(-1) - 0.5 * self.dim * math.log(
            2 * math.pi
        )
        joint = self.weights.log() + log_normal
        log_density = torch.logsumexp(joint, dim=-1)
        parts = _Components(joint - log_density.unsqueeze(-1), log_density, rotated, variance, variance_rate)
        return parts, c

    def _rotate_back(self, y: Tensor) -> Tensor:
        """U_j y_j: (batch, K, d) -> (batch, K, d)."""
        return torch.einsum("kij,bkj->bki", self.eigenvectors, y)

    def _mix(self, parts: _Components, per_component: Tensor) -> Tensor:
        """sum_j w_j f_j: (batch, K, d) -> (batch, d)."""
        return (parts.log_weights.exp().unsqueeze(-1) * per_component).sum(1)

    def _component_scores(self, parts: _Components) -> Tensor:
        """s_j = -C_j^{-1} (x - m_j): (batch, K, d)."""
        return self._rotate_back(-parts.rotated / parts.variance)

    def _component_velocities(self, parts: _Components, c) -> Tensor:
        """b_j = m_j' + (1/2) C_j' C_j^{-1} (x - m_j): (batch, K, d)."""
        centre_rates = c.alpha_dot[:, None, None] * self.base_mean + c.beta_dot[:, None, None] * self.means
        return centre_rates + self._rotate_back(0.5 * parts.variance_rate / parts.variance * parts.rotated)

    # ------------------------------------------------------------------------------------- fields
    def log_prob(self, t: Tensor | float, x: Tensor) -> Tensor:
        """log rho_t(x): (batch,)."""
        return self._components(torch.as_tensor(t), x)[0].log_density

    def velocity(self, t: Tensor | float, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """b(t, x) = sum_j w_j [m_j' + (1/2) C_j' C_j^{-1} (x - m_j)]: (batch, d)."""
        parts, c = self._components(torch.as_tensor(t), x)
        return self._mix(parts, self._component_velocities(parts, c))

    def score(self, t: Tensor | float, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """s(t, x) = grad log rho_t(x) = sum_j w_j s_j: (batch, d)."""
        parts, _ = self._components(torch.as_tensor(t), x)
        return self._mix(parts, self._component_scores(parts))

    def velocity_and_score(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        """(b, s) from one computation of the per-component quantities (an SDE step needs both)."""
        parts, c = self._components(torch.as_tensor(t), x)
        return self._mix(parts, self._component_velocities(parts, c)), self._mix(parts, self._component_scores(parts))

    def velocity_plus_score(self, t: Tensor | float, x: Tensor, weight: Tensor | float) -> Tensor:
        """b + weight s (weight 0-d or (batch,)): (batch, d), at the cost of b alone.

        b_j and s_j are rotations back of diagonal scalings of the same residual, so
        b_j + w s_j = m_j' + U_j [((1/2) C_j' - w) / C_j (rotated residual)]: one rotation back, not two.
        """
        parts, c = self._components(torch.as_tensor(t), x)
        weight = torch.as_tensor(weight, dtype=x.dtype, device=x.device)
        weight = weight.reshape(-1, 1, 1) if weight.dim() == 1 else weight
        centre_rates = c.alpha_dot[:, None, None] * self.base_mean + c.beta_dot[:, None, None] * self.means
        scaled = (0.5 * parts.variance_rate - weight) / parts.variance * parts.rotated
        return self._mix(parts, centre_rates + self._rotate_back(scaled))

    def data(self, t: Tensor | float, x: Tensor) -> Tensor:
        """eta_1 = E[x1 | x_t = x] = sum_j w_j (mu_j + beta S_j C_j^{-1} (x - m_j)): (batch, d)."""
        parts, c = self._components(torch.as_tensor(t), x)
        inner = self._rotate_back(self.eigenvalues * parts.rotated / parts.variance)
        return self._mix(parts, self.means + c.beta[:, None, None] * inner)

    def base(self, t: Tensor | float, x: Tensor) -> Tensor:
        """eta_0 = E[x0 | x_t = x] = m0 + alpha s0^2 C^{-1}-weighted residual: (batch, d)."""
        parts, c = self._components(torch.as_tensor(t), x)
        inner = self._rotate_back(parts.rotated / parts.variance)
        return self._mix(parts, self.base_mean + c.alpha[:, None, None] * self.base_std**2 * inner)

    def latent(self, t: Tensor | float, x: Tensor) -> Tensor:
        """eta_z = E[z | x_t = x] = sum_j w_j gamma C_j^{-1} (x - m_j): (batch, d)."""
        parts, c = self._components(torch.as_tensor(t), x)
        return c.gamma[:, None] * self._mix(parts, self._rotate_back(parts.rotated / parts.variance))

    def denoiser(self, t: Tensor | float, x: Tensor) -> Tensor:
        """E[noise | x_t]: the base x0 for a one-sided interpolant, the latent z otherwise."""
        return self.base(t, x) if self.interpolant.one_sided else self.latent(t, x)

    def interpolant_derivative(self, t: Tensor | float, x: Tensor) -> Tensor:
        """v = E[alpha' x0 + beta' x1 | x_t = x]: (batch, d)."""
        c = self.interpolant.coefficients(as_batch_time(torch.as_tensor(t), x.shape[0], x))
        return c.alpha_dot[:, None] * self.base(t, x) + c.beta_dot[:, None] * self.data(t, x)

    def divergence(self, t: Tensor | float, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """div b = sum_j w_j [(1/2) tr(C_j' C_j^{-1}) + (s_j - s) . b_j]: (batch,)."""
        parts, c = self._components(torch.as_tensor(t), x)
        scores = self._component_scores(parts)
        velocities = self._component_velocities(parts, c)
        weights = parts.log_weights.exp()
        mixed_score = (weights.unsqueeze(-1) * scores).sum(1, keepdim=True)
        trace = 0.5 * (parts.variance_rate / parts.variance).sum(-1)
        return (weights * (trace + ((scores - mixed_score) * velocities).sum(-1))).sum(1)


class ConditionalGaussian:
    """Exact conditional velocity of a data-dependent coupling around a Gaussian (docs/math.md section 6, Couplings).

    Data x1 ~ N(mu, S); the coupling observes xi = x1 + sigma zeta (a degraded x1, the centre of the
    base, as U(D(x1)) is for super-resolution) and draws the base x0 = xi + s0 zeta', zeta, zeta' ~ N(0, I).
    Linear interpolant, gamma = 0: x_t = (1 - t) x0 + t x1.

    Given xi, x1 and x0 are independent Gaussians:
        x1 | xi ~ N(m, P),  P = (S^-1 + sigma^-2 I)^-1,  m = P (S^-1 mu + sigma^-2 xi),
        x0 | xi ~ N(xi, s0^2 I),
    so x_t | xi ~ N(m_t, C_t) with m_t = (1 - t) xi + t m and C_t = (1 - t)^2 s0^2 I + t^2 P, and the
    conditional velocity b(t, x | xi) = E[x1 - x0 | x_t = x, xi] is affine in x:
        b = (m - xi) + (1/2) C_t' C_t^-1 (x - m_t),   C_t' = -2 (1 - t) s0^2 I + 2 t P.
    The probability-flow ODE from x0 ~ N(xi, s0^2 I) ends in N(m, P), the law of x1 given xi. With
    s0 = 0 (x0 = x1 + sigma zeta exactly) the flow from the single point x0 is degenerate
    (b = (x - x0) / t, C_0 = 0): a distribution of samples needs base noise s0 > 0.

    Args:
        mean: mu (d,).
        covariance: S (d, d), symmetric positive definite.
        sigma: the observation noise sigma > 0.
        base_std: s0 > 0, the base's noise around xi.
    """

    def __init__(self, mean: Tensor, covariance: Tensor, sigma: float, base_std: float) -> None:
        mean = torch.as_tensor(mean)
        dtype = mean.dtype if mean.is_floating_point() else torch.get_default_dtype()
        self.mean, self.covariance = mean.to(dtype), torch.as_tensor(covariance, dtype=dtype)
        dim = self.mean.shape[0]
        if self.covariance.shape != (dim, dim):
            raise ValueError(f"covariance must have shape ({dim}, {dim}), got {tuple(self.covariance.shape)}")
        if not sigma > 0 or not base_std > 0:
            raise ValueError(f"sigma and base_std must be > 0, got sigma={sigma!r}, base_std={base_std!r}")
        self.sigma, self.base_std, self.dim = float(sigma), float(base_std), dim
        precision = torch.linalg.inv(self.covariance) + torch.eye(dim, dtype=dtype) / self.sigma**2
        self.posterior_covariance = torch.linalg.inv(precision)
        self.posterior_covariance = 0.5 * (self.posterior_covariance + self.posterior_covariance.T)
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(self.posterior_covariance)

    def posterior_mean(self, observation: Tensor) -> Tensor:
        """m = P (S^-1 mu + sigma^-2 xi): (batch, d) -> (batch, d)."""
        prior = torch.linalg.solve(self.covariance, self.mean)
        return (prior + observation / self.sigma**2) @ self.posterior_covariance.T

    def observe(self, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """xi = x1 + sigma zeta: (batch, d)."""
        return x1 + self.sigma * torch.randn(x1.shape, generator=generator, dtype=x1.dtype)

    def sample_base(self, observation: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x0 = xi + s0 zeta': (batch, d)."""
        return observation + self.base_std * torch.randn(
            observation.shape, generator=generator, dtype=observation.dtype
        )

    def velocity(self, t: Tensor | float, x: Tensor, observation: Tensor) -> Tensor:
        """b(t, x | xi) = (m - xi) + (1/2) C_t' C_t^-1 (x - m_t): x, xi (batch, d) -> (batch, d)."""
        t = as_batch_time(torch.as_tensor(t), x.shape[0], x)[:, None]
        posterior = self.posterior_mean(observation)
        centre = (1 - t) * observation + t * posterior
        lam, s0_sq = self.eigenvalues, self.base_std**2
        variance = (1 - t) ** 2 * s0_sq + t**2 * lam  # (batch, d) in the eigenbasis of P
        rate = -2 * (1 - t) * s0_sq + 2 * t * lam
        rotated = (x - centre) @ self.eigenvectors
        return (posterior - observation) + (0.5 * rate / variance * rotated) @ self.eigenvectors.T
