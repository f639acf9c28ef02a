"""Checkpoint retention across a resume, through the real executable.

With ``save_top_k: 1`` an uninterrupted 20-step run keeps ``epoch=0-step=20.ckpt`` and ``last.ckpt``.
A 10-step run resumed to 20 steps from its ``epoch=0-step=10.ckpt`` (by path) must end with the same
two files: Lightning alone keeps the checkpoint a run resumed from beside the newer one, and writes
``last-v1.ckpt`` beside the run's own ``last.ckpt`` (the top-k checkpoint was saved before it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.executable import (
    EXECUTABLE,
    TRAINING_ONLY,
    csv_logger,
    digits_arguments,
    ema_and_checkpoints,
    load,
    run,
    training_overlay,
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_resumed_run_keeps_only_the_checkpoints_an_uninterrupted_run_keeps(tmp_path: Path) -> None:
    callbacks = ema_and_checkpoints(None, save_last=True, save_top_k=1, every_n_train_steps=10)
    trainer = {"logger": csv_logger(tmp_path / "runs"), **TRAINING_ONLY}
    config = training_overlay(tmp_path / "keep-one.yaml", callbacks, trainer)
    checkpoints = tmp_path / "runs" / "digits" / "version_0" / "checkpoints"
    first = run([str(EXECUTABLE), *digits_arguments(config, 10)], tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(path.name for path in checkpoints.iterdir()) == ["epoch=0-step=10.ckpt", "last.ckpt"]

    resume = ["--ckpt_path", str(checkpoints / "epoch=0-step=10.ckpt")]
    second = run([str(EXECUTABLE), *digits_arguments(config, 20), *resume], tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [path.name for path in (tmp_path / "runs" / "digits").iterdir()] == ["version_0"]
    assert sorted(path.name for path in checkpoints.iterdir()) == ["epoch=0-step=20.ckpt", "last.ckpt"]
    assert load(checkpoints / "last.ckpt")["global_step"] == 20  # overwritten, not left at step 10 beside last-v1
