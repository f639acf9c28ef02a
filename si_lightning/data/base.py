"""CoupledDataModule: the shared LightningDataModule that turns data batches into coupled batches.

Data loaders yield (x1, labels, index). After the batch reaches the device,
``on_after_batch_transfer`` scales uint8 images to [-1, 1], mirrors them (training, when the data
set asks for flips) and applies the coupling there, so the module sees ``Batch(x0, x1, cond)`` and
the base noise is drawn on the accelerator.

Training batches do not depend on the number of devices or on interruptions. The order is one
global permutation per epoch cut into global batches (``GlobalOrderSampler``). The randomness of
global batch b of epoch e (flips, the coupling's noise, masks, label drops) comes from one generator
seeded by (seed, e, b) and is drawn for the whole global batch: with several devices each one
gathers the global batch's data, couples it, and keeps its own part (``device_invariant``; off, each
device couples its own part with a generator seeded by (seed, e, b, rank), which skips the gather).
So nothing needs saving but the loader's position, and a resumed run continues exactly.

Outside training the noise is seeded by (seed, first index of the batch), so every validation run
sees the same base points.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from si_lightning.checks import is_integer
from si_lightning.couplings import Batch, ClassLabels, Coupling, IndependentCoupling
from si_lightning.data.datasets import fetch, keep_batch
from si_lightning.data.order import GlobalOrderSampler, ResumableLoader
from si_lightning.seeding import derived_seed

SPLITS = ("train", "val", "test")
__all__ = ["SPLITS", "CoupledDataModule", "derived_seed", "to_model_input"]


def to_model_input(x: Tensor) -> Tensor:
    """uint8 images in 0..255 -> float32 in [-1, 1] (x / 127.5 - 1); float data passes through."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x


