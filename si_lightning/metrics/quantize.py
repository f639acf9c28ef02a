"""The single place where model outputs become 8-bit images before feature extraction.

FID moves by a point or two between quantisation and resize conventions, so every feature
extractor here sees exactly what the reference implementations (torch-fidelity, EDM, ADM) see:
uint8 pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def quantize_to_uint8(images: Tensor) -> Tensor:
    """Map images in [-1, 1] to uint8: clamp to [-1, 1], (x + 1) * 127.5, round to nearest, cast.

    images: (B, C, H, W) floating point. Returns (B, C, H, W) uint8 in [0, 255]. Values outside
    [-1, 1] (a sampler overshooting) saturate, as when the reference code saves a PNG.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point():
        kind = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"quantize_to_uint8 expects a floating-point tensor in [-1, 1]; got {kind}")
    scaled = (images.detach().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8)


def as_uint8_images(images: Tensor) -> Tensor:
    """Images ready for a feature extractor: uint8 (B, C, H, W) passes through, floats in [-1, 1] are quantised."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor; got {shape}")
    if images.dtype == torch.uint8:
        return images
    if images.is_floating_point():
        return quantize_to_uint8(images)
    raise ValueError(f"images must be uint8 in [0, 255] or floating point in [-1, 1]; got dtype {images.dtype}")
