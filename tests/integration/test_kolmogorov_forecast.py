"""The kolmogorov-forecast config and the `forecast` command through the real executable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from si_lightning.cli import main
from si_lightning.physics import divergence
from tests.integration.executable import EXECUTABLE, REPOSITORY, last_line, run

CONFIG = REPOSITORY / "configs" / "experiments" / "kolmogorov-forecast.yaml"
SMOKE = REPOSITORY / "configs" / "experiments" / "kolmogorov-forecast-smoke.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step fit of the smoke variant in its own folder: the data cache and the run directory."""
    folder = tmp_path_factory.mktemp("kolmogorov")
    result = run([str(EXECUTABLE), "fit", "-c", str(CONFIG), "-c", str(SMOKE), "--trainer.accelerator", "cpu"],
                 folder, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_line(result.stderr) == "`Trainer.fit` stopped: `max_steps=4` reached."
    assert len(list((folder / "data" / "kolmogorov").glob("kolmogorov-*.npz"))) == 1
    assert not list((folder / "data" / "kolmogorov").glob(".*.tmp"))
    checkpoint = folder / "runs" / "kolmogorov-forecast" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert {"interpolant.alpha_schedule.logits", "interpolant.beta_schedule.logits"} <= set(state)
    assert state["interpolant.alpha_schedule.logits"].abs().max() > 0  # the energy loss moved the schedule
    with np.load(next((folder / "data" / "kolmogorov").glob("kolmogorov-*.npz"))) as cache:
        np.savez(folder / "held-out.npz", trajectories=np.concatenate([cache["val"], cache["test"]]))
    return folder


def forecast_arguments(folder: Path, out: str, *extra: str) -> list[str]:
    checkpoint = folder / "runs" / "kolmogorov-forecast" / "version_0" / "checkpoints" / "last.ckpt"
    return ["forecast", "--ckpt", str(checkpoint), "--inputs", str(folder / "held-out.npz"), "--steps", "3",
            "--members", "2", "--sde-steps", "4", "--out", str(folder / out), *extra]  # fmt: skip


def forecast(folder: Path, out: str, *extra: str, timeout: float = 240):
    return run([str(EXECUTABLE), *forecast_arguments(folder, out, *extra)], folder, timeout=timeout)


@pytest.mark.timeout(900)
def test_forecast_writes_divergence_free_ensembles_the_same_on_two_processes_and_resumes(
    trained: Path, capsys: pytest.CaptureFixture
) -> None:
    result = forecast(trained, "forecasts")
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_line(result.stdout).startswith("forecast: 2 inputs x 2 members x 3 steps in ")
    with np.load(trained / "forecasts" / "trajectories.npz") as content:
        forecasts, truth, inputs = content["forecasts"], content["truth"], content["inputs"]
    assert forecasts.shape == (2, 2, 4, 2, 16, 16) and truth.shape == (2, 4, 2, 16, 16)
    assert np.isfinite(forecasts).all() and np.array_equal(forecasts[:, :, 0], np.repeat(inputs[:, None], 2, 1))
    assert not np.allclose(forecasts[:, 0, 1:], forecasts[:, 1, 1:])  # the members differ
    assert divergence(torch.from_numpy(forecasts[:, :, 1:])).abs().max().item() < 1e-6
    record = json.loads((trained / "forecasts" / "record.json").read_text())
    assert record["shape"] == [2, 2, 4, 2, 16, 16] and record["settings"]["members"] == 2
    two = forecast(trained, "two-processes", "--devices", "2", timeout=400)
    assert two.returncode == 0, two.stderr[-3000:]
    with np.load(trained / "two-processes" / "trajectories.npz") as content:
        assert np.array_equal(content["forecasts"], forecasts)
    # resume: the shards on disk are kept (a planted value survives), the rest is assembled again
    shard = trained / "forecasts" / "shards" / "input-00001.npz"
    with np.load(shard) as content:
        planted = {"forecasts": content["forecasts"] + 1.0, "settings": content["settings"]}
    np.savez(shard, **planted)
    (trained / "forecasts" / "trajectories.npz").unlink()
    again = forecast(trained, "forecasts")
    assert again.returncode == 0, again.stderr[-3000:]
    with np.load(trained / "forecasts" / "trajectories.npz") as content:
        assert np.array_equal(content["forecasts"][1], forecasts[1] + 1.0)
        assert np.array_equal(content["forecasts"][0], forecasts[0])
    # other settings into the same folder: refused, nothing touched (in this process: the refusals of the
    # executable are test_bad_options_are_one_line_errors's)
    capsys.readouterr()
    assert main(forecast_arguments(trained, "forecasts", "--seed", "5")) == 2
    expected = f"error: --out = {trained / 'forecasts'}: a new directory or one of this run's (pass --overwrite)"
    assert last_line(capsys.readouterr().err) == expected


# The first case runs the executable; the others the same entry point in this process (the executable's
# start-up is the slow part).
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("extra", "message", "executable"),
    [
        (["--members", "two"], "error: --members = two: an integer >= 1", True),
        (["--steps", "0"], "error: --steps = 0: an integer >= 1", False),
        (["--memberz", "2"], "error: --memberz = 2: an unknown option (see --help)", False),
        (["--blow-up-factor", "0.5"], "error: --blow-up-factor = 0.5: a number > 1", False),
    ],
)
def test_bad_options_are_one_line_errors(
    trained: Path, extra: list[str], message: str, executable: bool, capsys
) -> None:
    if executable:
        result = forecast(trained, "bad", *extra)
        status, stderr = result.returncode, result.stderr
    else:
        status, stderr = main(forecast_arguments(trained, "bad", *extra)), capsys.readouterr().err
    assert status == 2
    assert last_line(stderr) == message
    assert "Traceback" not in stderr and not (trained / "bad").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_inputs_of_another_grid_are_refused(trained: Path, capsys) -> None:
    np.savez(trained / "wrong.npz", states=np.zeros((2, 2, 8, 8), dtype=np.float32))
    checkpoint = trained / "runs" / "kolmogorov-forecast" / "version_0" / "checkpoints" / "last.ckpt"
    status = main(["forecast", "--ckpt", str(checkpoint), "--inputs", str(trained / "wrong.npz"),
                   "--steps", "2", "--out", str(trained / "wrong")])  # fmt: skip
    assert status == 2
    expected = (f"error: --inputs = {trained / 'wrong.npz'}: an .npz with states (K, 2, 16, 16) or trajectories "
                "(K, T, ...); states are (2, 2, 8, 8)")  # fmt: skip
    assert last_line(capsys.readouterr().err) == expected


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("overlay", ["plain.yaml", "regression.yaml", "cpu-small.yaml"])
def test_experiment_overlays_fit(tmp_path: Path, overlay: str) -> None:
    """experiments/turbulence's overlays (the baselines and the small CPU setting) on the smoke variant."""
    path = REPOSITORY / "experiments" / "turbulence" / overlay
    arguments = ["fit", "-c", str(CONFIG), "-c", str(path), "-c", str(SMOKE), "--trainer.accelerator", "cpu",
                 "--trainer.logger.init_args.name", "overlay"]  # fmt: skip
    result = run([str(EXECUTABLE), *arguments], tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_line(result.stderr) == "`Trainer.fit` stopped: `max_steps=4` reached."
    checkpoint = tmp_path / "runs" / "overlay" / "version_0" / "checkpoints" / "last.ckpt"
    hyper = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    expected = "OneStepRegression" if overlay == "regression.yaml" else "EnergyConsistentInterpolant"
    assert hyper["interpolant"]["class_path"].endswith(expected)
