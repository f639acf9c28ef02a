"""`si-lightning sample` through the real executable: reproducible, shard- and batch-invariant, resumable."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from si_lightning.cli import main
from si_lightning.commands.outputs import npz_bytes
from tests.commands.conftest import EXECUTABLE, REPOSITORY, command_environment, run_command

NUM_SAMPLES = 40


def sample(checkpoint: Path, out: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    arguments = ["sample", "--ckpt", str(checkpoint), "--out", str(out), "--quiet", *extra]
    completed = run_command(arguments, timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def sample_in_process(checkpoint: Path, out: Path, *extra: str) -> None:
    """``sample`` through the entry point the executable calls, in this process (no start-up to pay)."""
    assert main(["sample", "--ckpt", str(checkpoint), "--out", str(out), "--quiet", *extra]) == 0


def float_samples(out: Path) -> torch.Tensor:
    """The float32 samples of every shard, in seed order (the run kept its shards)."""
    shards = sorted((out / "shards").glob("shard-*.pt"))
    return torch.cat([torch.load(path, weights_only=True)["samples"] for path in shards])


def test_npz_bytes_ignore_the_clock() -> None:
    arrays = {"arr_0": np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)}
    first = npz_bytes(arrays)
    time.sleep(2.1)  # zip stores times to 2 s
    assert npz_bytes(arrays) == first
    with np.load(__import__("io").BytesIO(first)) as loaded:
        np.testing.assert_array_equal(loaded["arr_0"], arrays["arr_0"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sample_is_reproducible_and_invariant_to_processes_and_batch_size(digits_checkpoint, tmp_path) -> None:
    common = ["--num-samples", str(NUM_SAMPLES), "--sampler", "sde-euler-sigma-20", "--shard-size", "16"]
    sample(digits_checkpoint, tmp_path / "a", *common, "--batch-size", "7", "--keep-shards")
    sample_in_process(digits_checkpoint, tmp_path / "b", *common, "--batch-size", "7")  # a second run, same bytes
    first = (tmp_path / "a" / "samples.npz").read_bytes()
    assert (tmp_path / "b" / "samples.npz").read_bytes() == first

    # ADM's evaluator: np.load(path)["arr_0"], uint8 (N, H, W, C); no arr_1 for an unconditional model.
    with np.load(tmp_path / "a" / "samples.npz") as loaded:
        assert loaded.files == ["arr_0"]
        images = loaded["arr_0"]
    assert images.dtype == np.uint8 and images.shape == (NUM_SAMPLES, 8, 8, 1)
    assert images.std() > 10  # pictures, not a constant
    pngs = sorted((tmp_path / "a" / "images" / "000000").glob("*.png"))
    assert [path.name for path in pngs] == [f"{seed:06d}.png" for seed in range(NUM_SAMPLES)]
    record = json.loads((tmp_path / "a" / "record.json").read_text())
    assert record["status"] == "complete" and record["num_samples"] == NUM_SAMPLES
    assert record["settings"]["seeds"] == f"0-{NUM_SAMPLES - 1}" and record["processes"] == 1
    # 20 Euler-Maruyama steps (velocity and score from one network call each) + the mean last step.
    assert record["nfe_per_sample"] == 21.0

    reference = float_samples(tmp_path / "a")
    for name, extra in {
        "two-processes": ["--devices", "2", "--batch-size", "64", "--accelerator", "cpu"],
        "batch-1": ["--batch-size", "1"],  # with the two processes' batches of 64: three batch sizes
    }.items():
        out = tmp_path / name
        run = sample if name == "two-processes" else sample_in_process
        run(digits_checkpoint, out, *common, *extra, "--keep-shards")
        torch.testing.assert_close(float_samples(out), reference, atol=1e-5, rtol=0, msg=name)
        with np.load(out / "samples.npz") as loaded:
            difference = np.abs(loaded["arr_0"].astype(int) - images.astype(int))
        assert difference.max() <= 1, name
        assert (difference > 0).mean() <= 1e-3, name
    record = json.loads((tmp_path / "two-processes" / "record.json").read_text())
    assert record["processes"] == 2


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_interrupted_sample_resumes_to_the_same_file(digits_checkpoint, tmp_path) -> None:
    common = ["--num-samples", "64", "--sampler", "ode-heun-20", "--shard-size", "4", "--batch-size", "4"]
    sample_in_process(digits_checkpoint, tmp_path / "whole", *common)  # the reference

    out = tmp_path / "interrupted"
    arguments = ["sample", "--ckpt", str(digits_checkpoint), "--out", str(out), "--quiet", *common]
    process = subprocess.Popen(
        [str(EXECUTABLE), *arguments], env=command_environment(), cwd=REPOSITORY, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while len(list((out / "shards").glob("shard-*.pt"))) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    written = len(list((out / "shards").glob("shard-*.pt")))
    assert 2 <= written < 16 and not (out / "samples.npz").exists(), "the run must be stopped part-way"

    resumed = sample(digits_checkpoint, out, *common)
    assert (out / "samples.npz").read_bytes() == (tmp_path / "whole" / "samples.npz").read_bytes()
    assert resumed.returncode == 0
    for finished in (out, tmp_path / "whole"):  # the shards are assembled and gone, their folder too
        assert sorted(path.name for path in finished.iterdir()) == ["images", "record.json", "samples.npz"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bad_input_is_one_line_and_exit_2(digits_checkpoint, tmp_path, capsys) -> None:
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "samples.npz").write_bytes(npz_bytes({"arr_0": np.zeros((1, 8, 8, 1), dtype=np.uint8)}))
    cases = {
        "--ckpt": ["--ckpt", str(tmp_path / "missing.ckpt"), "--num-samples", "4", "--out", str(tmp_path / "o1")],
        "--ckpt ": ["--ckpt", str(not_a_checkpoint), "--num-samples", "4", "--out", str(tmp_path / "o2")],
        "--seeds": ["--ckpt", str(digits_checkpoint), "--seeds", "10-3", "--out", str(tmp_path / "o3")],
        "--out": ["--ckpt", str(digits_checkpoint), "--num-samples", "4", "--out", str(taken)],
        "--sampler": ["--ckpt", str(digits_checkpoint), "--num-samples", "4", "--sampler", "ode-magic-7"],
    }
    cases["--sampler"] += ["--out", str(tmp_path / "o5")]
    # The first through the executable; the others through the same entry point in this process (the
    # executable's start-up is the slow part; the command fuzz runs more of them through the executable).
    for index, (key, arguments) in enumerate(cases.items()):
        if index == 0:
            completed = run_command(["sample", *arguments], timeout=120)
            status, stderr = completed.returncode, completed.stderr
        else:
            status, stderr = main(["sample", *arguments]), capsys.readouterr().err
        lines = stderr.strip().splitlines()
        assert status == 2, (key, stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"error: {key.strip()} = "), (key, stderr)
    assert (taken / "samples.npz").is_file() and not (taken / "record.json").exists()  # nothing was touched
