"""Checkpoint retention across a resume: the run keeps what an uninterrupted run would have kept.

Lightning's ``ModelCheckpoint`` never removes the checkpoint the Trainer resumed from, so a run
resumed from ``<run>/checkpoints/epoch=0-step=10.ckpt`` with ``save_top_k: 1`` ends with both
``step=10`` and ``step=20`` where an uninterrupted run keeps only ``step=20``. A checkpoint that
lies in the callback's own folder and that the callback tracks (its state came back with the
resume) is this run's file: it is removed when the callback's retention says so. A checkpoint
from anywhere else is never touched.

A top-k checkpoint is written before ``last.ckpt`` of the same step, so the state it holds knows no
last checkpoint yet; resumed from it, Lightning would write ``last-v1.ckpt`` beside the run's older
``last.ckpt`` (which ``--ckpt_path last`` then picks up). The run's own ``last.ckpt`` is adopted
instead and overwritten, as in an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from types import MethodType
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint


def _resumed_own_checkpoint(callback: ModelCheckpoint, trainer: pl.Trainer, previous: str, current: str) -> bool:
    """Whether ``previous`` is the checkpoint the run resumed from, a file of ``callback``'s folder, not ``current``."""
    if previous == current or trainer.ckpt_path is None or callback.dirpath is None:
        return False
    if not (_is_local_file_protocol(previous) and _is_local_file_protocol(str(trainer.ckpt_path))):
        return False
    path = Path(previous).absolute()
    return path == Path(trainer.ckpt_path).absolute() and Path(callback.dirpath).absolute() in path.parents


def adopt_last_checkpoint(callback: ModelCheckpoint) -> None:
    """After a resume whose state names no last checkpoint: the ``last.ckpt`` of the callback's folder is its own."""
    name = callback.CHECKPOINT_NAME_LAST
    if not callback.save_last or callback.last_model_path or callback.dirpath is None or "{" in name:
        return
    path = Path(callback.dirpath) / f"{name}{callback.FILE_EXTENSION}"
    if _is_local_file_protocol(str(path)) and path.is_file():
        callback.last_model_path = str(path)


def follow_retention_after_resume(trainer: pl.Trainer) -> None:
    """Make every ModelCheckpoint of ``trainer`` keep, after a resume, the files an uninterrupted run keeps.

    It may remove the checkpoint the run resumed from (as its retention says), and it overwrites the
    run's own ``last.ckpt`` rather than writing ``last-v1.ckpt`` beside it.
    """
    for callback in trainer.callbacks:
        if not isinstance(callback, ModelCheckpoint) or getattr(callback, "follows_retention_after_resume", False):
            continue
        lightning_rule, lightning_load = callback._should_remove_checkpoint, callback.load_state_dict

        def should_remove(self: ModelCheckpoint, trainer: pl.Trainer, previous: str, current: str, rule=lightning_rule):
            return rule(trainer, previous, current) or _resumed_own_checkpoint(self, trainer, previous, current)

        def load_state_dict(self: ModelCheckpoint, state_dict: dict[str, Any], load=lightning_load) -> None:
            load(state_dict)
            adopt_last_checkpoint(self)

        callback._should_remove_checkpoint = MethodType(should_remove, callback)
        callback.load_state_dict = MethodType(load_state_dict, callback)
        callback.follows_retention_after_resume = True
