"""A real 2-process DDP run (gloo, CPU) with the three evaluation callbacks.

tests/integration/ddp_evaluation_run.py trains a tiny UNet on digits for 4 steps on 2 ranks,
evaluating at steps 2 and 4. Its metrics must equal a 1-process evaluation of its last checkpoint
(``trainer.validate``) on the same seeds, its step-4 pictures must be the same images, and only
rank 0 may have written files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.integration import ddp_evaluation_run as run

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPT = Path(run.__file__).resolve()


def launch(arguments: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run the script in its own process group; on timeout kill the group (the rank Lightning started too)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    environment.pop("LOCAL_RANK", None)
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *arguments],
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the 2-process run did not finish within {timeout} s (a hang?):\n{output[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def read_records(run_root: Path) -> list[dict]:
    (path,) = run_root.glob("run/digits/version_*/evaluation/metrics.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_process_run_equals_one_process_and_only_rank_zero_writes(tmp_path):
    distributed_root = tmp_path / "ddp"
    completed = launch(["fit", str(distributed_root), "--devices", "2"], timeout=360)
    assert completed.returncode == 0, completed.stdout[-4000:]
    assert "Starting with 2 processes" in completed.stdout

    # Only rank 0 wrote: each file once, no rank-1 record, one run directory.
    assert not (distributed_root / "writes" / "rank1.txt").exists()
    written = (distributed_root / "writes" / "rank0.txt").read_text().splitlines()
    (version,) = (distributed_root / "run" / "digits").iterdir()
    pictures = [version / "samples" / name / f"step-{step:08d}.png" for step in (2, 4) for name in run.samplers()]
    (statistics,) = (distributed_root / "cache").glob("*.pt")
    assert sorted(written) == sorted(
        [*map(str, pictures), str(statistics), *[str(version / "evaluation" / "metrics.jsonl")] * 4]
    )
    assert sorted(version.rglob("*.png")) == sorted(pictures)
    records = read_records(distributed_root)
    assert [record["step"] for record in records] == [2, 2, 4, 4]  # FID and likelihood at steps 2 and 4

    # One process evaluates the last checkpoint (the EMA weights after step 4) on the same seeds.
    single_root = tmp_path / "single"
    trainer = run.trainer(single_root, 1, run.evaluation_callbacks(single_root), validation_batches=1)
    torch.manual_seed(0)
    trainer.validate(
        run.model(),
        datamodule=run.DigitsDataModule(batch_size=16),
        ckpt_path=distributed_root / "checkpoints" / "last.ckpt",
    )
    single = {key: value for record in read_records(single_root) for key, value in record["metrics"].items()}
    distributed = {key: value for record in records if record["step"] == 4 for key, value in record["metrics"].items()}
    assert set(single) == set(distributed)
    fid_keys = [key for key in distributed if key.startswith("fid-digits/")]
    bits_key = f"bits-per-dim-val/ode-rk4-3/n{run.LIKELIHOOD_SAMPLES}"
    assert len(fid_keys) == 2 and bits_key in distributed
    for key in fid_keys:
        assert distributed[key] == pytest.approx(single[key], rel=1e-5), key
        assert distributed[key] > 0
    assert distributed[bits_key] == pytest.approx(single[bits_key], rel=1e-5)
    # The pictures gathered from two ranks are the one-process pictures, sample for sample.
    (single_version,) = (single_root / "run" / "digits").iterdir()
    for name in run.samplers():
        two = np.asarray(Image.open(version / "samples" / name / "step-00000004.png"))
        one = np.asarray(Image.open(single_version / "samples" / name / "step-00000000.png"))
        assert np.array_equal(two, one), name
