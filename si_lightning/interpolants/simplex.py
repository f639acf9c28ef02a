"""The simplex of the multimarginal interpolant: latent noise gamma(alpha) and training densities of alpha.

alpha (batch, K) lies on the simplex {alpha_k >= 0, sum_k alpha_k = 1}; vertex e_k is marginal k
(docs/math.md section 12). The latent noise is a function of

    q(alpha) = (1 - sum_k alpha_k^2) / 2,     q = 0 exactly at the vertices,

which on the edge alpha = (1 - s) e_i + s e_j is q = s (1 - s): so ``brownian`` gamma = sqrt(a q) and
``quadratic`` gamma = a q restrict on every edge to the two-marginal families of the same names
(``si_lightning.interpolants.gamma``) with the same scale a. Along a path alpha(s),
dq/ds = -alpha . alpha'(s), and each family returns gamma, dgamma/ds and gamma dgamma/ds, the last
in closed form (finite at a vertex, where the Brownian dgamma/ds is infinite).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from si_lightning.checks import lookup


def simplex_q(alpha: Tensor) -> Tensor:
    """q(alpha) = (1 - |alpha|^2) / 2: alpha (batch, K) -> (batch,), zero at the vertices, s (1 - s) on an edge."""
    return 0.5 * (1.0 - (alpha * alpha).sum(dim=-1))


def simplex_q_rate(alpha: Tensor, alpha_rate: Tensor) -> Tensor:
    """dq/ds = -alpha . alpha'(s) along a path: (batch, K), (batch, K) -> (batch,)."""
    return -(alpha * alpha_rate).sum(dim=-1)


class SimplexGamma(ABC):
    """gamma(alpha) >= 0, zero at every vertex; with a scale a > 0 (``is_zero`` families have none)."""

    is_zero: bool = False
    singular_at_vertices: bool = False  # dgamma/ds infinite where a path leaves or reaches a vertex

    def __init__(self, scale: float = 1.0) -> None:
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"gamma_scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)

    def __call__(self, alpha: Tensor) -> Tensor:
        """gamma(alpha): (batch, K) -> (batch,)."""
        return self.of_q(simplex_q(alpha))

    @abstractmethod
    def of_q(self, q: Tensor) -> Tensor:
        """gamma as a function of q (batch,)."""

    @abstractmethod
    def rates(self, q: Tensor, q_rate: Tensor) -> tuple[Tensor, Tensor]:
        """(dgamma/ds, gamma dgamma/ds) from q and dq/ds, each (batch,); the second finite at q = 0."""


class SimplexBrownian(SimplexGamma):
    """gamma = sqrt(a q): sqrt(a s (1 - s)) on an edge; dgamma/ds = a q' / (2 gamma), gamma dgamma/ds = a q' / 2."""

    singular_at_vertices = True

    def of_q(self, q: Tensor) -> Tensor:
        return torch.sqrt(self.scale * q.clamp_min(0.0))

    def rates(self, q: Tensor, q_rate: Tensor) -> tuple[Tensor, Tensor]:
        return self.scale * q_rate / (2.0 * self.of_q(q)), 0.5 * self.scale * q_rate


class SimplexQuadratic(SimplexGamma):
    """gamma = a q: a s (1 - s) on an edge; dgamma/ds = a q', gamma dgamma/ds = a^2 q q'."""

    def of_q(self, q: Tensor) -> Tensor:
        return self.scale * q

    def rates(self, q: Tensor, q_rate: Tensor) -> tuple[Tensor, Tensor]:
        return self.scale * q_rate, self.scale**2 * q * q_rate


class SimplexZero(SimplexGamma):
    """gamma = 0: no latent noise (then no score and no denoiser)."""

    is_zero = True

    def of_q(self, q: Tensor) -> Tensor:
        return torch.zeros_like(q)

    def rates(self, q: Tensor, q_rate: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(q), torch.zeros_like(q)


SIMPLEX_GAMMAS: dict[str, type[SimplexGamma]] = {
    "brownian": SimplexBrownian,
    "quadratic": SimplexQuadratic,
    "zero": SimplexZero,
}


def get_simplex_gamma(name: str, scale: float) -> SimplexGamma:
    """The gamma family ``name`` (``SIMPLEX_GAMMAS``) with scale ``scale``."""
    return lookup(SIMPLEX_GAMMAS, name, "simplex gamma")(scale)


class SimplexSampler(ABC):
    """Draws alpha (batch, K) on the simplex for training."""

    def __call__(
        self,
        batch_size: int,
        num_marginals: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return self.draw(batch_size, num_marginals, torch.device(device), dtype, generator)

    @abstractmethod
    def draw(
        self, batch_size: int, num_marginals: int, device: torch.device, dtype: torch.dtype, generator
    ) -> Tensor: ...


class UniformSimplex(SimplexSampler):
    """alpha ~ Dirichlet(1, ..., 1), uniform on the simplex: normalised standard exponentials."""

    def draw(self, batch_size, num_marginals, device, dtype, generator) -> Tensor:
        uniform = torch.rand(batch_size, num_marginals, device=device, dtype=dtype, generator=generator)
        exponential = -torch.log1p(-uniform)  # rand is in [0, 1): log1p(-u) is finite
        return exponential / exponential.sum(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)


class EdgeSimplex(SimplexSampler):
    """alpha = (1 - s) e_i + s e_j: a uniformly chosen unordered pair i != j, s ~ U[0, 1].

    The edges are where the translations and the generation from a Gaussian vertex run, so training
    there directly matters most for those paths.
    """

    def draw(self, batch_size, num_marginals, device, dtype, generator) -> Tensor:
        if num_marginals < 2:
            raise ValueError(f"edges need at least 2 marginals, got {num_marginals}")
        first = torch.randint(num_marginals, (batch_size,), device=device, generator=generator)
        # second = first + offset (mod K), offset in 1..K-1: uniform over the other vertices.
        offset = torch.randint(1, num_marginals, (batch_size,), device=device, generator=generator)
        second = (first + offset) % num_marginals
        s = torch.rand(batch_size, device=device, dtype=dtype, generator=generator)
        alpha = torch.zeros(batch_size, num_marginals, device=device, dtype=dtype)
        alpha.scatter_(1, first[:, None], (1 - s)[:, None])
        alpha.scatter_add_(1, second[:, None], s[:, None])
        return alpha


class MixedSimplex(SimplexSampler):
    """With probability ``edge_probability`` an edge point (``EdgeSimplex``), else uniform (``UniformSimplex``)."""

    def __init__(self, edge_probability: float = 0.5) -> None:
        if not 0.0 <= edge_probability <= 1.0:
            raise ValueError(f"edge_probability must be in [0, 1], got {edge_probability!r}")
        self.edge_probability = float(edge_probability)

    def draw(self, batch_size, num_marginals, device, dtype, generator) -> Tensor:
        edges = EdgeSimplex().draw(batch_size, num_marginals, device, dtype, generator)
        interior = UniformSimplex().draw(batch_size, num_marginals, device, dtype, generator)
        on_edge = torch.rand(batch_size, 1, device=device, dtype=dtype, generator=generator) < self.edge_probability
        return torch.where(on_edge, edges, interior)


SIMPLEX_SAMPLERS: dict[str, type[SimplexSampler]] = {
    "uniform": UniformSimplex,
    "edges": EdgeSimplex,
    "mixed": MixedSimplex,
}
