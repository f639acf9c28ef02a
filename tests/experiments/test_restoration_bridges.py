"""experiments/restoration-bridges: the script trains, restores and tabulates (a 2-step run of one task)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.integration.executable import REPOSITORY, environment

SCRIPTS = REPOSITORY / "experiments" / "restoration-bridges"


@pytest.mark.slow
@pytest.mark.timeout(300)  # about 30 s on one core: two 2-step fits, 180 restorations each, the baselines
def test_the_script_measures_every_column_and_rdbm_keeps_untouched_pixels(tmp_path):
    arguments = [sys.executable, str(SCRIPTS / "run.py"), "--steps", "2", "--seeds", "0", "--tasks", "deraining"]
    arguments += ["--bridges", "rdbm", "plain", "--baselines", "--out", str(tmp_path)]
    arguments += ["--models", str(tmp_path / "models")]  # the trained weights it saves, out of the repository
    completed = subprocess.run(
        arguments, capture_output=True, text=True, timeout=280, env=environment(), cwd=tmp_path, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # One row per estimate; the defaults give one: a single draw started at x0 (Heun, 10 uniform steps).
    (rdbm,) = json.loads((tmp_path / "deraining-rdbm-seed0.json").read_text())
    (plain,) = json.loads((tmp_path / "deraining-plain-seed0.json").read_text())
    assert rdbm["estimate"] == plain["estimate"] == "x0 start, 1 draw"
    assert rdbm["nfe"] == plain["nfe"] == 19 and rdbm["steps"] == plain["steps"] == 2
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == [
        "deraining-plain-seed0.pt", "deraining-rdbm-seed0.pt"
    ]  # fmt: skip
    # Untouched pixels: exact for the residual bridge whatever its training; not for the noisy plain base.
    assert math.isinf(rdbm["psnr_untouched"]) and rdbm["max_error_untouched"] == 0.0
    assert math.isfinite(plain["psnr_untouched"])
    methods = [row["method"] for row in json.loads((tmp_path / "deraining-baselines.json").read_text())]
    assert methods == ["kNN-5", "mean fill"]
    table = subprocess.run(
        [sys.executable, str(SCRIPTS / "table.py"), str(tmp_path)], capture_output=True, text=True, timeout=60,
        env=environment(), check=True,
    )  # fmt: skip
    lines = table.stdout.splitlines()
    assert lines[0].startswith("| task | method | estimate | NFE | PSNR all (dB) | PSNR untouched (dB)")
    assert any(line.startswith("| de-raining | rdbm | x0 start, 1 draw | 19 |") and "| inf |" in line for line in lines)
    assert any(line.startswith("- x0 start, 1 draw, de-raining: exact on untouched: True;") for line in lines)
    assert lines[-1].startswith("- x0 start, 1 draw: target holds on every task and seed:")
