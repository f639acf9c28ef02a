"""K unpaired marginals from one dataset: the Gaussian base and transforms of its images (docs/math.md section 12).

``MultimarginalDataModule`` reads the images of another datamodule (its ``data``) with its own loaders,
order and seeds (``CoupledDataModule``), and turns each batch of B images x into K marginal batches:
marginal k is ``transform_k`` applied to the batch rolled by k positions, so within a batch the K
samples of one row come from K different images (B > K): the marginals are drawn independently of
each other (an independent coupling across marginals), as the multimarginal interpolant assumes.
``gaussian`` is N(0, I) noise drawn from the batch's seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from si_lightning.checks import lookup
from si_lightning.condition import Condition
from si_lightning.data.base import CoupledDataModule


def rotate_quarter(x: Tensor) -> Tensor:
    """Rotate images (batch, C, H, W) by 90 degrees counter-clockwise."""
    return torch.rot90(x, 1, dims=(-2, -1))


def rotate_quarter_back(x: Tensor) -> Tensor:
    """Undo ``rotate_quarter``: 90 degrees clockwise."""
    return torch.rot90(x, -1, dims=(-2, -1))


def invert(x: Tensor) -> Tensor:
    """Intensity inversion in [-1, 1]: x -> -x (its own inverse)."""
    return -x


def identity(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class MarginalTransform:
    """How marginal k is made from an image (``forward``) and how a sample of it is read back (``inverse``)."""

    forward: Callable[[Tensor], Tensor]
    inverse: Callable[[Tensor], Tensor]
    gaussian: bool = False


MARGINAL_TRANSFORMS: dict[str, MarginalTransform] = {
    "gaussian": MarginalTransform(identity, identity, gaussian=True),
    "identity": MarginalTransform(identity, identity),
    "rotate90": MarginalTransform(rotate_quarter, rotate_quarter_back),
    "invert": MarginalTransform(invert, invert),
}


@dataclass(frozen=True)
class MultimarginalBatch:
    """xs: K tensors (batch, *data_shape), marginal k's samples, unpaired; cond: the (empty) condition."""

    xs: tuple[Tensor, ...]
    cond: Condition

    def to(self, device: torch.device | str) -> MultimarginalBatch:
        return MultimarginalBatch(tuple(x.to(device) for x in self.xs), self.cond.to(device))


class MultimarginalDataModule(CoupledDataModule):
    """The marginals ``marginals`` (names in ``MARGINAL_TRANSFORMS``) made from the images of ``data``.

    Args:
        data: a ``CoupledDataModule`` whose data sets are read (its own batch size, loaders and coupling are
            not used; its image size and split are).
        marginals: K >= 2 names, vertex k of the simplex is marginal k; ``gaussian`` may appear only first.
        batch_size: B > K rows per batch (each row holds one sample of every marginal).
        num_workers, seed: see ``CoupledDataModule``.
    """

    def __init__(
        self,
        data: CoupledDataModule,
        marginals: Sequence[str] = ("gaussian", "identity", "rotate90", "invert"),
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, coupling=None)
        if not isinstance(data, CoupledDataModule):
            raise ValueError(f"data must be a CoupledDataModule of si_lightning.data, got {type(data).__name__}")
        names = list(marginals)
        if len(names) < 2:
            raise ValueError(f"marginals must name at least 2 marginals, got {names!r}")
        self.transforms = [lookup(MARGINAL_TRANSFORMS, name, "marginal transform") for name in names]
        if any(transform.gaussian for transform in self.transforms[1:]):
            raise ValueError(f"marginals: 'gaussian' may only be the first (vertex 0), got {names!r}")
        if batch_size <= len(names):
            raise ValueError(f"batch_size must exceed the {len(names)} marginals (rows pair distinct images)")
        self.data = data
        self.marginal_names = names
        self.data_shape = tuple(data.data_shape)
        if "rotate90" in names and self.data_shape[-1] != self.data_shape[-2]:
            raise ValueError(f"marginal 'rotate90' needs square images, got data_shape {self.data_shape}")
        self.dataset_classes = data.dataset_classes
        self.check_coupling()

    @property
    def num_marginals(self) -> int:
        return len(self.transforms)

    @property
    def gaussian_base(self) -> bool:
        """Whether vertex 0 is the standard Gaussian."""
        return self.transforms[0].gaussian

    @property
    def num_classes(self) -> int:
        return 0  # the marginals are unconditional

    def build_datasets(self) -> dict[str, Dataset]:
        return self.data.build_datasets()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> MultimarginalBatch:
        """Batch(x0 Gaussian, x1 images in [-1, 1], cond) from the base class -> K unpaired marginal batches."""
        if isinstance(batch, MultimarginalBatch):
            return batch
        coupled = super().on_after_batch_transfer(batch, dataloader_idx)
        return MultimarginalBatch(self.marginal_samples(coupled.x0, coupled.x1), coupled.cond)

    def marginal_samples(self, noise: Tensor, images: Tensor) -> tuple[Tensor, ...]:
        """K tensors like ``images`` (batch, ...): marginal k is transform_k(images rolled by k) or ``noise``."""
        return tuple(
            noise if transform.gaussian else transform.forward(torch.roll(images, shifts=index, dims=0))
            for index, transform in enumerate(self.transforms)
        )

    def inverse(self, marginal: int, x: Tensor) -> Tensor:
        """Read samples of marginal ``marginal`` back as upright images (undo its transform)."""
        return self.transforms[marginal].inverse(x)
