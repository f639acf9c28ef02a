"""Autoencoder latents pre-computed into shards, and their datamodule (SiT trains on ImageNet-256 latents).

The directory (written by ``experiments/sit-imagenet256/precompute_latents.py``) holds::

    index.json            {"classes": [...], "num_images": N, "shard_size": S, "scale": ..., "autoencoder": ...}
    shard-000000.pt       {"latents": (n, C, h, w) float32, "flipped": (n, C, h, w), "labels": (n,) int64, "files"}
    shard-000001.pt       images [S, 2 S), ...

``flipped`` is the latent of the mirrored image: an autoencoder is not equivariant to a mirror, so a
training flip picks the stored mirror latent instead of mirroring the latent. Shards are opened with
``torch.load(mmap=True)``: ImageNet's latents and mirrors are about 40 GB, and only the pages a batch
touches are read (the page cache keeps the hot ones, shared by the loader's worker processes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from si_lightning.checks import is_number
from si_lightning.couplings import Coupling
from si_lightning.data.base import CoupledDataModule, derived_seed

INDEX = "index.json"
SHARD_PATTERN = "shard-{:06d}.pt"
ROOT_EXPECTED = "a directory of latent shards written by precompute_latents.py (index.json, shard-000000.pt, ...)"


def open_shard(path: Path) -> dict[str, Any]:
    """The shard's tensors memory-mapped (read from disk on access), its file names in memory."""
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


class LatentShards:
    """Every shard of a directory, opened lazily once per process; items addressed by their global index."""

    def __init__(self, root: Path, num_shards: int) -> None:
        self.paths = [root / SHARD_PATTERN.format(shard) for shard in range(num_shards)]
        self.opened: dict[int, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "opened": {}}  # a worker process maps the files itself

    def shard(self, number: int) -> dict[str, Any]:
        if number not in self.opened:
            self.opened[number] = open_shard(self.paths[number])
        return self.opened[number]

    def read_layout(self) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """(labels (N,), the first global index of every shard and N (num_shards + 1,), latent shape).

        Every shard is checked: latents and flipped of one shape (n, C, h, w), the same in every shard,
        and n labels.
        """
        labels, starts, shape = [], [0], None
        for number, path in enumerate(self.paths):
            content = self.shard(number)
            latents, flipped, shard_labels = (content.get(key) for key in ("latents", "flipped", "labels"))
            if not all(isinstance(value, Tensor) for value in (latents, flipped, shard_labels)):
                raise ValueError(f"root: {path} is not a latent shard (expected tensors latents, flipped, labels)")
            if latents.dim() != 4 or flipped.shape != latents.shape or shard_labels.shape != latents.shape[:1]:
                raise ValueError(
                    f"root: {path} holds latents {tuple(latents.shape)}, flipped {tuple(flipped.shape)} and labels "
                    f"{tuple(shard_labels.shape)}; expected (n, C, h, w), the same, and (n,)"
                )
            if shape is None:
                shape = tuple(latents.shape[1:])
            if tuple(latents.shape[1:]) != shape:
                raise ValueError(
                    f"root: {path} holds latents of shape {tuple(latents.shape[1:])}, "
                    f"expected {shape} as in {self.paths[0].name} (all shards from one autoencoder and image size)"
                )
            labels.append(shard_labels.long().clone())
            starts.append(starts[-1] + latents.shape[0])
        return torch.cat(labels), torch.tensor(starts), shape


