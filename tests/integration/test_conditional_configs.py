"""The shipped conditional digits configs through the real executable, a few steps each.

Each run must exit 0 and leave its end-of-fit metrics (restoration PSNR/SSIM/FID, class accuracy,
or the digits FID for the OT coupling) in evaluation/metrics.jsonl, all finite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPOSITORY / "configs" / "experiments"
EXECUTABLE = Path(sys.executable).parent / "si-lightning"

CASES = {
    "superres": (
        ["digits-superres.yaml"],
        ["psnr/bicubic/n180", "psnr/ode-heun-nfe39/n180", "ssim/ode-heun-nfe39/n180"],
    ),
    "superres-x4": (["digits-superres-x4.yaml"], ["psnr/bicubic/n180", "fid-digits/ode-heun-nfe39/n180"]),
    "inpainting": (
        ["digits-inpainting.yaml"],
        ["psnr-hidden/mean-fill/n180", "psnr-hidden/noise-fill/n180", "psnr-hidden/ode-heun-nfe39/n180"],
    ),
    "class-guidance": (
        ["digits-class-guidance.yaml"],
        ["accuracy-digits/ode-heun-cfg1/n500", "accuracy-digits/ode-heun-cfg2/n500"],
    ),
    "ot": (["digits-ot.yaml"], ["fid-digits/ode-heun/n500"]),
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", sorted(CASES))
def test_config_runs_and_reports_its_metrics(case, tmp_path):
    configs, keys = CASES[case]
    arguments = [str(EXECUTABLE), "fit"]
    for name in configs:
        arguments += ["-c", str(EXPERIMENTS / name)]
    arguments += [
        "--trainer.max_steps",
        "4",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        arguments, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=840, check=False
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    (path,) = tmp_path.glob("*/version_0/evaluation/metrics.jsonl")
    metrics = {}
    for line in path.read_text().splitlines():
        metrics.update(json.loads(line)["metrics"])
    for key in keys:
        assert key in metrics, sorted(metrics)
    assert all(math.isfinite(value) for value in metrics.values()), metrics
