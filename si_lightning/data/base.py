"""CoupledDataModule: the shared LightningDataModule that turns data batches into coupled batches.

Data loaders yield (x1, labels, index). After the batch reaches the device,
``on_after_batch_transfer`` scales uint8 images to [-1, 1] and applies the coupling there, so
the module sees ``Batch(x0, x1, cond)`` and the base noise is drawn on the accelerator.

Noise of the coupling: in training it comes from one generator per device seeded by
(seed, global rank), so ranks draw different noise and a resumed run continues the stream
(the state is in the checkpoint); outside training it is seeded by (seed, first index of the
batch), so every validation run sees the same base points.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from si_lightning.couplings import Batch, ClassLabels, Coupling, IndependentCoupling
from si_lightning.data.datasets import fetch, keep_batch

SPLITS = ("train", "val", "test")


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed from several parts, the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


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
    """

    data_shape: tuple[int, ...]
    dataset_classes: int | None = 0  # None: known only once the data is read (an image folder)

    def __init__(self, batch_size: int, num_workers: int, seed: int, coupling: Coupling | None) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if coupling is not None and not isinstance(coupling, Coupling):
            raise ValueError(f"coupling must be a Coupling, got {type(coupling).__name__}")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, int(seed)
        self.coupling = IndependentCoupling() if coupling is None else coupling
        self.datasets: dict[str, Dataset] = {}
        self._generators: dict[str, torch.Generator] = {}
        self._saved_generator_states: dict[str, Tensor] = {}

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
        self.datasets = datasets

    def dataset(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
        self.setup()
        return self.datasets[split]

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        train = split == "train"
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            # Equal batch shapes keep compiled graphs and per-batch statistics stable.
            drop_last=train,
            num_workers=workers,
            collate_fn=keep_batch if hasattr(dataset, "__getitems__") else None,
            generator=torch.Generator().manual_seed(derived_seed(self.seed, "order")) if train else None,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def real_samples(self, count: int, generator: torch.Generator | None = None, split: str = "train") -> Tensor:
        """``count`` distinct data points of ``split`` (count, *data_shape), in [-1, 1], without augmentation.

        The reference data of evaluation metrics; which points is decided by ``generator``.
        """
        dataset = self.dataset(split)
        if not 0 < count <= len(dataset):
            raise ValueError(f"count must be in [1, {len(dataset)}] for the {split} split, got {count!r}")
        indices = torch.randperm(len(dataset), generator=generator)[:count].sort().values
        return to_model_input(fetch(dataset, indices.tolist())[0])

    # ------------------------------------------------------------------------------ coupling
    def _training(self) -> bool:
        return self.trainer is not None and bool(self.trainer.training)

    def coupling_generator(self, device: torch.device, index: Tensor) -> torch.Generator:
        """The generator of the coupling's noise for a batch on ``device`` (see the module docstring)."""
        if not self._training():
            first = int(index.reshape(-1)[0]) if index.numel() else 0
            return torch.Generator(device=device).manual_seed(derived_seed(self.seed, "evaluation", first))
        key = str(device)
        if key not in self._generators:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            generator = torch.Generator(device=device).manual_seed(derived_seed(self.seed, "training", rank))
            if key in self._saved_generator_states:
                generator.set_state(self._saved_generator_states.pop(key))
            self._generators[key] = generator
        return self._generators[key]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Batch:
        """(x1, labels, index) on the device -> Batch(x0, x1, cond) with x1 in [-1, 1]."""
        if isinstance(batch, Batch):
            return batch
        x1, labels, index = batch
        x1 = to_model_input(x1)
        labels = labels if self.dataset_classes else None
        return self.coupling(x1, labels, self.coupling_generator(x1.device, index))

    def state_dict(self) -> dict[str, Any]:
        """The training noise generators' states, so a resumed run continues the same stream."""
        return {"coupling_generators": {key: gen.get_state() for key, gen in self._generators.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved_generator_states = dict(state_dict.get("coupling_generators", {}))
        self._generators = {}
