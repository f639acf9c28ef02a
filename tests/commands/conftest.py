"""A tiny digits checkpoint trained through the real `si-lightning fit`, once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
EXECUTABLE = Path(sys.executable).parent / "si-lightning"

# EMA and a checkpoint only: the evaluation callbacks of the digits config are left out (cheap).
CALLBACKS_OVERLAY = """\
trainer:
  callbacks:
    - class_path: si_lightning.callbacks.EMA
      init_args:
        decay: 0.9
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        save_last: true
"""


def command_environment() -> dict[str, str]:
    """The checkout on PYTHONPATH, one thread per process (2 shared cores), no network."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")]))
    environment.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    return environment


def run_command(arguments: list[str], timeout: float = 240, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real executable as a subprocess."""
    return subprocess.run(
        [str(EXECUTABLE), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=command_environment(),
        cwd=cwd or REPOSITORY,
    )


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of 20 optimiser steps of the digits config (UNet on 8x8 digits, EMA)."""
    directory = tmp_path_factory.mktemp("digits-run")
    overlay = directory / "callbacks.yaml"
    overlay.write_text(CALLBACKS_OVERLAY)
    completed = run_command(
        [
            "fit",
            "-c",
            str(REPOSITORY / "configs" / "experiments" / "digits.yaml"),
            "-c",
            str(overlay),
            "--trainer.max_steps",
            "20",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(directory / "runs"),
            "--trainer.default_root_dir",
            str(directory / "runs"),
        ],
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    checkpoints = sorted((directory / "runs").rglob("last.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    return checkpoints[0]
