"""Running the real `si-lightning` executable (and torchrun) as a user does, for the integration tests."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
EXECUTABLE = Path(sys.executable).parent / "si-lightning"
TORCHRUN = Path(sys.executable).parent / "torchrun"
DIGITS = REPOSITORY / "configs" / "experiments" / "digits.yaml"

EMA = {"class_path": "si_lightning.callbacks.EMA"}


def checkpoints(**init_args: Any) -> dict[str, Any]:
    """A ModelCheckpoint callback block with ``init_args``."""
    return {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": init_args}


# The trainer settings of a run that only trains: no validation batches, no progress bar.
TRAINING_ONLY = {"limit_val_batches": 0, "enable_progress_bar": False}


def csv_logger(root: Path, name: str = "digits", class_path: str = "si_lightning.loggers.CSVLogger") -> dict[str, Any]:
    """A CSV logger block writing under ``root/name``."""
    return {"class_path": class_path, "init_args": {"save_dir": str(root), "name": name}}


def training_overlay(path: Path, callbacks: list[dict[str, Any]], trainer: dict[str, Any], **sections: Any) -> Path:
    """Write an overlay (a ``-c`` file after an experiment's config) whose ``callbacks`` replace the
    experiment's evaluations; ``trainer`` adds trainer settings, ``sections`` (``model``, ``data``) others."""
    path.write_text(yaml.safe_dump({"trainer": {**trainer, "callbacks": callbacks}, **sections}, sort_keys=False))
    return path


def ema_and_checkpoints(decay: float | None = 0.9, **checkpoint: Any) -> list[dict[str, Any]]:
    """EMA (``decay``; None: its default) and a ModelCheckpoint with ``checkpoint`` as its init_args."""
    ema = EMA if decay is None else {**EMA, "init_args": {"decay": decay}}
    return [ema, checkpoints(**checkpoint)]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment with this checkout on PYTHONPATH, one thread per process (two ranks share
    the 2 cores of CI), W&B disabled, no launcher or SLURM variables of its own, and ``extra``."""
    values = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY), "WANDB_MODE": "disabled"}
    for name in [*values]:
        if name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") or name.startswith("SLURM_"):
            values.pop(name)
    return {**values, **(extra or {})}


def training_config(directory: Path, root: Path, every: int = 10) -> Path:
    """The digits experiment without its evaluations: EMA and a checkpoint every ``every`` steps, a loss per step."""
    callbacks = ema_and_checkpoints(save_last=True, save_top_k=-1, every_n_train_steps=every)
    trainer = {"logger": csv_logger(root), "log_every_n_steps": 1, **TRAINING_ONLY}
    return training_overlay(directory / "training-only.yaml", callbacks, trainer)


def digits_arguments(config: Path, steps: int, batch_size: int = 64, *extra: str) -> list[str]:
    return [
        "fit", "-c", str(DIGITS), "-c", str(config), "--trainer.accelerator", "cpu",
        "--trainer.max_steps", str(steps), "--data.init_args.batch_size", str(batch_size), *extra,
    ]  # fmt: skip


def start(command: list[str], cwd: Path, extra_environment: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a command in its own process group (so the ranks it starts can be killed with it)."""
    return subprocess.Popen(
        command, cwd=cwd, env=environment(extra_environment), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for ``process``; past ``timeout`` kill its process group and fail the test."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{process.args} did not finish within {timeout} s:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return finish(start(command, cwd), timeout)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float) -> None:
    """Poll ``condition`` until it holds; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"the run ended (status {process.returncode}) before the awaited moment:\n{stderr[-4000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the awaited moment did not come within {timeout} s")
        time.sleep(0.05)


def checkpoint_steps(directory: Path) -> list[int]:
    """Global steps of the ``epoch=E-step=S.ckpt`` files in ``directory``."""
    steps = []
    for path in directory.glob("epoch=*-step=*.ckpt"):
        steps.append(int(path.stem.split("step=")[1].split("-")[0]))
    return sorted(steps)


def losses_by_step(metrics_file: Path) -> dict[int, float]:
    """train/loss per global step from a CSVLogger file; a step logged twice (before and after a resume)
    keeps its last value."""
    losses: dict[int, float] = {}
    with metrics_file.open() as file:
        for row in csv.DictReader(file):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
