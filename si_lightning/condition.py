"""What a network is conditioned on besides (x_t, t): class labels and extra input channels.

A coupling (si_lightning/couplings/) produces it; a backbone (si_lightning/nn/) consumes it.
Class labels use ``num_classes`` as the null label of classifier-free guidance, so a backbone with a
class embedding has ``num_classes + 1`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class Condition:
    """labels (batch,) int64 in [0, num_classes] (num_classes = dropped); channels (batch, C_extra, ...).

    keep (batch, 1, ...) in {0, 1}, set by in-painting: 1 where a pixel is known (x0 = x1 there). It is
    not a network input: the module zeroes the velocity where keep = 1, so sampling never moves a known
    pixel.
    """

    labels: Tensor | None = None
    channels: Tensor | None = None
    keep: Tensor | None = None

    def to(self, device: torch.device | str) -> Condition:
        return Condition(
            labels=None if self.labels is None else self.labels.to(device),
            channels=None if self.channels is None else self.channels.to(device),
            keep=None if self.keep is None else self.keep.to(device),
        )

    def select(self, index: Tensor | slice) -> Condition:
        """The condition of a subset of the batch (same index as the data)."""
        return Condition(
            labels=None if self.labels is None else self.labels[index],
            channels=None if self.channels is None else self.channels[index],
            keep=None if self.keep is None else self.keep[index],
        )

    @staticmethod
    def concatenate(conditions: list[Condition]) -> Condition:
        """The conditions of several batches stacked along the batch (each field present in all or none)."""

        def stacked(values: list[Tensor | None]) -> Tensor | None:
            return None if any(value is None for value in values) else torch.cat(values)  # type: ignore[arg-type]

        return Condition(
            labels=stacked([item.labels for item in conditions]),
            channels=stacked([item.channels for item in conditions]),
            keep=stacked([item.keep for item in conditions]),
        )

    def with_labels(self, labels: Tensor | None) -> Condition:
        return replace(self, labels=labels)

    def __len__(self) -> int:
        for value in (self.labels, self.channels, self.keep):
            if value is not None:
                return value.shape[0]
        return 0