class CoupledDataModule(pl.LightningDataModule, ABC):
    """Base of the datamodules: loaders, the coupling on the device, and the values the CLI links.

    Subclasses set ``data_shape`` (channels, ...) and ``dataset_classes`` (0 if unlabelled) in
    ``__init__``, call ``check_coupling()``, and implement ``build_datasets()``.

    Args:
        batch_size: samples per batch (per device), > 0.
        num_workers: data-loading worker processes, >= 0.
        seed: seeds the data order and the coupling's noise.
        coupling: how x0 is paired with x1 (IndependentCoupling when None).
        device_invariant: couple the global batch on every device (one all-gather of the data per step)
            so training does not depend on the device count; see the module docstring.
    """

    data_shape: tuple[int, ...]
    dataset_classes: int | None = 0  # None: known only once the data is read (an image folder)

    def __init__(
        self, batch_size: int, num_workers: int, seed: int, coupling: Coupling | None, device_invariant: bool = True
    ) -> None:
        super().__init__()
        if not is_integer(batch_size) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not is_integer(num_workers) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if coupling is not None and not isinstance(coupling, Coupling):
            raise ValueError(f"coupling must be a Coupling, got {type(coupling).__name__}")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, int(seed)
        self.coupling = IndependentCoupling() if coupling is None else coupling
        self.device_invariant = bool(device_invariant)
        coupling = self.coupling
        while coupling is not None:  # MinibatchOT may sit inside ClassLabels
            if self.device_invariant and getattr(coupling, "distributed", False):
                raise ValueError(
                    f"coupling {type(coupling).__name__} distributed = True: with device_invariant = true the "
                    "datamodule already couples the global batch on every device (the plan is global); set "
                    "distributed: false, or device_invariant: false to let the coupling gather"
                )
            coupling = getattr(coupling, "inner", None)
        self.datasets: dict[str, Dataset] = {}
        self.flip_training = False  # mirrored on the device from the batch's generator, not in the data set
        self._sampler: GlobalOrderSampler | None = None

    # ---------------------------------------------------------------- values linked to the model
    @property
    def num_classes(self) -> int:
        """Class labels the backbone embeds (0 unless the coupling passes labels)."""
        return self.coupling.num_classes

    @property
    def cond_channels(self) -> int:
        """Extra input channels the backbone receives in ``cond.channels``."""
        return self.coupling.cond_channels(self.data_shape[0])

    @property
    def gaussian_base(self) -> bool:
        return self.coupling.gaussian_base

    def check_coupling(self) -> None:
        """Raise a ValueError if the coupling does not fit this data (shape, class count)."""
        self.coupling.check_shape(self.data_shape)
        if isinstance(self.coupling, ClassLabels) and self.dataset_classes is not None:
            if self.dataset_classes == 0:
                raise ValueError(f"{type(self).__name__} data has no class labels; ClassLabels cannot be used")
            if self.coupling.num_classes != self.dataset_classes:
                raise ValueError(
                    f"ClassLabels has num_classes={self.coupling.num_classes} but the data has "
                    f"{self.dataset_classes} classes"
                )

    # ---------------------------------------------------------------------------- data sets
    @abstractmethod
    def build_datasets(self) -> dict[str, Dataset]:
        """{"train": ..., "val": ..., "test": ...}, each yielding (x1, label, index)."""

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        datasets = self.build_datasets()
        self.check_coupling()  # again: the class count of an image folder is known only now
        for split, dataset in datasets.items():
            labels = dataset.labels
            if self.dataset_classes and len(labels) and (labels.min() < 0 or labels.max() >= self.dataset_classes):
                raise ValueError(
                    f"{split} labels must lie in [0, {self.dataset_classes - 1}], "
                    f"got [{int(labels.min())}, {int(labels.max())}]"
                )
        if len(datasets["train"]) < self.batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} exceeds the {len(datasets['train'])} training samples; "
                "every epoch would be empty (the last incomplete batch is dropped)"
            )
        # Random flips move to the device (``on_after_batch_transfer``), drawn from the batch's own generator.
        self.flip_training = bool(getattr(datasets["train"], "flip", False))
        if self.flip_training:
            datasets["train"].flip = False
        self.datasets = datasets

    def dataset(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
        self.setup()
        return self.datasets[split]

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        workers = self.num_workers
        options: dict[str, Any] = {
            "batch_size": self.batch_size,
            "num_workers": workers,
            "collate_fn": keep_batch if hasattr(dataset, "__getitems__") else None,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": workers > 0,
        }
        if split != "train":
            return DataLoader(dataset, shuffle=False, **options)
        rank, world_size = self._placement()
        self._sampler = GlobalOrderSampler(dataset, self.batch_size, rank, world_size, derived_seed(self.seed, "order"))
        # Equal batch shapes keep compiled graphs and per-batch statistics stable: the sampler drops the last one.
        return ResumableLoader(dataset, sampler=self._sampler, drop_last=True, consumed=self._consumed, **options)

    def _placement(self) -> tuple[int, int]:
        """(global rank, world size) of this process; (0, 1) without a trainer."""
        if self._trainer_or_none() is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _trainer_or_none(self) -> pl.Trainer | None:
        return getattr(self, "trainer", None)

    def _consumed(self) -> tuple[int, int]:
        """(epoch, training batches of it the fit loop has taken) for the loader's state."""
        trainer = self._trainer_or_none()
        if trainer is None:
            return 0, 0
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def real_samples(
        self, count: int, generator: torch.Generator | None = None, split: str = "train", skip: int = 0
    ) -> Tensor:
        """``count`` distinct data points of ``split`` (count, *data_shape), in [-1, 1], without augmentation.

        The reference data of evaluation metrics; which points is decided by ``generator``: positions
        skip .. skip + count - 1 of a random permutation of the split. With the same generator seed,
        ``skip=count`` gives points disjoint from ``skip=0`` (a real-versus-real floor of a metric).
        """
        dataset = self.dataset(split)
        if not 0 < count <= len(dataset) - skip:
            raise ValueError(f"count must be in [1, {len(dataset) - skip}] for the {split} split, got {count!r}")
        indices = torch.randperm(len(dataset), generator=generator)[skip : skip + count].sort().values
        return to_model_input(fetch(dataset, indices.tolist())[0])

    # ------------------------------------------------------------------------------ coupling
    def _training(self) -> bool:
        trainer = self._trainer_or_none()
        return trainer is not None and bool(trainer.training)

    def evaluation_generator(self, device: torch.device, index: Tensor) -> torch.Generator:
        """The coupling's generator for an evaluation batch: seeded by (seed, first index of the batch)."""
        first = int(index.reshape(-1)[0]) if index.numel() else 0
        return torch.Generator(device=device).manual_seed(derived_seed(self.seed, "evaluation", first))

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        """Training: append the seed of the batch's generator, computed on the host (no device sync)."""
        if not self._training() or isinstance(batch, Batch) or self._sampler is None or len(batch) != 3:
            return batch
        x1, labels, index = batch
        epoch = self._sampler.epoch
        number = self._sampler.batch_number(int(index.reshape(-1)[0]))
        rank = 0 if self.device_invariant else self._placement()[0]
        return x1, labels, index, derived_seed(self.seed, "training", epoch, number, rank)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Batch:
        """(x1, labels, index[, seed]) on the device -> Batch(x0, x1, cond) with x1 in [-1, 1]."""
        if isinstance(batch, Batch):
            return batch
        if len(batch) == 4:
            return self.couple_training_batch(*batch)
        x1, labels, index = batch
        x1 = to_model_input(x1)
        labels = labels if self.dataset_classes else None
        return self.coupling(x1, labels, self.evaluation_generator(x1.device, index))

    def mirror(self, x1: Tensor, mirrored: Tensor) -> Tensor:
        """The training flip: x1 (B, ..., W) with the samples where ``mirrored`` (B,) bool is true mirrored left-right.

        Data whose mirror image is not ``x1.flip(-1)`` (autoencoder latents) override this, with a
        training set that yields what the choice needs.
        """
        return torch.where(mirrored.view(-1, *([1] * (x1.dim() - 1))), x1.flip(-1), x1)

    def couple_training_batch(self, x1: Tensor, labels: Tensor, index: Tensor, seed: int) -> Batch:
        """Flip and couple a training batch with the generator of its global batch (see the module docstring)."""
        generator = torch.Generator(device=x1.device).manual_seed(seed)
        rank, world_size = self._placement()
        gather = self.device_invariant and world_size > 1
        if gather:  # every device couples the global batch, in rank order, and keeps its part
            x1 = self.trainer.strategy.all_gather(x1).flatten(0, 1)
            labels = self.trainer.strategy.all_gather(labels).flatten(0, 1)
        x1 = to_model_input(x1)
        if self.flip_training:
            x1 = self.mirror(x1, torch.rand(x1.shape[0], generator=generator, device=x1.device) < 0.5)
        batch = self.coupling(x1, labels if self.dataset_classes else None, generator)
        if not gather:
            return batch
        part = slice(rank * self.batch_size, (rank + 1) * self.batch_size)
        return Batch(batch.x0[part], batch.x1[part], batch.cond.select(part))