class LatentDataset(Dataset):
    """Latents (C, h, w) of the images at ``indices``, their labels and positions, read from the shards.

    ``flip``: each item is the latent and the latent of its mirror image, x (B, 2, C, h, w), so the
    datamodule can pick one on the device (``LatentDataModule.mirror``); otherwise x is (B, C, h, w).
    """

    def __init__(
        self, shards: LatentShards, starts: Tensor, indices: Tensor, labels: Tensor, flip: bool = False
    ) -> None:
        self.shards, self.starts, self.indices, self.labels, self.flip = shards, starts, indices, labels, flip

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitems__(self, positions: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C, h, w) or (B, 2, C, h, w) with ``flip``, labels (B,), positions (B,)."""
        position = torch.as_tensor(positions, dtype=torch.long)
        items = self.indices[position]
        shards = torch.searchsorted(self.starts, items, right=True) - 1
        offsets = items - self.starts[shards]
        keys = ("latents", "flipped") if self.flip else ("latents",)
        x = torch.stack(
            [
                torch.stack([self.shards.shard(shard)[key][offset] for key in keys])
                for shard, offset in zip(shards.tolist(), offsets.tolist(), strict=True)
            ]
        )
        return (x if self.flip else x[:, 0]), self.labels[position], position

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor, Tensor]:
        x, labels, index = self.__getitems__([position])
        return x[0], labels[0], index[0]

    def subset(self, positions: Tensor, flip: bool) -> LatentDataset:
        return LatentDataset(self.shards, self.starts, self.indices[positions], self.labels[positions], flip)


def read_index(root: Path) -> dict[str, Any]:
    """index.json of a latent directory, checked: the root, the index and every shard it promises exist."""
    if not root.is_dir():
        raise ValueError(f"root must be {ROOT_EXPECTED}, got {str(root)!r}: it is not a directory")
    path = root / INDEX
    if not path.is_file():
        raise ValueError(f"root must be {ROOT_EXPECTED}, got {str(root)!r}: it has no {INDEX}")
    try:
        index = json.loads(path.read_text())
        count, shard_size = int(index["num_images"]), int(index["shard_size"])
        classes = list(index["classes"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"root must be {ROOT_EXPECTED}, got {str(root)!r}: {INDEX} is unreadable ({error})") from None
    if count < 2 or shard_size < 1:
        raise ValueError(f"root must be {ROOT_EXPECTED}, got {str(root)!r}: {INDEX} lists {count} images (at least 2)")
    num_shards = -(-count // shard_size)
    for shard in range(num_shards):
        if not (root / SHARD_PATTERN.format(shard)).is_file():
            raise ValueError(
                f"root must be {ROOT_EXPECTED}, got {str(root)!r}: {SHARD_PATTERN.format(shard)} of {num_shards} "
                "is missing (rerun precompute_latents.py: it writes the missing shards)"
            )
    return {**index, "classes": classes, "num_shards": num_shards}


class LatentDataModule(CoupledDataModule):
    """Pre-computed autoencoder latents (C, h, w) and class labels, for a latent model (SiT).

    Training mirrors a sample with p = 1/2 by taking the latent of the mirrored image stored beside it
    (not by mirroring the latent: an autoencoder is not flip-equivariant), drawn on the device from the
    global batch's generator like every other training flip. Validation holds out ``val_fraction`` of
    the images by a fixed permutation; the test split is the validation split.

    Args:
        root: the directory of ``index.json`` and ``shard-{k:06d}.pt`` files.
        autoencoder: how the model's samples are decoded into images, recorded in the checkpoint for
            ``si-lightning sample``: a local AutoencoderKL folder or ``module:factory``. Not loaded
            here (training needs no decoder). None: the one ``index.json`` names (the encoder).
        autoencoder_scale: the factor the latents were multiplied by; None: index.json's ``scale``.
        horizontal_flip: mirror training samples with p = 1/2 (through the stored mirror latents).
        val_fraction: share of the images held out for validation, in (0, 1).
        batch_size, num_workers, seed, coupling, device_invariant: see CoupledDataModule.
    """

    def __init__(
        self,
        root: str = "data/imagenet256-latents",
        autoencoder: str | None = None,
        autoencoder_scale: float | None = None,
        horizontal_flip: bool = True,
        val_fraction: float = 0.01,
        batch_size: int = 32,
        num_workers: int = 4,
        seed: int = 0,
        coupling: Coupling | None = None,
        device_invariant: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, coupling, device_invariant)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if autoencoder is not None and (not isinstance(autoencoder, str) or not autoencoder.strip()):
            raise ValueError(f"autoencoder must be a local AutoencoderKL folder or module:factory, got {autoencoder!r}")
        bad_scale = autoencoder_scale is not None and not is_number(autoencoder_scale)
        if bad_scale or (autoencoder_scale is not None and not autoencoder_scale > 0):
            raise ValueError(f"autoencoder_scale must be a number > 0 (or None), got {autoencoder_scale!r}")
        self.root = Path(root).expanduser()
        index = read_index(self.root)
        self.num_images, self.num_shards, self.classes = int(index["num_images"]), index["num_shards"], index["classes"]
        self.autoencoder = autoencoder if autoencoder is not None else index.get("autoencoder")
        scale = autoencoder_scale if autoencoder_scale is not None else index.get("scale")
        self.autoencoder_scale = None if scale is None else float(scale)
        self.horizontal_flip, self.val_fraction = bool(horizontal_flip), float(val_fraction)
        first = open_shard(self.root / SHARD_PATTERN.format(0)).get("latents")
        if not isinstance(first, Tensor) or first.dim() != 4:
            raise ValueError(
                f"root must be {ROOT_EXPECTED}, got {str(self.root)!r}: shard-000000.pt holds no latents (n, C, h, w)"
            )
        self.data_shape = tuple(int(size) for size in first.shape[1:])
        self.dataset_classes = len(self.classes)
        self.check_coupling()
        # The checkpoint keeps what sampling needs to decode (LightningDataModule hyper-parameters).
        self.save_hyperparameters(
            {"root": str(root), "autoencoder": self.autoencoder, "autoencoder_scale": self.autoencoder_scale}
        )

    def build_datasets(self) -> dict[str, Dataset]:
        shards = LatentShards(self.root, self.num_shards)
        labels, starts, shape = shards.read_layout()
        if shape != self.data_shape or int(starts[-1]) != self.num_images:
            raise ValueError(
                f"root {str(self.root)!r}: the shards hold {int(starts[-1])} latents of shape {shape}; "
                f"expected {self.num_images} of shape {self.data_shape} ({INDEX} and shard-000000.pt)"
            )
        full = LatentDataset(shards, starts, torch.arange(self.num_images), labels)
        order = torch.randperm(self.num_images, generator=torch.Generator().manual_seed(derived_seed("latents")))
        val_count = min(self.num_images - 1, max(1, round(self.val_fraction * self.num_images)))
        val = full.subset(order[:val_count].sort().values, flip=False)
        train = full.subset(order[val_count:].sort().values, flip=self.horizontal_flip)
        return {"train": train, "val": val, "test": val}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        # The base records the training flip and turns the data set's own flip off (images flip on the device);
        # here the device needs both latents of each item to choose from, so the training set keeps yielding pairs.
        self.datasets["train"].flip = self.flip_training

    def mirror(self, x1: Tensor, mirrored: Tensor) -> Tensor:
        """x1 (B, 2, C, h, w) (latent, latent of the mirror image) -> (B, C, h, w): the mirror where ``mirrored``."""
        return torch.where(mirrored.view(-1, 1, 1, 1), x1[:, 1], x1[:, 0])
