"""EMA weights of the network: a copy of its parameters and buffers, updated with foreach kernels.

Only the network (``pl_module.backbone``) is copied: its parameters and buffers, never the
LightningModule's other attributes (its trainer, optimizer factory, data). So the callback
pickles cheaply, costs one network's memory, and works under DDP launched by the CLI or torchrun.

Update after every ``update_every_n_steps``-th optimiser step k >= ``update_starting_at_step``:

    average <- decay^n * average + (1 - decay^n) * weights,   n = update_every_n_steps

so the averaging horizon (about 1 / (1 - decay) optimiser steps) does not depend on n. Buffers
(normalisation statistics, position tables) are copied, not averaged.

Checkpoints: ``state_dict`` holds the average (so ``load_from_checkpoint`` and inference get the
EMA weights), ``current_model_state`` the raw weights, and the callback's own state the update
count and last updated step. A resumed run continues from the raw weights with the average and its
counters restored. Validation runs with the average swapped in (``validate_with_average``); when
training ends the average is copied into the network.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

BACKBONE_PREFIX = "backbone."


def network_of(pl_module: pl.LightningModule) -> nn.Module:
    """The averaged network: ``pl_module.backbone`` (the eager module behind a compiled one)."""
    network = getattr(pl_module, "backbone", None)
    if not isinstance(network, nn.Module):
        raise TypeError(f"EMA averages pl_module.backbone; {type(pl_module).__name__} has no backbone module")
    return getattr(network, "_orig_mod", network)


class EMA(Callback):
    """Exponential moving average of the network's weights.

    Args:
        decay: decay per optimiser step, in (0, 1); 0.999 averages over about 1,000 steps.
        update_every_n_steps: update after every n-th optimiser step (decay^n per update), n >= 1.
        update_starting_at_step: no update before this optimiser step (the average starts as the weights then).
        validate_with_average: run validation with the averaged weights.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int = 0,
        validate_with_average: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
        for name, value, minimum in (
            ("update_every_n_steps", update_every_n_steps, 1),
            ("update_starting_at_step", update_starting_at_step, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"EMA {name} must be an integer >= {minimum}, got {value!r}")
        self.decay = float(decay)
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.validate_with_average = bool(validate_with_average)
        self.average: nn.Module | None = None
        self.update_count = 0
        self.last_updated_step = -1
        self._swapped = False
        self._copied_to_current = False

    # ------------------------------------------------------------------------------ the average
    def _tensors(self, network: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """(floating parameters, buffers) of ``network``, in a fixed order."""
        parameters = [parameter.detach() for parameter in network.parameters()]
        buffers = [buffer for buffer in network.buffers()]
        return parameters, buffers

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        network = network_of(pl_module)
        # A copy of the network alone: its modules, parameters and buffers, nothing the module refers to.
        self.average = copy.deepcopy(network).requires_grad_(False)
        self._swapped = self._copied_to_current = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The network is on its device now (it was not at ``setup``): keep the average beside it."""
        if self.average is not None:
            parameter = next(network_of(pl_module).parameters(), None)
            if parameter is not None:
                self.average.to(parameter.device)

    @torch.no_grad()
    def update(self, pl_module: pl.LightningModule) -> None:
        """One EMA update of the average towards the network's current weights."""
        assert self.average is not None
        weight = 1.0 - self.decay**self.update_every_n_steps
        average_parameters, average_buffers = self._tensors(self.average)
        parameters, buffers = self._tensors(network_of(pl_module))
        if self.update_count == 0:  # the average starts as the weights
            torch._foreach_copy_(average_parameters, parameters)
        else:
            torch._foreach_lerp_(average_parameters, parameters, weight)
        if buffers:
            torch._foreach_copy_(average_buffers, buffers)
        self.update_count += 1

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step  # optimiser steps taken; several batches share one under accumulation
        if step <= self.last_updated_step or step < max(self.update_starting_at_step, 1):
            return
        if (step - 1) % self.update_every_n_steps != 0 and self.update_count > 0:
            return
        self.update(pl_module)
        self.last_updated_step = step

    @torch.no_grad()
    def _swap(self, pl_module: pl.LightningModule) -> None:
        assert self.average is not None
        average_parameters, average_buffers = self._tensors(self.average)
        parameters, buffers = self._tensors(network_of(pl_module))
        for first, second in ((average_parameters, parameters), (average_buffers, buffers)):
            if first:
                held = torch._foreach_mul(first, 1.0)  # a copy
                torch._foreach_copy_(first, second)
                torch._foreach_copy_(second, held)
        self._swapped = not self._swapped

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.validate_with_average and self.average is not None and self.update_count > 0 and not self._swapped:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._swapped:
            self._swap(pl_module)

    @torch.no_grad()
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.average is None or self.update_count == 0:
            return
        if self._swapped:
            self._swap(pl_module)
        network = network_of(pl_module)
        network.load_state_dict(self.average.state_dict())
        self._copied_to_current = True

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"update_count": self.update_count, "last_updated_step": self.last_updated_step, "decay": self.decay}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.update_count = int(state_dict.get("update_count", 0))
        self.last_updated_step = int(state_dict.get("last_updated_step", -1))

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """``state_dict`` <- the average (backbone keys), ``current_model_state`` <- the raw weights."""
        if self.average is None or self.update_count == 0 or self._copied_to_current:
            return
        raw = checkpoint["state_dict"]
        if self._swapped:  # saved during validation: the module holds the average, the copy the raw weights
            raw_network = {BACKBONE_PREFIX + name: value.clone() for name, value in self.average.state_dict().items()}
            checkpoint["current_model_state"] = {**raw, **raw_network}
            return
        checkpoint["current_model_state"] = raw
        average = {BACKBONE_PREFIX + name: value.clone() for name, value in self.average.state_dict().items()}
        checkpoint["state_dict"] = {**raw, **average}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """The module was loaded from ``state_dict`` (the average): put the raw weights back, keep the average."""
        if self.average is None:
            return
        prefix = len(BACKBONE_PREFIX)
        average = {
            name[prefix:]: value for name, value in checkpoint["state_dict"].items() if name.startswith("backbone.")
        }
        self.average.load_state_dict(average)
        if "current_model_state" in checkpoint:
            pl_module.load_state_dict(checkpoint["current_model_state"])

    # ------------------------------------------------------------------------------ for samplers
    def averaged_network(self, pl_module: pl.LightningModule) -> nn.Module:
        """The network module that holds the averaged weights now."""
        if self.average is None or self.update_count == 0 or self._swapped or self._copied_to_current:
            return network_of(pl_module)
        return self.average

    def raw_network(self, pl_module: pl.LightningModule) -> nn.Module:
        """The network module that holds the raw (trained) weights now."""
        if self._copied_to_current:
            raise RuntimeError(
                "training has ended and the EMA weights were copied into the model; the raw weights are in the "
                "last checkpoint's 'current_model_state'"
            )
        if self.average is not None and self._swapped:
            return self.average
        return network_of(pl_module)
