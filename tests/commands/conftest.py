"""Tiny digits checkpoints trained through the real `si-lightning fit`, once per test session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.executable import TRAINING_ONLY, ema_and_checkpoints, environment, training_overlay

REPOSITORY = Path(__file__).resolve().parents[2]
EXECUTABLE = Path(sys.executable).parent / "si-lightning"


def command_environment() -> dict[str, str]:
    """The checkout on PYTHONPATH, one thread per process (2 shared cores), no network (``environment``)."""
    return environment()


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


def fit_checkpoint(directory: Path, config: str, steps: int) -> Path:
    """last.ckpt of ``steps`` optimiser steps of configs/experiments/``config`` (EMA, no evaluation callbacks)."""
    # EMA and a checkpoint only: the evaluation callbacks of the digits config are left out (cheap).
    overlay = training_overlay(directory / "callbacks.yaml", ema_and_checkpoints(save_last=True), TRAINING_ONLY)
    completed = run_command(
        [
            "fit",
            "-c",
            str(REPOSITORY / "configs" / "experiments" / config),
            "-c",
            str(overlay),
            "--trainer.max_steps",
            str(steps),
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


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of 20 optimiser steps of the digits config (UNet on 8x8 digits, EMA)."""
    return fit_checkpoint(tmp_path_factory.mktemp("digits-run"), "digits.yaml", 20)


@pytest.fixture(scope="session")
def superres_checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of 10 steps of digits super-resolution (4x4 -> 8x8, SuperResolution(factor=2, sigma=0.1))."""
    return fit_checkpoint(tmp_path_factory.mktemp("superres-run"), "digits-superres.yaml", 10)


@pytest.fixture(scope="session")
def inpainting_checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of 10 steps of digits in-painting (64 one-pixel tiles, each hidden with p = 0.3)."""
    return fit_checkpoint(tmp_path_factory.mktemp("inpainting-run"), "digits-inpainting.yaml", 10)
