"""Two-dimensional toy distributions and their datamodule.

Each toy draws (x (n, 2) float64, labels (n,) int64, -1 when unlabelled) from a generator; its
construction is given in closed form in the docstring, so tests check its statistics exactly.
The two Gaussian mixtures (``8-gaussians``, ``gaussian-mixture``) also give the exact fields of
any interpolant through ``oracle(interpolant)`` (si_lightning/analytic.py).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from si_lightning.analytic import GaussianMixture
from si_lightning.checks import is_integer, lookup
from si_lightning.couplings import Coupling
from si_lightning.data.base import CoupledDataModule, derived_seed
from si_lightning.data.datasets import InMemoryDataset
from si_lightning.interpolants import Interpolant

Sample = tuple[Tensor, Tensor]


def _unlabelled(count: int) -> Tensor:
    return torch.full((count,), -1, dtype=torch.long)


class ToyDistribution(ABC):
    """A 2-D distribution: ``sample(count, generator) -> (x (count, 2), labels (count,))``."""

    num_classes: int = 0

    @abstractmethod
    def sample(self, count: int, generator: torch.Generator | None = None) -> Sample: ...

    def mixture(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """(weights (K,), means (K, 2), covariances (K, 2, 2)) if this is a Gaussian mixture, else None."""
        return None


class MixtureToy(ToyDistribution):
    """x = mu_k + S_k^(1/2) n with k ~ weights, n ~ N(0, I); the label is the component k."""

    def __init__(self, weights: Tensor, means: Tensor, covariances: Tensor) -> None:
        self.weights = weights / weights.sum()
        self.means, self.covariances = means, covariances
        self.num_classes = len(weights)
        self.roots = torch.linalg.cholesky(covariances)

    def sample(self, count: int, generator: torch.Generator | None = None) -> Sample:
        labels = torch.multinomial(self.weights, count, replacement=True, generator=generator)
        noise = torch.randn(count, 2, dtype=torch.float64, generator=generator)
        return self.means[labels] + torch.einsum("nij,nj->ni", self.roots[labels], noise), labels

    def mixture(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.weights, self.means, self.covariances


class EightGaussians(MixtureToy):
    """Eight equal components N(r (cos 2 pi k/8, sin 2 pi k/8), s^2 I), r = 2, s = 0.2."""

    radius, std = 2.0, 0.2

    def __init__(self) -> None:
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        means = self.radius * torch.stack([angles.cos(), angles.sin()], dim=-1)
        covariances = (self.std**2) * torch.eye(2, dtype=torch.float64).expand(8, 2, 2).clone()
        super().__init__(torch.full((8,), 1 / 8, dtype=torch.float64), means, covariances)


class GaussianMixtureToy(MixtureToy):
    """Three anisotropic, well separated components (weights 0.2, 0.3, 0.5)."""

    def __init__(self) -> None:
        weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
        means = torch.tensor([[-2.0, 0.0], [2.0, 1.5], [0.5, -2.0]], dtype=torch.float64)
        covariances = torch.tensor(
            [[[0.30, 0.10], [0.10, 0.20]], [[0.20, -0.05], [-0.05, 0.40]], [[0.25, 0.0], [0.0, 0.15]]],
            dtype=torch.float64,
        )
        super().__init__(weights, means, covariances)


class Checkerboard(ToyDistribution):
    """Uniform on the 8 unit squares [i - 2, i - 1) x [j - 2, j - 1) of [-2, 2)^2 with i + j even (density 1/8)."""

    def sample(self, count: int, generator: torch.Generator | None = None) -> Sample:
        cells = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64)
        chosen = torch.randint(len(cells), (count,), generator=generator)
        inside = torch.rand(count, 2, dtype=torch.float64, generator=generator)
        return cells[chosen] + inside - 2.0, _unlabelled(count)


class TwoMoons(ToyDistribution):
    """Moon 0: (cos u, sin u); moon 1: (1 - cos u, 1/2 - sin u); u ~ U[0, pi], moon ~ U{0, 1}.

    x = 2 (point - (1/2, 1/4)) + s n, s = 0.1, n ~ N(0, I) (centred, unit-scale); the label is the moon.
    """

    noise = 0.1
    offset = (0.5, 0.25)

    num_classes = 2

    def sample(self, count: int, generator: torch.Generator | None = None) -> Sample:
        labels = torch.randint(2, (count,), generator=generator)
        angle = math.pi * torch.rand(count, dtype=torch.float64, generator=generator)
        upper = torch.stack([angle.cos(), angle.sin()], dim=-1)
        lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], dim=-1)
        point = torch.where(labels.unsqueeze(-1) == 0, upper, lower)
        noise = torch.randn(count, 2, dtype=torch.float64, generator=generator)
        return 2 * (point - torch.tensor(self.offset, dtype=torch.float64)) + self.noise * noise, labels


class Spirals(ToyDistribution):
    """Two arms k in {0, 1}: x = 3 u (cos(3 pi u + k pi), sin(3 pi u + k pi)) + s n, u ~ U[0, 1], s = 0.1."""

    noise = 0.1
    radius, turns = 3.0, 1.5

    num_classes = 2

    def sample(self, count: int, generator: torch.Generator | None = None) -> Sample:
        labels = torch.randint(2, (count,), generator=generator)
        position = torch.rand(count, dtype=torch.float64, generator=generator)
        angle = 2 * math.pi * self.turns * position + math.pi * labels
        arm = self.radius * position.unsqueeze(-1) * torch.stack([angle.cos(), angle.sin()], dim=-1)
        noise = torch.randn(count, 2, dtype=torch.float64, generator=generator)
        return arm + self.noise * noise, labels


TOYS: dict[str, type[ToyDistribution]] = {
    "checkerboard": Checkerboard,
    "two-moons": TwoMoons,
    "8-gaussians": EightGaussians,
    "spirals": Spirals,
    "gaussian-mixture": GaussianMixtureToy,
}


class ToyDataModule(CoupledDataModule):
    """A 2-D toy distribution: fixed train/val/test samples drawn from ``seed``.

    Args:
        name: one of TOYS (checkerboard, two-moons, 8-gaussians, spirals, gaussian-mixture).
        num_samples: training points (one epoch).
        val_samples: validation points (and as many test points).
        batch_size, num_workers, seed, coupling, device_invariant: see CoupledDataModule.
    """

    def __init__(
        self,
        name: str = "8-gaussians",
        num_samples: int = 65536,
        val_samples: int = 4096,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        coupling: Coupling | None = None,
        device_invariant: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, coupling, device_invariant)
        for label, value in (("num_samples", num_samples), ("val_samples", val_samples)):
            if not is_integer(value) or value <= 0:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        self.name, self.num_samples, self.val_samples = name, num_samples, val_samples
        self.distribution = lookup(TOYS, name, "toy")()
        self.data_shape = (2,)
        self.dataset_classes = self.distribution.num_classes
        self.check_coupling()

    def draw(self, count: int, generator: torch.Generator | None = None) -> Sample:
        """(x (count, 2) float32, labels (count,)) fresh from the distribution."""
        x, labels = self.distribution.sample(count, generator)
        return x.float(), labels

    def build_datasets(self) -> dict[str, InMemoryDataset]:
        datasets = {}
        for split, count in (("train", self.num_samples), ("val", self.val_samples), ("test", self.val_samples)):
            generator = torch.Generator().manual_seed(derived_seed(self.seed, self.name, split))
            datasets[split] = InMemoryDataset(*self.draw(count, generator))
        return datasets

    def real_samples(self, count: int, generator: torch.Generator | None = None, split: str = "train") -> Tensor:
        """``count`` fresh points of the distribution (count, 2): exact reference samples (``split`` unused)."""
        if not is_integer(count) or count <= 0:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        return self.draw(count, generator)[0]

    def oracle(self, interpolant: Interpolant, dtype: torch.dtype = torch.float64) -> GaussianMixture:
        """The exact fields of ``interpolant`` for this toy (Gaussian mixtures only; base N(0, I))."""
        parts = self.distribution.mixture()
        if parts is None:
            mixtures = ", ".join(name for name, toy in sorted(TOYS.items()) if toy().mixture() is not None)
            raise ValueError(f"toy {self.name!r} has no closed-form oracle; only these do: {mixtures}")
        if not self.gaussian_base:
            raise ValueError(f"the oracle assumes an independent Gaussian base, but the coupling is {self.coupling!r}")
        weights, means, covariances = (part.to(dtype) for part in parts)
        return GaussianMixture(weights, means, covariances, interpolant)
