"""scikit-learn's embedded 8x8 handwritten digits: 1,797 real images, 10 classes, no download.

Pixel values 0..16 are mapped to [-1, 1] by x = v / 8 - 1, then optionally resized to
``image_size`` (bilinear or nearest; both are convex combinations of pixels, so the range stays
inside [-1, 1]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor

from si_lightning.checks import is_integer
from si_lightning.couplings import Coupling
from si_lightning.data.base import CoupledDataModule, derived_seed
from si_lightning.data.datasets import InMemoryDataset

RESIZE_MODES = ("bilinear", "nearest")
NATIVE_SIZE = 8


def load_digit_images(image_size: int = NATIVE_SIZE, mode: str = "bilinear") -> tuple[Tensor, Tensor]:
    """(images (1797, 1, S, S) float32 in [-1, 1], labels (1797,) int64 in 0..9)."""
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    if image_size != NATIVE_SIZE:
        # Anti-aliasing only matters (and is only supported) when bilinear shrinks the image.
        antialias = mode == "bilinear" and image_size < NATIVE_SIZE
        options = {"align_corners": False, "antialias": antialias} if mode == "bilinear" else {}
        images = F.interpolate(images, size=(image_size, image_size), mode=mode, **options).clamp_(-1.0, 1.0)
    return images, torch.as_tensor(digits.target, dtype=torch.long)


class DigitsDataModule(CoupledDataModule):
    """The 1,797 digits, split once into train/val by a fixed permutation (the same for every seed).

    The test split is the validation split (the set is too small to hold out a third part).

    Args:
        image_size: side S of the (1, S, S) images, >= 1 (8 is the native size).
        resize_mode: ``bilinear`` or ``nearest``, used when image_size != 8.
        val_fraction: share of the images held out for validation, in (0, 1).
        batch_size, num_workers, seed, coupling, device_invariant: see CoupledDataModule.
    """

    def __init__(
        self,
        image_size: int = NATIVE_SIZE,
        resize_mode: str = "bilinear",
        val_fraction: float = 0.1,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        coupling: Coupling | None = None,
        device_invariant: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, coupling, device_invariant)
        if not is_integer(image_size) or image_size < 1:
            raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize_mode {resize_mode!r}; expected one of: {', '.join(RESIZE_MODES)}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        self.image_size, self.resize_mode, self.val_fraction = image_size, resize_mode, float(val_fraction)
        self.data_shape = (1, image_size, image_size)
        self.dataset_classes = 10
        self.check_coupling()

    def build_datasets(self) -> dict[str, InMemoryDataset]:
        images, labels = load_digit_images(self.image_size, self.resize_mode)
        everything = InMemoryDataset(images, labels)
        order = torch.randperm(len(everything), generator=torch.Generator().manual_seed(derived_seed("digits-split")))
        val_count = max(1, round(self.val_fraction * len(everything)))
        val = everything.subset(order[:val_count].sort().values, flip=False)
        train = everything.subset(order[val_count:].sort().values, flip=False)
        return {"train": train, "val": val, "test": val}
