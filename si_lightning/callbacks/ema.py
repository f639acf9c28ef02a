"""EMA weights of the network: a copy of its parameters and buffers, updated with foreach kernels.

Only the network (``pl_module.backbone``) is copied: its parameters and buffers, never the
LightningModule's other attributes (its trainer, optimizer factory, data). So the callback
pickles cheaply, costs one network's memory, and works under DDP launched by the CLI or torchrun.

The average starts as the weights at the first update (optimiser step k0 = max(1,
``update_starting_at_step``)). At optimiser step k0 + m, m >= 1, it decays by d(m):

    average <- d(m) * average + (1 - d(m)) * weights

- ``warmup=True`` (default): d(m) = min(decay, (1 + m) / (10 + m)). Without it, the average of a
  run of a few thousand steps at decay 0.999 would still hold a large share of the initial weights
  (decay^m: 37 % after 1,000 steps); with it the share is prod_{i<=m} d(i) = 10! (m+1)! / (m+10)!
  while (1+m)/(10+m) < decay (3.4e-21 after 1,000 steps), and the average then spans the last
  ~m/9 steps until it reaches the horizon 1 / (1 - decay).
- ``warmup=False``: d(m) = decay.
- ``sigma_rel`` (EDM2's power-function EMA, Karras et al. 2024): d(m) = (m / (m + 1))^(g + 1) with
  g solving sigma_rel^2 = (g + 1) / ((g + 2)^2 (g + 3)); the average's width is then a fixed fraction
  sigma_rel of the training length at every step, and the initial weights' share is (m + 1)^-(g+1).
  ``decay`` and ``warmup`` are not used.

With ``update_every_n_steps = n`` the update at step k0 + m folds in the n steps since the last one:
d = prod_{i = m - n + 1}^{m} d(i), so the schedule does not depend on n. The factor depends only on
the step, so a resumed run continues the same sequence. Buffers (normalisation statistics,
position tables) are copied, not averaged.

Checkpoints: ``state_dict`` holds the average (so ``load_from_checkpoint`` and inference get the
EMA weights), ``current_model_state`` the raw weights, and the callback's own state the update
count and first and last updated steps. A resumed run continues from the raw weights with the
average and its counters restored. Validation runs with the average swapped in
(``validate_with_average``); when training ends the average is swapped into the network for good
(the copy keeps the raw weights, so a checkpoint saved after training still has both).
"""

from __future__ import annotations

import copy
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from si_lightning.checks import is_integer, is_number

BACKBONE_PREFIX = "backbone."


def network_of(pl_module: pl.LightningModule) -> nn.Module:
    """The averaged network: ``pl_module.backbone`` (the eager module behind a compiled one)."""
    network = getattr(pl_module, "backbone", None)
    if not isinstance(network, nn.Module):
        raise TypeError(f"EMA averages pl_module.backbone; {type(pl_module).__name__} has no backbone module")
    return getattr(network, "_orig_mod", network)


def power_exponent(sigma_rel: float) -> float:
    """EDM2's exponent g of the power-function EMA for a relative width sigma_rel.

    The largest real root of sigma_rel^2 (g + 2)^2 (g + 3) = g + 1; it exists (with g > -1) for
    0 < sigma_rel < 0.2887 (g = -1 is a zero-width average, the raw weights).
    """
    coefficients = [sigma_rel**2, 7 * sigma_rel**2, 16 * sigma_rel**2 - 1, 12 * sigma_rel**2 - 1]
    roots = np.roots(coefficients)
    real = [float(root.real) for root in roots if abs(root.imag) < 1e-9 and root.real > -1]
    if not real:
        raise ValueError(f"EMA sigma_rel = {sigma_rel!r}: expected a number in (0, 0.28)")
    return max(real)


