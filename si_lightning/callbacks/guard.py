"""NonFiniteGuard: a non-finite loss or gradient stops the run (or skips the step) and says where, in one line.

    non-finite loss at global step 2 (batch 2, t in [0.013, 0.981]); the last finite checkpoint is runs/.../last.ckpt

The check runs in ``on_before_optimizer_step``: after backward, before Lightning clips the
gradients (clipping a NaN gradient by norm would spread the NaN or hide an inf) and before the
optimizer step, so the weights are still those of the last finite step. It costs one host sync per
step: the inf-norm of every gradient (``torch._foreach_norm``, which propagates NaN and cannot
overflow) is stacked with the step's mean loss and tested at once. The loss, the batch's t and the
batch index come from the module's ``last_training_step`` (InterpolantModule sets it in
``training_step``); for another module only the gradients are checked.

``check_finite_checkpoint`` refuses a checkpoint with a non-finite weight (raw or EMA) or optimizer
state before anything is written, so ModelCheckpoint never replaces or deletes the last finite one
(it removes an old checkpoint only after the new one is saved). InterpolantModule calls it from
``on_save_checkpoint``, which Lightning runs after every callback has added its state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from si_lightning.errors import TrainingDiverged

GUARD_ACTIONS = ("stop", "skip")
# Checkpoint entries that must be finite: the weights (EMA average or raw), the raw weights kept beside
# an EMA average, and the optimizer's moments. Callback states may hold an infinite score legitimately.
CHECKED_CHECKPOINT_ENTRIES = ("state_dict", "current_model_state", "optimizer_states")


def named_floating_tensors(tree: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    """Every floating-point tensor in nested dicts/lists/tuples, with a dotted name."""
    if isinstance(tree, Tensor):
        if tree.is_floating_point():
            yield prefix, tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from named_floating_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from named_floating_tensors(value, f"{prefix}.{index}" if prefix else str(index))


def finite_flags(tensors: list[Tensor]) -> list[bool]:
    """Whether each tensor is all finite; one host sync per device."""
    flags: list[bool] = [True] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for index, tensor in enumerate(tensors):
        by_device.setdefault(tensor.device, []).append(index)
    for indices in by_device.values():
        norms = torch._foreach_norm([tensors[index].detach() for index in indices], ord=math.inf)
        finite = torch.isfinite(torch.stack([norm.float() for norm in norms])).tolist()
        for index, value in zip(indices, finite, strict=True):
            flags[index] = bool(value)
    return flags


def first_nonfinite(named: Iterable[tuple[str, Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity, or None."""
    named = [(name, tensor) for name, tensor in named if tensor.numel() > 0]
    flags = finite_flags([tensor for _, tensor in named])
    return next((name for (name, _), finite in zip(named, flags, strict=True) if not finite), None)


