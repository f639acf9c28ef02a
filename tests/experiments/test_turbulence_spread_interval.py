"""experiments/turbulence/spread_interval.py against the closed-form spread-skill ratio of Gaussian ensembles."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "turbulence" / "spread_interval.py"


def load_script():
    specification = importlib.util.spec_from_file_location("spread_interval", SCRIPT)
    script = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(script)
    return script


def write_ensemble(path: Path, member_scale: float, inputs: int = 24, members: int = 8, leads: int = 4) -> None:
    """Truth and members independent N(0, 1) and N(0, member_scale^2) fields (2, 16, 16) at every lead."""
    generator = np.random.default_rng(0)
    truth = generator.standard_normal((inputs, leads + 1, 2, 16, 16)).astype(np.float32)
    forecasts = member_scale * generator.standard_normal((inputs, members, leads + 1, 2, 16, 16))
    path.mkdir()
    np.savez(path / "trajectories.npz", forecasts=forecasts.astype(np.float32), truth=truth)


@pytest.mark.parametrize("member_scale", [1.0, 0.5])
def test_the_interval_holds_the_closed_form_ratio(tmp_path: Path, member_scale: float) -> None:
    # Spread^2 = s^2 and the ensemble mean misses the truth by 1 + s^2 / M, so the ratio is
    # sqrt((M + 1) / M) s / sqrt(1 + s^2 / M): 1 for an exchangeable ensemble (s = 1), 0.522 for s = 0.5.
    members = 8
    expected = math.sqrt((members + 1) / members) * member_scale / math.sqrt(1 + member_scale**2 / members)
    write_ensemble(tmp_path / "forecast", member_scale, members=members)
    script = load_script()
    with np.load(tmp_path / "forecast" / "trajectories.npz") as content:
        forecasts, truth = torch.from_numpy(content["forecasts"]), torch.from_numpy(content["truth"])
    ratios = script.ratios_by_input(forecasts, truth, 4)
    mean, low, high = script.bootstrap(ratios, resamples=2000, seed=0)
    assert np.all(low < mean) and np.all(mean < high)
    # The interval is about 4 standard errors of the mean over inputs wide; the mean is within 2.5 of them.
    standard_error = ratios.double().std(0).numpy() / math.sqrt(ratios.shape[0])
    assert np.allclose((high - low) / standard_error, 3.92, rtol=0.2)
    assert np.all(np.abs(mean - expected) < 2.5 * standard_error), (mean, expected, standard_error)


def test_the_script_prints_one_line_per_lead(tmp_path: Path, monkeypatch, capsys) -> None:
    write_ensemble(tmp_path / "forecast", 1.0, inputs=6, leads=3)
    arguments = [str(SCRIPT), str(tmp_path / "forecast"), "--leads", "8", "--resamples", "200"]
    monkeypatch.setattr(sys, "argv", arguments)
    load_script().main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["lead 1", "lead 2", "lead 3"]  # capped at the roll-out's 3
    assert all(" [" in line and line.endswith("]") for line in lines)