class EMA(Callback):
    """Exponential moving average of the network's weights, with a warm-up (see the module docstring).

    Args:
        decay: the per-step decay once warmed up, in (0, 1); 0.999 averages over about 1,000 steps.
        warmup: decay by min(decay, (1 + m) / (10 + m)) at m steps after the first update.
        sigma_rel: EDM2's power-function EMA of this relative width instead (e.g. 0.05, 0.1);
            ``decay`` and ``warmup`` are then unused.
        update_every_n_steps: update after every n-th optimiser step (folding in the n steps' decays), n >= 1.
        update_starting_at_step: no update before this optimiser step (the average starts as the weights then).
        validate_with_average: run validation with the averaged weights.
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        sigma_rel: float | None = None,
        update_every_n_steps: int = 1,
        update_starting_at_step: int = 0,
        validate_with_average: bool = True,
    ) -> None:
        super().__init__()
        if not is_number(decay) or not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
        if not isinstance(warmup, bool):
            raise ValueError(f"EMA warmup = {warmup!r}: expected true or false")
        if sigma_rel is not None and (not is_number(sigma_rel) or not 0.0 < sigma_rel < 0.28):
            raise ValueError(f"EMA sigma_rel = {sigma_rel!r}: expected a number in (0, 0.28) or null")
        for name, value, minimum in (
            ("update_every_n_steps", update_every_n_steps, 1),
            ("update_starting_at_step", update_starting_at_step, 0),
        ):
            if not is_integer(value) or value < minimum:
                raise ValueError(f"EMA {name} must be an integer >= {minimum}, got {value!r}")
        self.decay = float(decay)
        self.warmup = warmup
        self.sigma_rel = None if sigma_rel is None else float(sigma_rel)
        self.exponent = None if sigma_rel is None else power_exponent(float(sigma_rel))
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.validate_with_average = bool(validate_with_average)
        self.average: nn.Module | None = None
        self.update_count = 0
        self.first_updated_step = -1
        self.last_updated_step = -1
        self._swapped = False  # the network holds the average and the copy the raw weights
        self._swapped_for_validation = False

    # ------------------------------------------------------------------------------ the average
    def step_decay(self, steps_since_start: int) -> float:
        """d(m): the decay applied at m >= 1 optimiser steps after the average started."""
        m = steps_since_start
        if self.exponent is not None:
            return (m / (m + 1)) ** (self.exponent + 1)
        if self.warmup:
            return min(self.decay, (1 + m) / (10 + m))
        return self.decay

    def decay_between(self, first: int, last: int) -> float:
        """prod_{m = first + 1}^{last} d(m): the decay of the update that folds in steps first+1..last."""
        factor = 1.0
        for m in range(first + 1, last + 1):
            factor *= self.step_decay(m)
        return factor

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
        self._swapped = self._swapped_for_validation = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The network is on its device now (it was not at ``setup``): keep the average beside it."""
        if self.average is not None:
            parameter = next(network_of(pl_module).parameters(), None)
            if parameter is not None:
                self.average.to(parameter.device)

    @torch.no_grad()
    def update(self, pl_module: pl.LightningModule, step: int) -> None:
        """The update of optimiser step ``step``: the first copies the weights, later ones lerp towards them."""
        assert self.average is not None
        average_parameters, average_buffers = self._tensors(self.average)
        parameters, buffers = self._tensors(network_of(pl_module))
        if self.update_count == 0:  # the average starts as the weights
            torch._foreach_copy_(average_parameters, parameters)
            self.first_updated_step = step
        else:
            first = self.first_updated_step
            decay = self.decay_between(self.last_updated_step - first, step - first)
            # One fused kernel for all parameters; torch has no public foreach lerp, so its behaviour is
            # pinned in tests/test_library_contracts.py.
            torch._foreach_lerp_(average_parameters, parameters, 1.0 - decay)
        if buffers:
            torch._foreach_copy_(average_buffers, buffers)
        self.update_count += 1
        self.last_updated_step = step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step  # optimiser steps taken; several batches share one under accumulation
        if step <= self.last_updated_step or step < max(self.update_starting_at_step, 1):
            return
        if self.update_count > 0 and (step - self.first_updated_step) % self.update_every_n_steps != 0:
            return
        self.update(pl_module, step)

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
            self._swapped_for_validation = True

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._swapped_for_validation:
            self._swap(pl_module)
            self._swapped_for_validation = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The network keeps the average from now on; the copy holds the raw weights."""
        if self.average is not None and self.update_count > 0 and not self._swapped:
            self._swap(pl_module)

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "update_count": self.update_count,
            "first_updated_step": self.first_updated_step,
            "last_updated_step": self.last_updated_step,
            "decay": self.decay,
            "warmup": self.warmup,
            "sigma_rel": self.sigma_rel,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.update_count = int(state_dict.get("update_count", 0))
        self.last_updated_step = int(state_dict.get("last_updated_step", -1))
        # Checkpoints written before the first step was stored started at the first allowed step.
        default_first = max(self.update_starting_at_step, 1) if self.update_count > 0 else -1
        self.first_updated_step = int(state_dict.get("first_updated_step", default_first))

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """``state_dict`` <- the average (backbone keys), ``current_model_state`` <- the raw weights."""
        if self.average is None or self.update_count == 0:
            return
        raw = checkpoint["state_dict"]
        if self._swapped:  # during validation or after training: the module holds the average, the copy the raw
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
        if self.average is None or self.update_count == 0 or self._swapped:
            return network_of(pl_module)
        return self.average

    def raw_network(self, pl_module: pl.LightningModule) -> nn.Module:
        """The network module that holds the raw (trained) weights now."""
        if self.average is not None and self._swapped:
            return self.average
        return network_of(pl_module)
