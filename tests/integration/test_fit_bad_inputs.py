"""Bad inputs of ``fit`` through the real executable: exit 2, one last line naming the key typed, no run directory.

An accelerator whose package is missing (``tpu`` needs torch_xla), optimizer betas above 1 (torch's
message mentions neither key), and ``--ckpt_path`` of a bare state_dict or of another
architecture (Lightning's KeyError and its long size-mismatch message, after the run directory
was made).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.integration.executable import DIGITS, EXECUTABLE, last_line, run

ERROR_LINE = re.compile(r"^error: (?P<key>\S+) = (?P<value>.*?): (?P<expected>.+)$")
FIRST_WEIGHT = "backbone.time_embedding.mlp.0.weight"


def foreign_checkpoint(directory: Path) -> Path:
    """A bare state_dict of the weights, saved with torch.save (no Lightning keys)."""
    path = directory / "weights.pt"
    torch.save({"state_dict": {"time_embedding.mlp.0.weight": torch.zeros(128, 32)}}, path)
    return path


def other_architecture(directory: Path) -> Path:
    """A Lightning checkpoint (every key a resume reads) whose first weight has another shape."""
    path = directory / "other.ckpt"
    checkpoint = {
        "pytorch-lightning_version": "2.6.0",
        "epoch": 0,
        "global_step": 4,
        "loops": {},
        "optimizer_states": [],
        "state_dict": {FIRST_WEIGHT: torch.zeros(64, 16)},
    }
    torch.save(checkpoint, path)
    return path


CASES = {  # name: (extra arguments, a function writing a file the arguments name, the key, a piece of the line)
    "accelerator-without-its-package": (["--trainer.accelerator", "tpu"], None, "trainer.accelerator", "torch_xla"),
    "betas-above-one": (
        ["--model.optimizer.init_args.betas", "[1.5,0.999]"],
        None,
        "model.optimizer.init_args.betas",
        "[1.5, 0.999]",
    ),
    "bare-state-dict": (["--ckpt_path", "{file}"], foreign_checkpoint, "ckpt_path", "lacks pytorch-lightning_version"),
    "other-architecture": (
        ["--ckpt_path", "{file}"],
        other_architecture,
        "ckpt_path",
        f"{FIRST_WEIGHT} has shape (64, 16) in the checkpoint but (128, 32) in the model",
    ),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_fit_input_exits_2_naming_the_key_and_leaves_no_run_directory(name: str, tmp_path: Path) -> None:
    extra, write, key, piece = CASES[name]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    file = write(inputs) if write is not None else None
    workdir = tmp_path / "work"
    workdir.mkdir()
    arguments = ["fit", "-c", str(DIGITS), "--trainer.max_steps", "2", *[item.format(file=file) for item in extra]]
    completed = run([str(EXECUTABLE), *arguments], workdir, timeout=240)
    assert completed.returncode == 2, completed.stderr[-3000:]
    line = last_line(completed.stderr)
    found = ERROR_LINE.match(line)
    assert found and found.group("key") == key, line
    assert piece in line, line
    assert "Traceback" not in completed.stderr
    assert sorted(path.name for path in workdir.iterdir()) == []  # no runs/ folder
