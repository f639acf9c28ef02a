"""The interface every feature extractor implements, and batched feature extraction.

A feature extractor maps uint8 images (B, C, H, W) to float features (B, D). Channel conversion
and resizing happen inside the extractor, so callers hand over images exactly as they are
stored or generated (after `quantize_to_uint8`). torchmetrics' FID/KID accept any such module as
``feature`` (they call it on uint8 images and read ``num_features``).
"""

from __future__ import annotations

import hashlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from si_lightning.metrics.quantize import as_uint8_images


class FeatureExtractor(nn.Module, ABC):
    """Frozen network mapping uint8 images (B, C, H, W) to features (B, feature_dim).

    Subclasses set ``name`` (short, used in metric names) and ``feature_dim``, and implement
    ``extract``. The module never leaves evaluation mode and has no trainable parameters, so a
    ``.train()`` call from a surrounding training loop does not switch its batch norms.
    """

    name: str = ""
    feature_dim: int = 0

    def __init__(self) -> None:
        super().__init__()
        self._identity: str | None = None

    @property
    def num_features(self) -> int:
        """The feature size under the attribute name torchmetrics reads."""
        return self.feature_dim

    @abstractmethod
    def extract(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> float (B, feature_dim); input already validated."""

    def forward(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            found = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) else images
            raise ValueError(
                f"{type(self).__name__} expects uint8 images (B, C, H, W) in [0, 255] (see quantize_to_uint8); "
                f"got {found}"
            )
        with torch.no_grad():
            features = self.extract(images)
        if tuple(features.shape) != (images.shape[0], self.feature_dim):
            raise RuntimeError(
                f"{type(self).__name__} returned features of shape {tuple(features.shape)}; "
                f"expected ({images.shape[0]}, {self.feature_dim})"
            )
        return features

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)

    def identity(self) -> str:
        """``name`` plus a digest of the weights: statistics cached under it go stale when the weights change."""
        if self._identity is None:
            digest = hashlib.sha256()
            for key, value in sorted(self.state_dict().items()):
                raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
                digest.update(raw.numpy().tobytes())
            self._identity = f"{self.name}-{digest.hexdigest()[:16]}"
        return self._identity


def _device(module: nn.Module) -> torch.device:
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        return images.split(batch_size)
    return images


def extract_features(extractor: FeatureExtractor, images: Tensor | Iterable[Tensor], batch_size: int = 256) -> Tensor:
    """Features (N, feature_dim) float32 on the CPU of N images, given as one tensor or an iterable of batches.

    Images are uint8 (B, C, H, W) or floating point in [-1, 1] (quantised by `quantize_to_uint8`);
    each batch is moved to the extractor's device.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    device = _device(extractor)
    features = [extractor(as_uint8_images(batch).to(device)).float().cpu() for batch in _batches(images, batch_size)]
    if not features:
        raise ValueError("extract_features received no images")
    return torch.cat(features)
