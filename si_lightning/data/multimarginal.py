"""K unpaired marginals from one dataset: the Gaussian base and transforms of its images (docs/math.md section 12).

``MultimarginalDataModule`` reads the images of another datamodule (its ``data``) with its own loaders,
order and seeds (``CoupledDataModule``), and turns each batch of B images x into K marginal batches:
marginal k is ``transform_k`` applied to the batch rolled by k positions, so within a batch the K
samples of one row come from K different images (B > K): the marginals are drawn independently of
each other (an independent coupling across marginals), as the multimarginal interpolant assumes.
``gaussian`` is N(0, I) noise drawn from the batch's seeded generator.

``coupling="label-shared"`` (labelled data) draws the K images of a row independently given one shared
class: the rows of each class are shuffled with the batch's seeded generator and marginal k takes the
image k places further along its class's rows (cyclically), so the row's marginals are K different
images of the same class whenever the class has at least K - 1 rows in the batch (at B = 64 and 10
classes almost always; a rarer class reuses images of the row). Every marginal keeps its law: a row's
class is drawn from the data set's class frequencies and, given the class, each image is uniform over it.
With several devices the rows are matched within each device's part of the global batch.
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
from si_lightning.seeding import derived_seed

MARGINAL_COUPLINGS = ("independent", "label-shared")


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


def same_class_partners(labels: Tensor, shifts: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    """For each shift and row, the row ``shift`` places further along a random cyclic order of its class's rows.

    labels: (batch,) class labels. Returns (len(shifts), batch) row indices with labels[partners] == labels.
    One order per call, drawn from ``generator`` and shared by all shifts, so shifts 1 .. n - 1 give a row
    of a class with n rows n - 1 different partners, none the row itself (shift 0 is the row).
    """
    size = labels.shape[0]
    shuffled = torch.randperm(size, generator=generator, device=labels.device)
    # Rows grouped by class; the stable sort keeps the shuffled order inside each class.
    grouped = shuffled[torch.argsort(labels[shuffled], stable=True)]
    _, counts = torch.unique_consecutive(labels[grouped], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    sizes = torch.repeat_interleave(counts, counts)
    positions = torch.arange(size, device=labels.device) - starts
    partners = torch.empty(len(shifts), size, dtype=torch.long, device=labels.device)
    for row, shift in enumerate(shifts):
        partners[row, grouped] = grouped[starts + (positions + shift) % sizes]
    return partners


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
        coupling: how the K marginals of a row are drawn: ``independent`` (K unrelated images) or
            ``label-shared`` (K images of one class, drawn independently given it; needs labelled ``data``).
    """

    def __init__(
        self,
        data: CoupledDataModule,
        marginals: Sequence[str] = ("gaussian", "identity", "rotate90", "invert"),
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        coupling: str = "independent",
    ) -> None:
        super().__init__(batch_size, num_workers, seed, coupling=None)
        if coupling not in MARGINAL_COUPLINGS:
            raise ValueError(f"coupling must be one of {', '.join(MARGINAL_COUPLINGS)}, got {coupling!r}")
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
        if coupling == "label-shared" and self.dataset_classes == 0:
            raise ValueError(f"coupling 'label-shared' needs labelled data; {type(data).__name__} has no classes")
        self.marginal_coupling = coupling
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
        """(images, labels, index[, seed]) -> K marginal batches, from the base class's Batch(x0 Gaussian, x1, cond)."""
        if isinstance(batch, MultimarginalBatch):
            return batch
        coupled = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.marginal_coupling == "independent":
            return MultimarginalBatch(self.marginal_samples(coupled.x0, coupled.x1), coupled.cond)
        labels, index = batch[1], batch[2]
        # Training batches carry their global batch's seed; evaluation batches are seeded by their first index.
        origin = ("training", batch[3]) if len(batch) == 4 else ("evaluation", int(index.reshape(-1)[0]))
        generator = torch.Generator(device=labels.device).manual_seed(derived_seed(self.seed, "label-shared", *origin))
        return MultimarginalBatch(self.marginal_samples(coupled.x0, coupled.x1, labels, generator), coupled.cond)

    def marginal_samples(
        self, noise: Tensor, images: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        """K tensors like ``images`` (batch, ...): marginal k is transform_k(images[partners_k]) or ``noise``.

        Without ``labels`` partners_k rolls the batch by k (``independent``); with ``labels`` (batch,) it
        moves k places along a random cyclic order of the rows of the same class (``label-shared``).
        """
        shifts = range(len(self.transforms))
        if labels is None:
            rows = torch.arange(images.shape[0], device=images.device)
            partners = torch.stack([torch.roll(rows, shifts=shift) for shift in shifts])
        else:
            partners = same_class_partners(labels, shifts, generator)
        return tuple(
            noise if transform.gaussian else transform.forward(images[partners[shift]])
            for shift, transform in enumerate(self.transforms)
        )

    def inverse(self, marginal: int, x: Tensor) -> Tensor:
        """Read samples of marginal ``marginal`` back as upright images (undo its transform)."""
        return self.transforms[marginal].inverse(x)
