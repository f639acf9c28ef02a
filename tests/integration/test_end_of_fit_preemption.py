"""Preemption during the end-of-fit evaluation, through the real executable: the resume completes it.

A run that reached ``max_steps`` and was stopped (SIGTERM) inside the evaluations that end fit
leaves ``last.ckpt`` of its last step. Lightning skips the training loop of a run resumed at
``max_steps``; the resumed run must still run every evaluation the stopped one owed (here the
sample grid it was inside and the FID it never reached), then exit 0.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.integration.executable import (
    EXECUTABLE,
    TRAINING_ONLY,
    csv_logger,
    digits_arguments,
    ema_and_checkpoints,
    finish,
    last_line,
    load,
    run,
    start,
    training_overlay,
    wait_for,
)

STEPS = 3


def end_of_fit_evaluations(cache: Path) -> list[dict]:
    """A long sample grid (4 batches x 49 calls) and a small FID, both only at the end of fit."""
    euler = {"class_path": "si_lightning.sampling.ODESampler", "init_args": {"method": "euler", "steps": 2}}
    heun = {"class_path": "si_lightning.sampling.ODESampler", "init_args": {"method": "heun", "steps": 25}}
    sampling = {"num_samples": 256, "batch_size": 64, "every_n_steps": None, "samplers": {"ode-heun": heun}}
    fid = {"num_samples": 64, "batch_size": 64, "every_n_steps": None, "extractor": "digits", "cache_dir": str(cache)}
    return [
        {"class_path": "si_lightning.callbacks.SamplingCallback", "init_args": sampling},
        {"class_path": "si_lightning.callbacks.FIDCallback", "init_args": {**fid, "samplers": {"ode-euler": euler}}},
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_during_the_end_of_fit_evaluation_is_completed_by_ckpt_path_last(tmp_path: Path) -> None:
    # EMA, a checkpoint at the last step, then the end-of-fit evaluations.
    callbacks = ema_and_checkpoints(None, save_last=True, every_n_train_steps=STEPS)
    callbacks += end_of_fit_evaluations(tmp_path / "cache")
    trainer = {"logger": csv_logger(tmp_path / "runs"), **TRAINING_ONLY}
    config = training_overlay(tmp_path / "end-of-fit.yaml", callbacks, trainer)
    command = [str(EXECUTABLE), *digits_arguments(config, STEPS), "--ckpt_path", "last"]
    process = start(command, tmp_path)
    version = tmp_path / "runs" / "digits" / "version_0"
    numbered = version / "checkpoints" / f"epoch=0-step={STEPS}.ckpt"
    wait_for(numbered.is_file, process, timeout=300)  # training is over: the end-of-fit evaluation runs now
    os.kill(process.pid, signal.SIGTERM)
    stopped = finish(process, timeout=120)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert last_line(stopped.stderr).startswith(f"si-lightning: stopped by SIGTERM at global step {STEPS};")
    assert "weights_only" not in stopped.stderr  # Lightning's "`weights_only` was not set" line
    assert list(version.rglob("*.png")) == []  # the grid was cut short: no picture yet
    assert not (version / "evaluation" / "metrics.jsonl").exists()
    assert load(version / "checkpoints" / "last.ckpt")["global_step"] == STEPS

    resumed = run(command, tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"continuing from {version / 'checkpoints' / 'last.ckpt'}" in resumed.stderr
    assert [path.name for path in version.rglob("*.png")] == [f"step-{STEPS:08d}.png"]
    records = [json.loads(line) for line in (version / "evaluation" / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [STEPS]
    (fid_name,) = [name for name in records[0]["metrics"] if name.startswith("fid-digits/ode-euler")]
    assert records[0]["metrics"][fid_name] > 0
    header = (version / "metrics.csv").read_text().splitlines()[0].split(",")
    assert fid_name in header  # the FID column the stopped run never wrote
    # The completed run's last.ckpt records the evaluation: a third launch has nothing left to do.
    again = run(command, tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len((version / "evaluation" / "metrics.jsonl").read_text().splitlines()) == 1
