"""Map-style datasets yielding (x1, label, index): in memory (fetched a batch at a time) or image files.

x1 is a float tensor (points, digits) or a uint8 image (C, H, W) that the datamodule scales to
[-1, 1] on the device (four times less to copy than float). label is -1 for unlabelled data.
index is the item's position in its split; it seeds the coupling's noise outside training.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, default_collate

Item = tuple[Tensor, Tensor, Tensor]


def keep_batch(batch: Item) -> Item:
    """collate_fn for datasets with ``__getitems__``: the batch is already stacked."""
    return batch


class InMemoryDataset(Dataset):
    """data (N, ...) and labels (N,) int64 held in memory; ``flip`` mirrors each image left-right with p = 1/2."""

    def __init__(self, data: Tensor, labels: Tensor | None = None, flip: bool = False) -> None:
        if labels is None:
            labels = torch.full((data.shape[0],), -1, dtype=torch.long)
        if labels.shape != (data.shape[0],):
            raise ValueError(f"labels must have shape ({data.shape[0]},), got {tuple(labels.shape)}")
        self.data, self.labels, self.flip = data, labels.long(), flip

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> Item:
        return self.__getitems__([index])[0][0], self.labels[index], torch.tensor(index)

    def __getitems__(self, indices: Sequence[int]) -> Item:
        """A whole batch in one indexing operation: (x (B, ...), labels (B,), index (B,))."""
        index = torch.as_tensor(indices, dtype=torch.long)
        x = self.data[index]
        if self.flip:
            # Drawn from the global generator, which Lightning seeds per worker.
            mirrored = torch.rand(index.shape[0]) < 0.5
            x = torch.where(mirrored.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        return x, self.labels[index], index

    def subset(self, indices: Tensor, flip: bool) -> InMemoryDataset:
        return InMemoryDataset(self.data[indices], self.labels[indices], flip)


class ImageFileDataset(Dataset):
    """Images decoded from files by ``transform`` (PIL image -> uint8 tensor (C, H, W)), one at a time."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform, flip: bool = False) -> None:
        self.samples, self.transform, self.flip = list(samples), transform, flip
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        path, label = self.samples[index]
        with Image.open(path) as image:
            x = self.transform(image.convert("RGB"))
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x, torch.tensor(label), torch.tensor(index)

    def subset(self, indices: Tensor, flip: bool) -> ImageFileDataset:
        return ImageFileDataset([self.samples[i] for i in indices.tolist()], self.transform, flip)


def fetch(dataset: Dataset, indices: Sequence[int]) -> Item:
    """The items at ``indices`` stacked, without random flips (reference data for evaluation)."""
    plain = copy.copy(dataset)
    plain.flip = False
    if hasattr(plain, "__getitems__"):
        return plain.__getitems__(indices)
    return default_collate([plain[i] for i in indices])
