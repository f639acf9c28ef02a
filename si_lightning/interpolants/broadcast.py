"""The one place where a per-sample time (batch,) meets data of any shape (batch, ...)."""

from __future__ import annotations

import torch
from torch import Tensor


def broadcast_time(value: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample value of shape (batch,) to (batch, 1, ..., 1) so it multiplies ``x``.

    Broadcasting a (batch,) tensor directly against (batch, C, H, W) data would pair it with the
    last axis (silently wrong when W == batch), so every coefficient goes through here.
    """
    if value.dim() != 1 or value.shape[0] != x.shape[0]:
        raise ValueError(
            f"expected a per-sample tensor of shape ({x.shape[0]},) for data of shape {tuple(x.shape)}, "
            f"got shape {tuple(value.shape)}"
        )
    return value.reshape(value.shape[0], *([1] * (x.dim() - 1)))


def as_batch_time(t: Tensor | float, batch_size: int, like: Tensor) -> Tensor:
    """Turn a scalar or (batch,) time into a (batch,) tensor with ``like``'s dtype and device."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(f"expected t of shape ({batch_size},) or a scalar, got shape {tuple(t.shape)}")
    return t
