"""Pairs of Boltzmann densities with a known Delta F, each with exact samplers (docs/math.md section 10).

Every energy is in kT and unnormalised; ``delta_f()`` is F_b - F_a = -log(Z_b / Z_a):

- ``gaussians``: U_a = |x|^2 / 2 (rho_a = N(0, I)); U_b = sum_i (x_i - mu_i)^2 / (2 s_i^2) with
  mu_i = (-1)^i / 2 and s_i evenly spaced from 0.6 to 1.4 (i = 0..d-1). Delta F = -sum_i log s_i.
- ``mixtures``: two 2-D Gaussian mixtures, U = -log sum_j p_j exp(-(x - mu_j)^T S_j^{-1} (x - mu_j) / 2)
  (the normalisers of the components left out), Z = sum_j p_j 2 pi |S_j|^{1/2}; so under e^{-U} / Z
  component j has mass p_j |S_j|^{1/2} / sum_k p_k |S_k|^{1/2}, which is what the sampler draws.
- ``double-well``: separable, U(x) = sum_i u(x_i) with u_a(y) = 2 (y^2 - 1)^2 and
  u_b(y) = 2 (y^2 - 1)^2 + 1.5 y (the tilt favours the left well); Delta F = -d log(z_b / z_a) with
  z = int e^{-u(y)} dy by adaptive 1-D quadrature. Samples by rejection from the uniform density on
  [-3, 3] (the mass outside is below e^{-100}).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import quad
from torch import Tensor

from si_lightning.analytic import GaussianMixture
from si_lightning.checks import is_integer
from si_lightning.interpolants import Interpolant


class BoltzmannPair(ABC):
    """Two densities rho_a ~ exp(-U_a), rho_b ~ exp(-U_b) on R^d: energies (n, d) -> (n,), exact samples."""

    dims: int

    @abstractmethod
    def energy_a(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def energy_b(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def sample_a(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """(count, d) float64 samples of rho_a."""

    @abstractmethod
    def sample_b(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """(count, d) float64 samples of rho_b."""

    @abstractmethod
    def delta_f(self) -> float:
        """The reference F_b - F_a in kT."""


def _dims(dims: int, minimum: int = 1) -> int:
    if not is_integer(dims) or dims < minimum:
        raise ValueError(f"dims must be an integer >= {minimum}, got {dims!r}")
    return dims


class GaussianPair(BoltzmannPair):
    """rho_a = N(0, I) and rho_b = N(mu, diag(s^2)) in d dimensions (module docstring)."""

    def __init__(self, dims: int = 50) -> None:
        self.dims = _dims(dims)
        index = torch.arange(self.dims, dtype=torch.float64)
        self.mean = 0.5 * (1 - 2 * (index % 2))
        self.std = torch.linspace(0.6, 1.4, self.dims, dtype=torch.float64) if self.dims > 1 else torch.ones(1)

    def energy_a(self, x: Tensor) -> Tensor:
        return 0.5 * x.pow(2).sum(1)

    def energy_b(self, x: Tensor) -> Tensor:
        return 0.5 * ((x - self.mean.to(x)) / self.std.to(x)).pow(2).sum(1)

    def sample_a(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(count, self.dims, dtype=torch.float64, generator=generator)

    def sample_b(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mean + self.std * torch.randn(count, self.dims, dtype=torch.float64, generator=generator)

    def delta_f(self) -> float:
        return -float(self.std.log().sum())

    def oracle(self, interpolant: Interpolant) -> GaussianMixture:
        """The exact fields of ``interpolant`` from x0 ~ rho_a to x1 ~ rho_b (independent coupling)."""
        return GaussianMixture(
            torch.ones(1, dtype=torch.float64), self.mean[None], torch.diag(self.std**2)[None], interpolant
        )


class _Mixture:
    """U(x) = -log sum_j p_j exp(-q_j(x) / 2) for a 2-D Gaussian mixture (p, mu, S), and its sampler."""

    def __init__(self, weights: list[float], means: list[list[float]], covariances: list[list[list[float]]]) -> None:
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.tensor(means, dtype=torch.float64)
        self.covariances = torch.tensor(covariances, dtype=torch.float64)
        self.precisions = torch.linalg.inv(self.covariances)
        self.roots = torch.linalg.cholesky(self.covariances)

    def energy(self, x: Tensor) -> Tensor:
        residual = x.unsqueeze(1) - self.means.to(x)  # (n, K, 2)
        quadratic = torch.einsum("nki,kij,nkj->nk", residual, self.precisions.to(x), residual)
        return -torch.logsumexp(self.weights.to(x).log() - 0.5 * quadratic, dim=1)

    def sample(self, count: int, generator: torch.Generator | None) -> Tensor:
        # e^{-U} = sum_j p_j 2 pi |S_j|^{1/2} N(x; mu_j, S_j): component j has mass p_j |S_j|^{1/2}, not p_j.
        components = torch.multinomial(self.component_masses(), count, replacement=True, generator=generator)
        noise = torch.randn(count, 2, dtype=torch.float64, generator=generator)
        return self.means[components] + torch.einsum("nij,nj->ni", self.roots[components], noise)

    def component_masses(self) -> Tensor:
        """The probabilities of the components under e^{-U} / Z: p_j |S_j|^{1/2} / sum_k p_k |S_k|^{1/2}, (K,)."""
        masses = self.weights * torch.linalg.det(self.covariances).sqrt()
        return masses / masses.sum()

    def log_partition(self) -> float:
        """log Z = log sum_j p_j 2 pi |S_j|^{1/2}."""
        return float(
            torch.logsumexp(self.weights.log() + math.log(2 * math.pi) + 0.5 * torch.logdet(self.covariances), 0)
        )


class MixturePair(BoltzmannPair):
    """A two-component 2-D mixture (a) to a three-component one (b); module docstring."""

    dims = 2

    def __init__(self) -> None:
        self.mixture_a = _Mixture(
            [0.5, 0.5], [[-1.5, -1.0], [1.5, 1.0]], [[[0.4, 0.1], [0.1, 0.3]], [[0.3, -0.1], [-0.1, 0.5]]]
        )
        self.mixture_b = _Mixture(
            [0.2, 0.3, 0.5],
            [[-2.0, 1.0], [2.0, 2.0], [0.5, -2.0]],
            [[[0.30, 0.10], [0.10, 0.20]], [[0.20, -0.05], [-0.05, 0.40]], [[0.25, 0.0], [0.0, 0.15]]],
        )

    def energy_a(self, x: Tensor) -> Tensor:
        return self.mixture_a.energy(x)

    def energy_b(self, x: Tensor) -> Tensor:
        return self.mixture_b.energy(x)

    def sample_a(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mixture_a.sample(count, generator)

    def sample_b(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mixture_b.sample(count, generator)

    def delta_f(self) -> float:
        return self.mixture_a.log_partition() - self.mixture_b.log_partition()


class DoubleWellPair(BoltzmannPair):
    """Separable double wells in d dimensions, symmetric (a) and tilted (b); module docstring."""

    barrier, tilt, box = 2.0, 1.5, 3.0

    def __init__(self, dims: int = 10) -> None:
        self.dims = _dims(dims)

    def _well(self, y: Tensor) -> Tensor:
        return self.barrier * (y.pow(2) - 1).pow(2)

    def energy_a(self, x: Tensor) -> Tensor:
        return self._well(x).sum(1)

    def energy_b(self, x: Tensor) -> Tensor:
        return (self._well(x) + self.tilt * x).sum(1)

    def _coordinate_energy(self, tilt: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda y: self.barrier * (y**2 - 1) ** 2 + tilt * y

    def _rejection(self, tilt: float, count: int, generator: torch.Generator | None) -> Tensor:
        """Each coordinate by rejection from U[-box, box]: accept y with probability exp(-(u(y) - min u))."""
        energy = self._coordinate_energy(tilt)
        grid = np.linspace(-self.box, self.box, 200001)
        floor = float(energy(grid).min()) - 1e-3  # a lower bound of u (grid spacing 3e-5): acceptance <= 1
        needed = count * self.dims
        accepted: list[Tensor] = []
        total = 0
        while total < needed:
            proposal = (2 * torch.rand(2 * needed, dtype=torch.float64, generator=generator) - 1) * self.box
            uniform = torch.rand(2 * needed, dtype=torch.float64, generator=generator)
            values = self.barrier * (proposal.pow(2) - 1).pow(2) + tilt * proposal
            kept = proposal[uniform < torch.exp(-(values - floor))]
            accepted.append(kept)
            total += kept.numel()
        return torch.cat(accepted)[:needed].reshape(count, self.dims)

    def sample_a(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        return self._rejection(0.0, count, generator)

    def sample_b(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        return self._rejection(self.tilt, count, generator)

    def delta_f(self) -> float:
        def log_z(tilt: float) -> float:
            energy = self._coordinate_energy(tilt)
            value, _ = quad(lambda y: math.exp(-float(energy(np.asarray(y)))), -np.inf, np.inf, epsabs=0, epsrel=1e-12)
            return math.log(value)

        return -self.dims * (log_z(self.tilt) - log_z(0.0))


SYSTEMS: dict[str, type[BoltzmannPair]] = {
    "gaussians": GaussianPair,
    "mixtures": MixturePair,
    "double-well": DoubleWellPair,
}


def build_system(name: str, dims: int | None = None) -> BoltzmannPair:
    """The system ``name`` of ``SYSTEMS``; ``dims`` for those with a dimension (None: its default)."""
    if not isinstance(name, str) or name not in SYSTEMS:
        raise ValueError(f"unknown free-energy system {name!r}; expected one of: {', '.join(sorted(SYSTEMS))}")
    kind = SYSTEMS[name]
    if dims is None:
        return kind()
    if kind is MixturePair:
        if dims != 2:
            raise ValueError(f"system 'mixtures' is 2-dimensional; dims = {dims!r} must be 2 or null")
        return kind()
    return kind(dims)
