"""The forecasting coupling: x0 = the current state, x1 = the state one time step later (docs/math.md section 9)."""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.condition import Condition
from si_lightning.couplings.base import Batch, Coupling


class NextState(Coupling):
    """Splits a pair (batch, 2 C, ...) = [current state, next state] along channels into x0 and x1.

    The data of a forecasting data module are such stacked pairs; x0 is also given to the network as
    ``cond.channels`` (the drift b(x, x0, tau) is conditioned on the state it starts from). Nothing random.
    """

    gaussian_base = False

    def cond_channels(self, data_channels: int) -> int:
        return data_channels

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        if len(data_shape) < 2:
            raise ValueError(f"the next-state coupling needs fields (channels, ...), got data shape {data_shape}")

    def couple(
        self,
        x1: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        if x1.shape[1] % 2:
            raise ValueError(f"a (current, next) pair has an even channel count, got shape {tuple(x1.shape)}")
        current, following = x1.chunk(2, dim=1)
        return Batch(current, following, Condition(channels=current))
