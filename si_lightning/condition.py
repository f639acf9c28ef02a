"""What a network is conditioned on besides (x_t, t): class labels and extra input channels.

A coupling (si_lightning/couplings.py) produces it; a backbone (si_lightning/nn/) consumes it.
Class labels use ``num_classes`` as the null label of classifier-free guidance, so a backbone with a
class embedding has ``num_classes + 1`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class Condition:
    """labels (batch,) int64 in [0, num_classes] (num_classes = dropped); channels (batch, C_extra, ...)."""

    labels: Tensor | None = None
    channels: Tensor | None = None

    def to(self, device: torch.device | str) -> Condition:
        return Condition(
            labels=None if self.labels is None else self.labels.to(device),
            channels=None if self.channels is None else self.channels.to(device),
        )

    def select(self, index: Tensor | slice) -> Condition:
        """The condition of a subset of the batch (same index as the data)."""
        return Condition(
            labels=None if self.labels is None else self.labels[index],
            channels=None if self.channels is None else self.channels[index],
        )

    def with_labels(self, labels: Tensor | None) -> Condition:
        return replace(self, labels=labels)

    def __len__(self) -> int:
        for value in (self.labels, self.channels):
            if value is not None:
                return value.shape[0]
        return 0
