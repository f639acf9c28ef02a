"""NonFiniteGuard: a non-finite loss or gradient stops the run (or skips the step) and says where, in one line.

    non-finite loss at global step 2 (batch 2, t in [0.013, 0.981]); the last finite checkpoint is runs/.../last.ckpt

The check runs in ``on_before_optimizer_step``: after backward, before Lightning clips the
gradients (clipping a NaN gradient by norm would spread the NaN or hide an inf) and before the
optimizer step. The inf-norm of every gradient (``torch._foreach_norm``, which propagates NaN and
cannot overflow) is stacked with the step's mean loss and tested at once, on the device. The loss,
the batch's t and the batch index come from the module's ``last_training_step`` (InterpolantModule
sets it in ``training_step``); for another module only the gradients are checked.

Reading that flag is a host sync, which stalls a GPU's queue every step. So there are two ways to
check (``check``):

- ``immediate``: the flag is read before the optimizer step; a bad step is stopped (or skipped)
  before it touches the weights, which are still those of the last finite step. On a CPU the read
  costs nothing; ``skip`` always checks this way (it must know before the step).
- ``deferred``: the flags (and the batch's t-range) are copied to the host without waiting
  (pinned memory, a CUDA event) and read one step later, or at the next checkpoint, at the end of
  the epoch or of training. The run then stops one step late, with the same line naming the step
  that went wrong; the weights it leaves behind have taken that step, but no checkpoint of them is
  written (the checkpoint hook reads the pending flags first). No host sync is added.

``auto`` (the default) defers on CUDA with ``stop`` and checks immediately otherwise.

``check_finite_checkpoint`` refuses a checkpoint with a non-finite weight (raw or EMA) or optimizer
state before anything is written, so ModelCheckpoint never replaces or deletes the last finite one
(it removes an old checkpoint only after the new one is saved). InterpolantModule calls it from
``on_save_checkpoint``, which Lightning runs after every callback has added its state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from si_lightning.errors import TrainingDiverged

GUARD_ACTIONS = ("stop", "skip")
GUARD_CHECKS = ("auto", "immediate", "deferred")
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


@dataclass
class PendingCheck:
    """The flags of one step on their way to the host (deferred checks).

    ``flags``: (P + 1,) bool, whether each gradient's inf-norm (then the loss) is finite; ``t_range``:
    (2,) the batch's smallest and largest t, or None; ``ready``: the CUDA event after the copies.
    """

    flags: Tensor
    parameters: list[Tensor]
    has_loss: bool
    t_range: Tensor | None
    ready: Any
    global_step: int
    batch_index: int | None


def to_host(tensor: Tensor) -> Tensor:
    """A copy of ``tensor`` in host memory, started without waiting for it (pinned memory on CUDA)."""
    if tensor.device.type != "cuda":
        return tensor.detach().to("cpu", copy=True)
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor.detach(), non_blocking=True)


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
        check: ``immediate``, ``deferred`` (``stop`` only: no host sync, the run stops one step late)
            or ``auto`` (deferred on CUDA with ``stop``); see the module docstring.
    """

    def __init__(self, action: str = "stop", check: str = "auto") -> None:
        super().__init__()
        if action not in GUARD_ACTIONS:
            raise ValueError(f"NonFiniteGuard action = {action!r}: expected one of {', '.join(GUARD_ACTIONS)}")
        if check not in GUARD_CHECKS:
            raise ValueError(f"NonFiniteGuard check = {check!r}: expected one of {', '.join(GUARD_CHECKS)}")
        if action == "skip" and check == "deferred":
            raise ValueError(
                "NonFiniteGuard check = 'deferred': expected 'immediate' or 'auto' with action 'skip' "
                "(skipping must know before the optimizer step)"
            )
        self.action, self.check = action, check
        self.skipped_steps = 0
        self.pending: PendingCheck | None = None

    def deferred(self, device: torch.device) -> bool:
        if self.check == "auto":
            return self.action == "stop" and device.type == "cuda"
        return self.check == "deferred"

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
        self.resolve_pending(trainer)
        record = getattr(pl_module, "last_training_step", None)
        loss = record[0].detach().reshape(()) if record is not None else None
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        pairs = [] if scaled else self.gradients(optimizer)
        norms = torch._foreach_norm([grad for _, grad in pairs], ord=math.inf) if pairs else []
        values = [norm.float() for norm in norms]
        if loss is not None:
            values.append(loss.float().to(values[0].device) if values else loss.float())
        if not values:
            return
        flags = torch.isfinite(torch.stack(values))
        if self.deferred(flags.device):
            self.defer(trainer, pairs, flags, loss is not None, record)
            return
        if bool(flags.all()):  # the one host sync of the step
            return
        message = self.describe(trainer, pl_module, pairs, loss)
        if self.action == "stop":
            raise TrainingDiverged(message)
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        self.skipped_steps += 1
        rank_zero_warn(f"{message}; the step was skipped ({self.skipped_steps} so far)")

    def defer(
        self,
        trainer: pl.Trainer,
        pairs: list[tuple[Tensor, Tensor]],
        flags: Tensor,
        has_loss: bool,
        record: tuple[Tensor, Tensor, int] | None,
    ) -> None:
        """Start copying this step's flags to the host; ``resolve_pending`` reads them later."""
        t_range = None
        if record is not None:
            t = record[1].detach().reshape(-1)
            t_range = to_host(torch.stack((t.min(), t.max())).float())
        host_flags = to_host(flags)
        ready = None
        if flags.device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record()
        self.pending = PendingCheck(
            flags=host_flags,
            parameters=[parameter for parameter, _ in pairs],
            has_loss=has_loss,
            t_range=t_range,
            ready=ready,
            global_step=trainer.global_step,
            batch_index=None if record is None else record[2],
        )

    def resolve_pending(self, trainer: pl.Trainer) -> None:
        """Read the flags of a deferred step (its copies are done by now) and stop if one is false."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        if pending.ready is not None:
            pending.ready.synchronize()  # long finished: a step of work was queued after it
        if bool(pending.flags.all()):
            return
        if pending.has_loss and not bool(pending.flags[-1]):
            what = "loss"
        else:
            culprit = pending.parameters[int((~pending.flags).nonzero()[0])]
            names = {id(parameter): name for name, parameter in trainer.lightning_module.named_parameters()}
            what = f"gradient of {names.get(id(culprit), '?')}"
        where = "batch ?"
        if pending.t_range is not None:
            low, high = pending.t_range.tolist()
            where = f"batch {pending.batch_index}, t in [{low:.3f}, {high:.3f}]"
        raise TrainingDiverged(
            f"non-finite {what} at global step {pending.global_step} ({where}); "
            f"the last finite checkpoint is {last_finite_checkpoint(trainer)}"
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.resolve_pending(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.resolve_pending(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """A checkpoint taken after a deferred bad step is refused with that step's line."""
        self.resolve_pending(trainer)

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