def saved_checkpoints(trainer: pl.Trainer) -> list[Path]:
    """The checkpoint files the trainer's checkpoint callbacks know of or wrote into their folders."""
    paths: set[Path] = set()
    for callback in trainer.checkpoint_callbacks:
        named = [getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")]
        named += list(getattr(callback, "best_k_models", {}) or {})
        paths.update(Path(path) for path in named if path)
        directory = getattr(callback, "dirpath", None)
        if directory and Path(directory).is_dir():
            paths.update(Path(directory).glob("*.ckpt"))
    return [path for path in paths if path.is_file()]


def last_finite_checkpoint(trainer: pl.Trainer) -> str:
    """The newest checkpoint on disk ('none' if there is none); every written checkpoint passed the finite check."""
    paths = saved_checkpoints(trainer)
    return str(max(paths, key=lambda path: path.stat().st_mtime)) if paths else "none"


def check_finite_checkpoint(checkpoint: Mapping[str, Any], trainer: pl.Trainer | None) -> None:
    """Raise ``TrainingDiverged`` if a weight or optimizer state of ``checkpoint`` is not finite."""
    named = (
        pair for entry in CHECKED_CHECKPOINT_ENTRIES for pair in named_floating_tensors(checkpoint.get(entry), entry)
    )
    culprit = first_nonfinite(named)
    if culprit is None:
        return
    step = checkpoint.get("global_step", "?")
    last = last_finite_checkpoint(trainer) if trainer is not None else "none"
    raise TrainingDiverged(
        f"non-finite weights at global step {step} ({culprit}): the checkpoint was not written; "
        f"the last finite checkpoint is {last}"
    )


class NonFiniteGuard(Callback):
    """Stops training (``action="stop"``) or skips the step (``"skip"``) when the loss or a gradient is not finite.

    ``stop`` raises ``si_lightning.errors.TrainingDiverged`` with one line naming the global step, the
    batch index and the t-range of the batch, and the last finite checkpoint. ``skip`` sets every
    gradient to None, so the optimizer step changes neither the weights nor the optimizer's moments,
    and warns with the same line; the global step, the LR scheduler and the EMA update still advance.

    Under mixed precision with a gradient scaler (``16-mixed``) infinite gradients are the scaler's
    signal to lower its scale (it skips those steps itself), so only the loss is checked there.
    Under DDP the gradients are all-reduced before this hook, so every rank takes the same decision
    (a non-finite loss on one rank makes every rank's gradients non-finite).

    Args:
        action: ``stop`` or ``skip``.
    """

    def __init__(self, action: str = "stop") -> None:
        super().__init__()
        if action not in GUARD_ACTIONS:
            raise ValueError(f"NonFiniteGuard action = {action!r}: expected one of {', '.join(GUARD_ACTIONS)}")
        self.action = action
        self.skipped_steps = 0

    @staticmethod
    def gradients(optimizer: torch.optim.Optimizer) -> list[tuple[Tensor, Tensor]]:
        """(parameter, gradient) of every dense gradient the optimizer would apply."""
        pairs = []
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None and not parameter.grad.is_sparse:
                    pairs.append((parameter, parameter.grad))
        return pairs

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        record = getattr(pl_module, "last_training_step", None)
        loss = record[0].detach().reshape(()) if record is not None else None
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        pairs = [] if scaled else self.gradients(optimizer)
        norms = torch._foreach_norm([grad for _, grad in pairs], ord=math.inf) if pairs else []
        values = [norm.float() for norm in norms]
        if loss is not None:
            values.append(loss.float().to(values[0].device) if values else loss.float())
        if not values or bool(torch.isfinite(torch.stack(values)).all()):  # the one host sync of the step
            return
        message = self.describe(trainer, pl_module, pairs, loss)
        if self.action == "stop":
            raise TrainingDiverged(message)
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        self.skipped_steps += 1
        rank_zero_warn(f"{message}; the step was skipped ({self.skipped_steps} so far)")

    def describe(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        pairs: list[tuple[Tensor, Tensor]],
        loss: Tensor | None,
    ) -> str:
        """The one line: what is non-finite, the global step, the batch index and its t-range, the last checkpoint."""
        if loss is not None and not bool(torch.isfinite(loss)):
            what = "loss"
        else:
            names = {id(parameter): name for name, parameter in pl_module.named_parameters()}
            culprit = first_nonfinite((names.get(id(parameter), "?"), grad) for parameter, grad in pairs)
            what = f"gradient of {culprit}"
        where = "batch ?"
        record = getattr(pl_module, "last_training_step", None)
        if record is not None:
            _, t, batch_index = record
            where = f"batch {batch_index}, t in [{float(t.min()):.3f}, {float(t.max()):.3f}]"
        return (
            f"non-finite {what} at global step {trainer.global_step} ({where}); "
            f"the last finite checkpoint is {last_finite_checkpoint(trainer)}"
        )


def add_default_guard(trainer: pl.Trainer) -> None:
    """Give the trainer a ``NonFiniteGuard()`` (stop) unless its callbacks already include one."""
    if not any(isinstance(callback, NonFiniteGuard) for callback in trainer.callbacks):
        trainer.callbacks.append(NonFiniteGuard())
