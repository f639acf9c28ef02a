"""The free-energy configs through the real `si-lightning fit`, then the estimation script on the checkpoint.

Each config trains 3 steps on small sample sets (the shipped settings otherwise); the script then prints
one table row per method and the reference Delta F of the system recorded in the checkpoint.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

from si_lightning.cli import build_cli
from si_lightning.errors import ConfigurationError
from si_lightning.free_energy.systems import build_system
from tests.integration.executable import EXECUTABLE, REPOSITORY, environment

CONFIGS = REPOSITORY / "configs" / "experiments"
SCRIPT = REPOSITORY / "experiments" / "free-energy" / "estimate.py"
SYSTEMS = {"gaussians": 50, "mixtures": 2, "double-well": 10}


def run(command: list[str], directory: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=directory, env=environment(), capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def fit(system: str, directory: Path, config: str | None = None) -> Path:
    config = config or f"free-energy-{system}"
    arguments = [
        "fit", "-c", str(CONFIGS / f"{config}.yaml"), "--trainer.accelerator", "cpu",
        "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.enable_progress_bar", "false",
        "--data.init_args.num_samples", "512", "--data.init_args.val_samples", "64",
        "--data.init_args.batch_size", "64",
    ]  # fmt: skip
    result = run([str(EXECUTABLE), *arguments], directory, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in result.stdout + result.stderr
    checkpoint = directory / "runs" / config / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    return checkpoint


def check_estimates(system: str, checkpoint: Path, directory: Path, transport: str = "ode") -> dict[str, list[str]]:
    options = ["--samples", "64", "--steps", "2", "--ti-steps", "1", "--ti-nodes", "4", "--transport", transport]
    result = run([sys.executable, str(SCRIPT), "--ckpt", str(checkpoint), *options], directory, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = build_system(system, SYSTEMS[system]).delta_f()
    assert last_line(result.stdout) == f"reference Delta F = {reference:.6f} kT"
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row[0].strip() for row in rows[1:]] == ["escorted-jarzynski", "controlled-crooks", "fep", "bar", "ti"]
    for row in rows[1:]:
        assert math.isfinite(float(row[1])) and float(row[2]) >= 0
    return {row[0].strip(): row for row in rows[1:]}


def evaluations(rows: dict[str, list[str]]) -> dict[str, int]:
    return {method: int(row[6]) for method, row in rows.items()}


@pytest.mark.timeout(300)
def test_mixtures_config_fits_and_estimates(tmp_path):
    checkpoint = fit("mixtures", tmp_path)
    rows = check_estimates("mixtures", checkpoint, tmp_path)
    # 4 n energy evaluations for every method but TI (its chains: n / (1 + 4 x 1 / 2) rounded, from each end).
    assert evaluations(rows) == {
        "escorted-jarzynski": 256, "controlled-crooks": 256, "fep": 256, "bar": 256, "ti": 2 * 2 * 21 * (1 + 2),
    }  # fmt: skip
    assert int(rows["controlled-crooks"][7]) == 4 * 2  # RK4: 4 velocity evaluations a step
    # A velocity on gamma = 0 has no score: the SDE is refused before any work, with the ConfigurationError that
    # the script's entry point prints as one line with status 2 (test_estimation_refuses_bad_arguments_in_one_line
    # runs that path as a process; here in-process, to spare a launch).
    specification = importlib.util.spec_from_file_location("free_energy_estimate", SCRIPT)
    script = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(script)
    with pytest.raises(ConfigurationError, match=r"^--transport = 'sde': a model with a score \("):
        script.run(["--ckpt", str(checkpoint), "--transport", "sde"])


@pytest.mark.timeout(300)
def test_energy_head_config_fits_and_estimates_along_the_sde_and_the_learned_interpolant(tmp_path):
    """The energy-interpolant head: TI on its learned U_t (2 n / nodes interpolant samples a node), the SDE works."""
    checkpoint = fit("mixtures", tmp_path, "free-energy-mixtures-energy")
    rows = check_estimates("mixtures", checkpoint, tmp_path, transport="sde")
    assert evaluations(rows) == {
        "escorted-jarzynski": 256, "controlled-crooks": 256, "fep": 256, "bar": 256, "ti": 2 * 4 * 32,
    }  # fmt: skip
    assert int(rows["controlled-crooks"][7]) == 2 + 1  # Euler-Maruyama: one velocity-and-score call a grid time


@pytest.mark.timeout(120)
@pytest.mark.parametrize("system", ["gaussians", "double-well"])
def test_the_other_configs_build_their_system(system, tmp_path, monkeypatch):
    """Through the real LightningCLI parser in this process (the executable's path is the mixtures test's)."""
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["-c", str(CONFIGS / f"free-energy-{system}.yaml"), "--trainer.logger", "false"], run=False)
    cli.datamodule.setup("fit")
    dimension = build_system(system, SYSTEMS[system]).dims
    assert tuple(cli.datamodule.data_shape) == tuple(cli.model.backbone.data_shape) == (dimension,)


@pytest.mark.timeout(120)
def test_estimation_refuses_bad_arguments_in_one_line(tmp_path):
    result = run([sys.executable, str(SCRIPT), "--ckpt", str(tmp_path / "missing.ckpt")], tmp_path, timeout=100)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last_line(result.stderr).startswith(f"error: --ckpt = '{tmp_path / 'missing.ckpt'}': an existing file")
    result = run([sys.executable, str(SCRIPT), "--ckpt", "x.ckpt", "--samples", "1"], tmp_path, timeout=100)
    assert result.returncode == 2 and last_line(result.stderr) == "error: --samples = 1: an integer >= 2"
