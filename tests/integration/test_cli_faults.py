"""Faults through the `si-lightning` executable: divergence (lr = 1e6), kills during checkpoint writes,
file permissions under a umask, and fast_dev_run. Each runs the real command as a subprocess."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from si_lightning.callbacks.guard import CHECKED_CHECKPOINT_ENTRIES, named_floating_tensors
from tests.integration.executable import (
    DIGITS,
    EXECUTABLE,
    csv_logger,
    ema_and_checkpoints,
    environment,
    training_overlay,
)

LINE = re.compile(
    r"non-finite (?P<what>loss|gradient of \S+) at global step (?P<step>\d+) "
    r"\(batch (?P<batch>\d+), t in \[(?P<low>[\d.]+), (?P<high>[\d.]+)\]\); "
    r"the last finite checkpoint is (?P<last>\S+)( \(rerun with --debug for the traceback\))?$"
)

SKIP_GUARD = {"class_path": "si_lightning.callbacks.NonFiniteGuard", "init_args": {"action": "skip"}}


def overlay(tmp_path: Path, max_steps: int, *extra_callbacks: dict) -> Path:
    """A small digits UNet on the CPU, EMA and a checkpoint every step (the last one kept), a loss per step."""
    root = tmp_path / "runs"
    trainer = {
        "accelerator": "cpu",
        "max_steps": max_steps,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "default_root_dir": str(root),
        "logger": csv_logger(root, "faults", "lightning.pytorch.loggers.CSVLogger"),
    }
    callbacks = [*ema_and_checkpoints(every_n_train_steps=1, save_top_k=1, save_last=True), *extra_callbacks]
    model = {"backbone": {"init_args": {"model_channels": 8, "norm_groups": 4}}}
    return training_overlay(
        tmp_path / "overlay.yaml", callbacks, trainer, model=model, data={"init_args": {"batch_size": 16}}
    )


def run_cli(arguments: list[str], cwd: Path, umask: int = 0o022, timeout: float = 1200) -> subprocess.CompletedProcess:
    # One thread: on a shared CPU, idle OpenMP workers spinning would count as CPU time of the run.
    return subprocess.run(
        [str(EXECUTABLE), *arguments],
        cwd=cwd,
        env=environment({"XDG_CACHE_HOME": str(cwd / "cache")}),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=lambda: os.umask(umask),
    )


def nonfinite_entries(path: Path) -> list[str]:
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    return [
        name
        for entry in CHECKED_CHECKPOINT_ENTRIES
        for name, tensor in named_floating_tensors(checkpoint.get(entry), entry)
        if not torch.isfinite(tensor).all()
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_learning_rate_1e6_stops_at_the_first_nonfinite_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    result = run_cli(
        ["fit", "-c", str(DIGITS), "-c", str(overlay(tmp_path, 30)), "--model.optimizer.init_args.lr", "1e6"],
        tmp_path,
        umask=0o027,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last_lines = [line for line in result.stderr.splitlines() if line.strip()][-3:]
    matches = [LINE.search(line) for line in last_lines]
    match = next((found for found in matches if found), None)
    assert match is not None, "\n".join(last_lines)
    step = int(match["step"])
    # Every step before the reported one logged a finite loss: the run stopped at the first non-finite value.
    (metrics,) = (tmp_path / "runs").rglob("metrics.csv")
    losses = [float(row["train/loss"]) for row in csv.DictReader(metrics.open()) if row.get("train/loss")]
    assert len(losses) == step and all(math.isfinite(loss) for loss in losses)
    checkpoints = sorted((tmp_path / "runs").rglob("*.ckpt"))
    assert {path.name for path in checkpoints} == {f"epoch=0-step={step}.ckpt", "last.ckpt"}
    for path in checkpoints:  # none non-finite; all load with weights_only
        assert nonfinite_entries(path) == [], path
        assert torch.load(path, weights_only=True)["global_step"] == step
        assert mode(path) == 0o640  # umask 027
    last = Path(match["last"])
    assert last in checkpoints
    (config,) = (tmp_path / "runs").rglob("config.yaml")
    assert mode(config) == 0o640


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_learning_rate_1e6_with_skip_completes_with_finite_weights(tmp_path):
    result = run_cli(
        [
            "fit",
            "-c",
            str(DIGITS),
            "-c",
            str(overlay(tmp_path, 8, SKIP_GUARD)),
            "--model.optimizer.init_args.lr",
            "1e6",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = re.findall(r"non-finite \S+ .*at global step (\d+) .*the step was skipped", result.stderr)
    assert skipped, result.stderr[-3000:]
    (last,) = (tmp_path / "runs").rglob("last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 8
    assert nonfinite_entries(last) == []


@pytest.mark.slow
@pytest.mark.timeout(1300)
def test_fast_dev_run_evaluates_once_on_a_few_samples_and_writes_no_checkpoint(tmp_path):
    """The shipped digits config as is (ModelCheckpoint with save_last, samples, FID, likelihood)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    arguments = ["fit", "-c", str(DIGITS), "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true"]
    result = run_cli(arguments, tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.rglob("*.ckpt")) == []
    assert "fast_dev_run: no checkpoint is written" in result.stderr
    for name in ("SamplingCallback", "FIDCallback", "LikelihoodCallback"):
        assert f"fast_dev_run: {name} evaluates once, at the end of fit, with num_samples 8" in result.stderr
    runs = tmp_path / "runs"
    pictures = sorted(runs.rglob("*.png"))
    assert [path.parent.name for path in pictures] == ["ode-heun", "sde-euler-sigma"]
    # 8 digits of 8x8 pixels in one row of the 8-column grid, 2 pixels of padding around each.
    assert Image.open(pictures[0]).size == (8 * 10 + 2, 10 + 2)
    (metrics,) = runs.rglob("metrics.jsonl")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    names = [name for record in records for name in record["metrics"]]
    assert len(records) == 2 and all("/n8" in name for name in names), names
    for path in (*pictures, metrics):  # LightningCLI saves no config.yaml under fast_dev_run
        assert mode(path) == 0o644  # umask 022
    # CPU time, not wall time, so a busy machine does not fail the test; the full evaluation took over 100 s.
    assert cpu_seconds < 60, f"fast_dev_run took {cpu_seconds:.0f} s of CPU time"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_kill_during_checkpoint_writes_leaves_a_last_checkpoint_that_loads(tmp_path):
    """20 SIGKILLs, each during a checkpoint write, TMPDIR on another filesystem (a tmpfs where there is one)."""
    shared_memory = Path("/dev/shm")
    tmpdir = shared_memory / f"si-lightning-{os.getpid()}" if shared_memory.is_dir() else tmp_path / "tmpdir"
    tmpdir.mkdir()
    try:
        arguments = ["-c", str(DIGITS), "-c", str(overlay(tmp_path, 100000)), "--trainer.logger", "false"]
        script = Path(__file__).with_name("kill_during_checkpoints.py")
        result = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "kills"), "--tries", "20", "--", *arguments],
            env=environment({"TMPDIR": str(tmpdir)}),
            capture_output=True,
            text=True,
            timeout=1100,
        )
    finally:
        for entry in sorted(tmpdir.rglob("*"), reverse=True):
            entry.rmdir() if entry.is_dir() else entry.unlink()
        tmpdir.rmdir()
    assert result.returncode == 0, result.stderr[-3000:]
    tries = json.loads(result.stdout)["tries"]
    assert len(tries) == 20
    during_writes = [record for record in tries if record["killed_in"] is not None]
    assert len(during_writes) >= 15, tries
    assert any(record["killed_in"].startswith(".last.ckpt") for record in during_writes), tries
    for record in tries:
        if record["last_exists"]:
            assert record["loads"], record
