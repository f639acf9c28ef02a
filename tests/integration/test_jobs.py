"""Jobs that survive, through the real executable: DDP (CLI and torchrun), kill -9 and resume, SIGTERM.

The digits experiment trains without its evaluations (EMA, a checkpoint every 10 steps, the loss of
every step in metrics.csv). Its per-step losses and EMA weights are compared across launches:
deterministic CPU kernels make two uninterrupted runs bit-identical, so a faithful resume must
reproduce them to float rounding.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from si_lightning.module import InterpolantModule
from tests.integration.executable import (
    EMA,
    EXECUTABLE,
    TORCHRUN,
    TRAINING_ONLY,
    csv_logger,
    digits_arguments,
    finish,
    last_line,
    load,
    losses_by_step,
    run,
    start,
    training_config,
    training_overlay,
    wait_for,
)

DDP_STEPS = 30  # the two-process runs and their one-process reference
STEPS = 80  # 25 batches of 64 per epoch, a checkpoint every 10 steps: the resumed part crosses epoch boundaries


def ema_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The averaged network of a checkpoint (its ``state_dict``; the raw weights are ``current_model_state``)."""
    return {name: value for name, value in checkpoint["state_dict"].items() if name.startswith("backbone.")}


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], tolerance: float) -> None:
    assert first.keys() == second.keys()
    worst = max(float((first[name] - second[name]).abs().max()) for name in first)
    assert worst <= tolerance, f"weights differ by up to {worst:.3g}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict[int, float], dict]:
    """Per-step losses and the final checkpoint of a run that was never stopped."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    config = training_config(directory, directory / "runs")
    completed = run([str(EXECUTABLE), *digits_arguments(config, STEPS)], directory, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (version,) = (directory / "runs" / "digits").iterdir()
    return losses_by_step(version / "metrics.csv"), load(version / "checkpoints" / "last.ckpt")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("same_command_line", [False, True], ids=["explicit-checkpoint", "ckpt_path-last"])
def test_kill_9_mid_epoch_then_resume_reproduces_every_step(tmp_path, uninterrupted, same_command_line):
    reference_losses, reference_checkpoint = uninterrupted
    config = training_config(tmp_path, tmp_path / "runs")
    command = [str(EXECUTABLE), *digits_arguments(config, STEPS)]
    if same_command_line:  # what a requeued job runs: the same line, first with nothing to resume
        command += ["--ckpt_path", "last"]
    first = start(command, tmp_path)
    checkpoints = tmp_path / "runs" / "digits" / "version_0" / "checkpoints"

    def written_step_30() -> bool:  # epoch=1-step=30.ckpt (epoch 1, batch 5), then last.ckpt after it
        numbered, last = checkpoints / "epoch=1-step=30.ckpt", checkpoints / "last.ckpt"
        if not (numbered.is_file() and last.is_file() and last.stat().st_mtime >= numbered.stat().st_mtime):
            return False
        # Lightning writes the loss row of a step just after that step's checkpoint: wait for it (row 29 is
        # the loss of optimiser step 30), so the kill lands inside the next steps, never between the two.
        return 29 in losses_by_step(tmp_path / "runs" / "digits" / "version_0" / "metrics.csv")

    wait_for(written_step_30, first, timeout=600)
    os.killpg(first.pid, signal.SIGKILL)
    _, first_stderr = first.communicate()
    if same_command_line:
        assert "no checkpoint of this run" in first_stderr and "starting a new run" in first_stderr
        resumed_command = command
    else:
        resumed_command = [*command, "--ckpt_path", str(checkpoints / "last.ckpt")]
    resumed_from = load(checkpoints / "last.ckpt")["global_step"]
    assert 30 <= resumed_from <= 50  # the resumed launch runs at least 25 steps

    second = finish(start(resumed_command, tmp_path), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    if same_command_line:
        assert f"continuing from {checkpoints / 'last.ckpt'}" in second.stderr
    # One run directory: the resumed run wrote into the killed run's version.
    assert [path.name for path in (tmp_path / "runs" / "digits").iterdir()] == ["version_0"]
    losses = losses_by_step(tmp_path / "runs" / "digits" / "version_0" / "metrics.csv")
    before = list(range(resumed_from))  # flushed with the checkpoint by the killed launch, kept by the resumed one
    assert all(losses[step] == reference_losses[step] for step in before)
    after = list(range(resumed_from, STEPS))  # logged step s is the loss of optimiser step s + 1
    assert all(step in losses for step in after), sorted(set(after) - set(losses))
    worst = max(abs(losses[step] - reference_losses[step]) for step in after)
    assert worst <= 1e-6, f"per-step losses after the resume differ by up to {worst:.3g}"
    final = load(checkpoints / "last.ckpt")
    assert final["global_step"] == STEPS
    assert_same_weights(ema_weights(final), ema_weights(reference_checkpoint), tolerance=1e-6)
    assert_same_weights(final["current_model_state"], reference_checkpoint["current_model_state"], tolerance=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_sigterm_writes_a_checkpoint_at_that_step_and_exits_non_zero(tmp_path, signum):
    config = training_config(tmp_path, tmp_path / "runs", every=1000)  # no periodic checkpoint in the way
    process = start([str(EXECUTABLE), *digits_arguments(config, 100_000)], tmp_path)
    version = tmp_path / "runs" / "digits" / "version_0"
    wait_for(lambda: (version / "metrics.csv").exists(), process, timeout=600)  # the first step is logged
    time.sleep(random.uniform(0.5, 4.0))  # then a random step
    os.kill(process.pid, signum)
    completed = finish(process, timeout=300)
    assert completed.returncode == 128 + signum, completed.stderr[-3000:]
    if signum == signal.SIGINT:
        assert "stopping after this step with a checkpoint (Ctrl-C again to quit now)" in completed.stderr
    line = last_line(completed.stderr)
    assert line.startswith(f"si-lightning: stopped by {signal.Signals(signum).name} at global step "), line
    step = int(line.split("global step ")[1].split(";")[0])
    path = version / "checkpoints" / "last.ckpt"
    assert line.endswith(f"checkpoint written to {path}"), line
    checkpoint = load(path)
    assert checkpoint["global_step"] == step > 0
    model = InterpolantModule.load_from_checkpoint(path)  # loads, with the EMA weights
    weights = ema_weights(checkpoint)
    assert_same_weights({name: model.state_dict()[name] for name in weights}, weights, tolerance=0.0)


def one_process_reference(directory: Path, steps: int) -> tuple[dict, dict[tuple[str, int], float]]:
    """The last checkpoint and the logged losses of ``steps`` steps of 1 x 64 on one process."""
    directory.mkdir(parents=True, exist_ok=True)
    config = training_config(directory, directory / "runs")
    completed = run([str(EXECUTABLE), *digits_arguments(config, steps, 64)], directory, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    version = directory / "runs" / "digits" / "version_0"
    return load(version / "checkpoints" / "last.ckpt"), logged_losses(version / "metrics.csv")


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> tuple[dict, dict[tuple[str, int], float]]:
    """``one_process_reference`` of DDP_STEPS steps, shared by both launchers."""
    return one_process_reference(tmp_path_factory.mktemp("one-process"), DDP_STEPS)


def logged_losses(metrics_file: Path) -> dict[tuple[str, int], float]:
    """(column, step) -> value of every train/loss and train/loss_t[...] entry of a CSVLogger file."""
    values = {}
    with metrics_file.open() as file:
        for row in csv.DictReader(file):
            for column, value in row.items():
                if column.startswith("train/loss") and value:
                    values[(column, int(row["step"]))] = float(value)
    return values


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("launcher", ["cli-ddp", "torchrun"])
def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path, one_process_run, launcher):
    """2 x 32 on two CPU processes (gloo) = 1 x 64: same data, same noise, DDP-averaged gradients, and the
    same logged losses: train/loss of every step and the epoch's t-binned losses are global-batch means."""
    steps = DDP_STEPS
    reference, reference_losses = one_process_run
    directory = tmp_path / launcher
    directory.mkdir()
    config = training_config(directory, directory / "runs")
    arguments = digits_arguments(config, steps, 32, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    if launcher == "torchrun":
        command = [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(29_500 + os.getpid() % 1000),
                   str(EXECUTABLE), *arguments]  # fmt: skip
    else:
        command = [str(EXECUTABLE), *arguments]
    completed = run(command, directory, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]  # torchrun: non-zero if any rank failed
    version = directory / "runs" / "digits" / "version_0"
    checkpoint = load(version / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == steps
    assert_same_weights(ema_weights(checkpoint), ema_weights(reference), tolerance=1e-5)
    losses = logged_losses(version / "metrics.csv")
    assert losses.keys() == reference_losses.keys()
    bins = [key for key in losses if key[0].startswith("train/loss_t[")]
    # A loss per step; 4 bins at the end of epoch 0 (25 batches) and of the 5 batches of epoch 1.
    assert len(bins) == 8 and len(losses) == steps + len(bins)
    worst = max(abs(losses[key] - reference_losses[key]) for key in losses)
    assert worst <= 1e-5, f"the logged losses differ from one process's by up to {worst:.3g}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigusr1_under_slurm_checkpoints_and_requeues_the_job(tmp_path):
    """SLURM's warning signal: a checkpoint at the current step, `scontrol requeue <job>`, exit 128 + 10."""
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    scontrol = bin_directory / "scontrol"  # stands in for SLURM's scontrol: records how it was called
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    slurm = {
        "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "digits", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
        "PATH": f"{bin_directory}:{os.environ['PATH']}",
    }  # fmt: skip
    config = training_config(tmp_path, tmp_path / "runs", every=1000)
    process = start([str(EXECUTABLE), *digits_arguments(config, 100_000)], tmp_path, extra_environment=slurm)
    version = tmp_path / "runs" / "digits" / "version_0"
    wait_for(lambda: (version / "config.yaml").exists(), process, timeout=600)
    time.sleep(random.uniform(2.0, 4.0))
    os.kill(process.pid, signal.SIGUSR1)
    completed = finish(process, timeout=300)
    assert completed.returncode == 128 + signal.SIGUSR1, completed.stderr[-3000:]
    line = last_line(completed.stderr)
    assert line.startswith("si-lightning: stopped by SIGUSR1 at global step "), line
    step = int(line.split("global step ")[1].split(";")[0])
    assert load(version / "checkpoints" / "last.ckpt")["global_step"] == step > 0
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]


# A sample grid of 16 batches x 49 network calls at step 2.
LONG_SAMPLING = {
    "class_path": "si_lightning.callbacks.SamplingCallback",
    "init_args": {
        "num_samples": 512,
        "batch_size": 64,
        "every_n_steps": 2,
        "at_end": False,
        "samplers": {
            "ode-heun": {"class_path": "si_lightning.sampling.ODESampler", "init_args": {"method": "heun", "steps": 25}}
        },
    },
}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_stops_a_long_evaluation_at_its_next_batch_and_the_resume_runs_it(tmp_path):
    """An evaluation of 8 batches x 49 network calls is cut at a batch boundary; resumed, it runs in full."""
    trainer = {"logger": csv_logger(tmp_path / "runs"), **TRAINING_ONLY}
    config = training_overlay(tmp_path / "long-evaluation.yaml", [EMA, LONG_SAMPLING], trainer)
    command = [str(EXECUTABLE), *digits_arguments(config, 3)]
    process = start(command, tmp_path)
    version = tmp_path / "runs" / "digits" / "version_0"
    wait_for(lambda: (version / "config.yaml").exists(), process, timeout=600)
    time.sleep(3.0)  # two steps take a fraction of a second: the run is inside the evaluation of step 2
    signalled = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    completed = finish(process, timeout=300)
    stopped_after = time.monotonic() - signalled
    assert completed.returncode == 128 + signal.SIGTERM, completed.stderr[-3000:]
    assert last_line(completed.stderr).startswith("si-lightning: stopped by SIGTERM at global step 2;")
    assert not list(version.rglob("step-00000002.png"))  # the evaluation did not finish: no picture
    assert load(version / "checkpoints" / "last.ckpt")["global_step"] == 2

    started = time.monotonic()
    resumed = run([*command, "--ckpt_path", "last"], tmp_path, timeout=600)
    resumed_seconds = time.monotonic() - started
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(list(version.rglob("step-00000002.png"))) == 1  # step 2's evaluation, run on resume
    # Stopping took a batch, not an evaluation: far less than the resumed run (one whole evaluation) took.
    assert stopped_after < resumed_seconds / 2, (stopped_after, resumed_seconds)
