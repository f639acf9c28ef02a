"""The shipped conditional digits configs through the real executable, a few steps each.

Each run must exit 0 and leave its end-of-fit metrics (restoration PSNR/SSIM/FID, class accuracy,
or the digits FID for the OT coupling) in evaluation/metrics.jsonl, all finite. Evaluations of more
than 48 samples run on 48 (an overlay of the config's own callbacks list).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.config_files import load_config

REPOSITORY = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPOSITORY / "configs" / "experiments"
EXECUTABLE = Path(sys.executable).parent / "si-lightning"

CASES = {
    "superres": (
        ["digits-superres.yaml"],
        ["psnr/bicubic/n48", "psnr/ode-heun-nfe39/n48", "ssim/ode-heun-nfe39/n48"],
    ),
    "superres-x4": (["digits-superres-x4.yaml"], ["psnr/bicubic/n48", "fid-digits/ode-heun-nfe39/n48"]),
    "inpainting": (
        ["digits-inpainting.yaml"],
        ["psnr-hidden/mean-fill/n48", "psnr-hidden/noise-fill/n48", "psnr-hidden/ode-heun-nfe39/n48"],
    ),
    "class-guidance": (
        ["digits-class-guidance.yaml"],
        ["accuracy-digits/ode-heun-cfg1/n48", "accuracy-digits/ode-heun-cfg2/n48"],
    ),
    "ot": (["digits-ot.yaml"], ["fid-digits/ode-heun/n48"]),
}
SMOKE_SAMPLES = 48  # evaluations of more samples than this run on this many (the keys say n48)


def fewer_samples_overlay(config: Path, directory: Path) -> Path:
    """The config's own callbacks with every num_samples (and batch_size) above SMOKE_SAMPLES cut to it
    (a list in a later -c file replaces the earlier one whole), so the end-of-fit evaluations of a
    4-step run stay short."""
    callbacks = load_config(config)["trainer"]["callbacks"]
    for callback in callbacks:
        arguments = callback.get("init_args") or {}
        for key in ("num_samples", "batch_size"):
            if isinstance(arguments.get(key), int) and arguments[key] > SMOKE_SAMPLES:
                arguments[key] = SMOKE_SAMPLES
    overlay = directory / f"fewer-samples-{config.name}"
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}, sort_keys=False))
    return overlay


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", sorted(CASES))
def test_config_runs_and_reports_its_metrics(case, tmp_path):
    configs, keys = CASES[case]
    arguments = [str(EXECUTABLE), "fit"]
    for name in configs:
        arguments += ["-c", str(EXPERIMENTS / name), "-c", str(fewer_samples_overlay(EXPERIMENTS / name, tmp_path))]
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
