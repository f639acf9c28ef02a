"""EMA weights through Lightning's EMAWeightAveraging, with a way to ask which module holds them.

Lightning's weight averaging swaps the average into the module for validation, swaps it back
after, and copies it into the module when training ends; checkpoints store the average as
``state_dict`` and the raw weights as ``current_model_state`` (so a resumed run continues from the
raw weights, and ``load_from_checkpoint`` gives the average). Samplers need the average at any
moment, hence ``averaged_module`` / ``raw_module``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging


class EMA(EMAWeightAveraging):
    """Exponential moving average of the weights, decay per optimiser step (default 0.999)."""

    def __init__(
        self, decay: float = 0.999, update_every_n_steps: int = 1, update_starting_at_step: int = 0, **kwargs: Any
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
        super().__init__(
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            **kwargs,
        )
        self.decay = decay
        self._swapped = False
        self._copied_to_current = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._swapped = self._copied_to_current = False

    def _swap_models(self, pl_module: pl.LightningModule) -> None:
        super()._swap_models(pl_module)
        self._swapped = not self._swapped

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._copied_to_current = True

    def averaged_module(self, pl_module: pl.LightningModule) -> pl.LightningModule:
        """The module that holds the averaged weights now."""
        if self._average_model is None or self._swapped or self._copied_to_current:
            return pl_module
        return self._average_model.module

    def raw_module(self, pl_module: pl.LightningModule) -> pl.LightningModule:
        """The module that holds the raw (trained) weights now."""
        if self._copied_to_current:
            raise RuntimeError(
                "training has ended and the EMA weights were copied into the model; the raw weights are in the "
                "last checkpoint's 'current_model_state'"
            )
        if self._average_model is not None and self._swapped:
            return self._average_model.module
        return pl_module
