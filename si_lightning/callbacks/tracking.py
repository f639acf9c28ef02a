"""Run tracking: the full config and the git commit go to the loggers; W&B runs resume under their own id.

``RunTracking`` is a Lightning callback. Once per run, on rank 0, it logs

    {"config": <the LightningCLI config as a dict>, "git": {"commit": <sha of HEAD>, "dirty": <bool>}}

to every logger through ``log_hyperparams`` (for ``WandbLogger`` that is ``experiment.config.update``),
and it writes the id of the W&B run into every checkpoint under ``checkpoint["wandb_run_id"]``. The
``si-lightning`` command adds it with the parsed config; in plain Python pass ``config=`` yourself.

When ``si-lightning fit --ckpt_path X`` resumes, ``resume_wandb_run`` reads that id back (before the
logger is built) and gives it to each ``WandbLogger`` that was not given an id, so the metrics of the
resumed run continue the same W&B run. ``choose_wandb_mode`` runs a ``WandbLogger`` offline unless
an API key (``WANDB_API_KEY``) or an explicit ``WANDB_MODE`` is set: a run without credentials then
logs to ``<save_dir>/wandb/offline-run-*`` (upload later with ``wandb sync``) instead of failing.
"""

from __future__ import annotations

import importlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

WANDB_RUN_ID_KEY = "wandb_run_id"


def git_state(directory: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha of HEAD, "dirty": tracked files differ from HEAD}`` for ``directory`` (default: cwd).

    None when git is not installed or ``directory`` is not inside a git work tree. Untracked files do
    not make the tree dirty: they are not part of what a commit reproduces.
    """

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=directory, capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changes = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(changes)}


def wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    """The trainer's W&B loggers, in order."""
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


class RunTracking(pl.Callback):
    """Logs the config and the git state once (rank 0), and stores the W&B run id in checkpoints.

    Args:
        config: the run's full configuration as a (nested) dict; None logs only the git state.
        git_directory: where to ask git for the commit; the working directory by default.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, git_directory: str | Path | None = None) -> None:
        self.config = dict(config) if config is not None else None
        self.git_directory = git_directory
        self._logged = False

    def tracked(self) -> dict[str, Any]:
        """What is logged: ``{"config": ..., "git": ...}``, each only when known."""
        tracked: dict[str, Any] = {}
        if self.config is not None:
            tracked["config"] = self.config
        git = git_state(self.git_directory)
        if git is not None:
            tracked["git"] = git
        return tracked

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Setup runs once per stage (fit, then test...): the config is the same, log it once.
        if self._logged or not trainer.is_global_zero:
            return
        tracked = self.tracked()
        if tracked:
            for logger in trainer.loggers:
                logger.log_hyperparams(tracked)
        self._logged = True

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        for logger in wandb_loggers(trainer):
            if logger.version is not None:  # the first W&B logger's run is the one a resume continues
                checkpoint[WANDB_RUN_ID_KEY] = str(logger.version)
                return


# ------------------------------------------------------------------------- parsed-config helpers (CLI)
def _is_wandb_logger(entry: Any) -> bool:
    """Whether a parsed ``trainer.logger`` entry (class_path + init_args) names WandbLogger or a subclass."""
    class_path = entry.get("class_path") if hasattr(entry, "get") else None
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, WandbLogger)


def wandb_logger_arguments(config: Any) -> Iterator[Any]:
    """The ``init_args`` of every WandbLogger in a parsed (sub)command config, to be edited in place."""
    trainer = config.get("trainer") if hasattr(config, "get") else None
    logger = trainer.get("logger") if hasattr(trainer, "get") else None
    for entry in logger if isinstance(logger, list) else [logger]:
        if _is_wandb_logger(entry) and entry.get("init_args") is not None:
            yield entry["init_args"]


def wandb_run_id_in_checkpoint(path: str | Path) -> str | None:
    """The W&B run id that ``RunTracking`` stored in the checkpoint at ``path``, or None."""
    # mmap: only the small dict of metadata is read, not gigabytes of weights.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    run_id = checkpoint.get(WANDB_RUN_ID_KEY)
    return str(run_id) if run_id is not None else None


def resume_wandb_run(config: Any) -> str | None:
    """Give every WandbLogger without an id the run id stored in ``config.ckpt_path``; returns that id.

    Only a checkpoint given as a file path is read (``ckpt_path: last`` is resolved by the Trainer
    later, after the logger exists). An id set by the user (``id`` or ``version``) is kept.
    """
    ckpt_path = config.get("ckpt_path") if hasattr(config, "get") else None
    arguments = [init_args for init_args in wandb_logger_arguments(config)]
    if not arguments or not ckpt_path or not Path(ckpt_path).is_file():
        return None
    run_id = wandb_run_id_in_checkpoint(ckpt_path)
    if run_id is None:
        return None
    for init_args in arguments:
        if init_args.get("id") is None and init_args.get("version") is None:
            init_args["id"] = run_id
    rank_zero_info(f"W&B: resuming run {run_id} from {ckpt_path}")
    return run_id


def choose_wandb_mode(config: Any, environment: Mapping[str, str] | None = None) -> None:
    """Set ``offline: true`` on every WandbLogger when there are no W&B credentials to go online with.

    Online needs ``WANDB_API_KEY`` (or an explicit ``WANDB_MODE``, which wandb itself obeys); without
    either, an online run would stop at a login prompt or fail, so it is logged offline instead. A
    logger that uploads checkpoints (``log_model``) is left as configured: it cannot run offline.
    """
    environment = os.environ if environment is None else environment
    if "WANDB_API_KEY" in environment or "WANDB_MODE" in environment:
        return
    for init_args in wandb_logger_arguments(config):
        if not init_args.get("offline") and not init_args.get("log_model"):
            init_args["offline"] = True
            rank_zero_info("W&B: no WANDB_API_KEY set, logging offline (upload later with `wandb sync`)")
