"""`sample` and `evaluate` refuse a checkpoint that holds code: exit 2, one line naming the global it needs.

torch's own refusal is a paragraph advising ``weights_only=False``, which would run the planted code;
the commands print neither it nor that advice.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.commands.conftest import run_command


class Payload:
    """Unpickling this under a plain ``pickle.load`` runs ``touch <marker>`` (``os.system``: ``posix.system``)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_a_checkpoint_holding_code_is_refused_in_one_line_naming_the_global(tmp_path, command) -> None:
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "planted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "loops": Payload(str(marker))}, planted)
    out = tmp_path / "out"
    completed = run_command([command, "--ckpt", str(planted), "--num-samples", "4", "--out", str(out)], timeout=240)
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: --ckpt = "), completed.stderr
    assert str(planted) in lines[0] and "refused by the safe loader" in lines[0], lines[0]
    assert f"would call {os.system.__module__}.system" in lines[0], lines[0]
    assert "weights_only" not in completed.stderr + completed.stdout
    assert not marker.exists() and not out.exists()
