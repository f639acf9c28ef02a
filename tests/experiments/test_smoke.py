"""Every experiment's smoke variant, end to end on the CPU through its own launch path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.commands.conftest import REPOSITORY, command_environment

EXPERIMENTS = REPOSITORY / "experiments"


def run(arguments: list[str], timeout: float, **environment: str) -> subprocess.CompletedProcess:
    env = command_environment()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(environment)
    completed = subprocess.run(arguments, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPOSITORY)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gaussian_mixture_128_smoke(tmp_path) -> None:
    folder = EXPERIMENTS / "gaussian-mixture-128"
    run([sys.executable, str(folder / "run.py"), "--config", str(folder / "smoke.yaml"), "--out", str(tmp_path)], 500)
    rows = json.loads((tmp_path / "results.json").read_text())
    samplers = [row["sampler"] for row in rows]
    assert samplers[:3] == ["ODE likelihood, rk4 4 steps"] * 2 + ["exact samples"]
    assert samplers[3:] == ["ODE heun", "SDE eps = 1 sbdm"]
    assert [row["nfe"] for row in rows[3:]] == [15, 9]  # heun 2 x 8 - 1; 8 Euler-Maruyama steps + the mean step
    assert all(math.isfinite(row["kl"]) for row in rows[:2]) and all(math.isfinite(row["kl_2d"]) for row in rows[2:])
    assert "| learned | ODE heun | 15 |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_densities_2d_smoke(tmp_path) -> None:
    folder = EXPERIMENTS / "densities-2d"
    out = tmp_path / "runs"
    run(
        [str(folder / "run.sh"), "-c", str(folder / "smoke.yaml")],
        800,
        OUT=str(out),
        TOYS="spirals",
        SAMPLES="64",
        GRID="16",
        NLL_POINTS="8",
    )
    with np.load(out / "spirals" / "samples" / "samples.npz") as content:
        samples = content["arr_0"]
    assert samples.shape == (64, 2) and samples.dtype == np.float32 and np.isfinite(samples).all()
    values = json.loads((out / "spirals" / "evaluation" / "evaluation.json").read_text())["values"]
    assert math.isfinite(values["nll-nats"]) and values["nfe-likelihood"] > 0
    with Image.open(out / "spirals" / "density.png") as picture:
        assert picture.size == (1200, 400)
