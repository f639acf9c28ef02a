"""Checkpoints written atomically, in the checkpoint's own directory, with the process's normal permissions.

Lightning's ``TorchCheckpointIO`` writes a local file through an fsspec transaction whose temporary
file lives in TMPDIR; when TMPDIR is on another filesystem (a tmpfs, a node-local disk) the final
move is a copy, and a kill during it leaves a truncated checkpoint under the final name (a
``last.ckpt`` that no longer loads). ``AtomicCheckpointIO`` streams ``torch.save`` into a temporary
file next to the target and renames it (``si_lightning.files.open_atomically``): a reader sees the
previous checkpoint or the new one. ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` through
the same path. Remote paths (``s3://`` ...) are left to Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from fsspec.utils import get_protocol
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins import AsyncCheckpointIO, TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from si_lightning.files import open_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic renames within the target directory."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        # fsspec names the protocol of a path or URL ("file" for a plain path, "s3" for s3://...).
        if storage_options is not None or get_protocol(str(path)) != "file":
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        with open_atomically(Path(path)) as file:
            torch.save(checkpoint, file)


def install_atomic_checkpoint_io(trainer: pl.Trainer) -> bool:
    """Put an ``AtomicCheckpointIO`` in place of the strategy's plain ``TorchCheckpointIO``; True if it did.

    A checkpoint IO of any other kind (a user's own plugin, a sharded strategy's) is left alone; Lightning's
    ``AsyncCheckpointIO`` around the default IO is replaced by a new one around the atomic IO (its public
    setter keeps a base IO once set, and its thread starts only at the first save, so nothing is lost).
    """
    strategy = trainer.strategy
    current = strategy.checkpoint_io  # Lightning creates its default TorchCheckpointIO on first access
    if type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
        return True
    if type(current) is AsyncCheckpointIO and type(current.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AsyncCheckpointIO(AtomicCheckpointIO())
        return True
    return False


def drop_checkpoints_in_dev_run(trainer: pl.Trainer) -> None:
    """Under fast_dev_run, remove the trainer's checkpoint callbacks: a smoke test writes no checkpoint.

    Lightning skips checkpoints under fast_dev_run except one: ``ModelCheckpoint(save_last=True)``
    still writes ``last.ckpt`` when fit ends (into ``default_root_dir/checkpoints``, the loggers
    being off), a full copy of the weights, EMA and optimizer state.
    """
    if not trainer.fast_dev_run:
        return
    kept = [callback for callback in trainer.callbacks if not isinstance(callback, Checkpoint)]
    if len(kept) < len(trainer.callbacks):
        trainer.callbacks[:] = kept
        rank_zero_info("fast_dev_run: no checkpoint is written")
