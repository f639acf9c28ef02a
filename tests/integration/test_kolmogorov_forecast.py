"""The kolmogorov-forecast config and the `forecast` command through the real executable."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from si_lightning.cli import main
from si_lightning.physics import divergence
from tests.integration.executable import EXECUTABLE, REPOSITORY, last_line, run

CONFIG = REPOSITORY / "configs" / "experiments" / "kolmogorov-forecast.yaml"
SMOKE = REPOSITORY / "configs" / "experiments" / "kolmogorov-forecast-smoke.yaml"
GPU = REPOSITORY / "configs" / "experiments" / "kolmogorov-forecast-gpu.yaml"


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
@pytest.mark.parametrize("overlay", ["plain.yaml", "regression.yaml"])
def test_experiment_overlays_fit(tmp_path: Path, overlay: str) -> None:
    """experiments/turbulence's overlays (the two trained baselines) on the smoke variant."""
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


@pytest.mark.timeout(300)
def test_forecast_callback_scores_are_those_of_the_last_checkpoints_rollouts(trained: Path) -> None:
    """The smoke config's ForecastCallback (1 test trajectory, 2 members, 3 steps, 4 SDE steps) at the end of
    fit: its logged scores are forecast_scores of a roll-out of last.ckpt (EMA weights) with the members'
    seeds derived as ForecastCallback documents, to float32 rounding of the network."""
    from si_lightning.commands.checkpoints import load_model
    from si_lightning.forecasting import SCALAR_SCORES, decorrelation_lead, forecast_scores, rollout
    from si_lightning.seeding import derived_seed

    version = trained / "runs" / "kolmogorov-forecast" / "version_0"
    records = [json.loads(line) for line in (version / "evaluation" / "metrics.jsonl").read_text().splitlines()]
    logged = {name: value for record in records for name, value in record["metrics"].items()}
    module = load_model(version / "checkpoints" / "last.ckpt")
    with np.load(next((trained / "data" / "kolmogorov").glob("kolmogorov-*.npz"))) as cache:
        truth = torch.from_numpy(cache["test"][:1, :4]).double()  # inputs 1, steps 3
    generators = [torch.Generator().manual_seed(derived_seed(0, "forecast", 0, member)) for member in range(2)]
    start = truth[0, 0].expand(2, *truth.shape[2:])
    forecasts = rollout(module.interpolant, module.backbone, start, 3, 4, generators)[None]
    expected = forecast_scores(forecasts, truth, decorrelation_lead(truth), 1)
    names = [name for name in SCALAR_SCORES if name in expected]
    assert len(names) == len(SCALAR_SCORES)  # two members: the spread-skill ratio too
    for name in names:
        key = f"forecast-{name.replace('_', '-')}/m2-s4/n1"
        assert math.isclose(logged[key], expected[name], rel_tol=1e-5, abs_tol=1e-9), (key, logged[key], expected[name])
    assert logged["forecast-blown-up/m2-s4/n1"] == 0 and logged["forecast-rmse-to-decorrelation/m2-s4/n1"] > 0


@pytest.mark.timeout(300)
def test_evaluate_scores_a_forecast_folder(trained: Path, capsys: pytest.CaptureFixture) -> None:
    """``evaluate --forecasts`` through the executable: exit 0, its summary line, evaluation.json holding the
    scalar scores of forecast_scores on the folder's ensembles and truth; a missing folder refused in one line."""
    from si_lightning.forecasting import decorrelation_lead, forecast_scores

    assert main(forecast_arguments(trained, "scored")) == 0  # 2 held-out inputs (val, test), 2 members, 3 steps
    out = trained / "scores"
    capsys.readouterr()
    arguments = ["evaluate", "--forecasts", str(trained / "scored"), "--out", str(out)]
    result = run([str(EXECUTABLE), *arguments], trained, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_line(result.stdout).endswith(f"(2 inputs x 2 members x 3 leads) -> {out / 'evaluation.json'}")
    assert sorted(path.name for path in out.iterdir()) == ["evaluation.json"]
    record = json.loads((out / "evaluation.json").read_text())
    with np.load(trained / "scored" / "trajectories.npz") as content:
        forecasts, truth = (torch.from_numpy(content[name]).double() for name in ("forecasts", "truth"))
    expected = forecast_scores(forecasts, truth, decorrelation_lead(truth), 1)
    assert record["values"] == {name: float(expected[name]) for name in record["values"]}
    assert record["curves"]["rmse_by_lead"] == expected["rmse_by_lead"] and record["leads"] == 3
    assert main(["evaluate", "--forecasts", str(trained / "nowhere"), "--out", str(out)]) == 2
    assert last_line(capsys.readouterr().err).startswith(f"error: --forecasts = {trained / 'nowhere'}: a folder")


@pytest.mark.timeout(300)
def test_gpu_config_resolves_through_the_executable_and_is_refused_without_a_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """kolmogorov-forecast-gpu.yaml through the real executable (never trained here): ``fit --print_config``
    resolves the GPU setting; without a GPU, ``fit`` (the executable's entry point, in this process) stops in
    one line before any data is generated."""
    result = run([str(EXECUTABLE), "fit", "-c", str(GPU), "--print_config"], tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(result.stdout)
    trainer, data = config["trainer"], config["data"]["init_args"]
    assert (trainer["accelerator"], trainer["precision"], trainer["max_steps"]) == ("gpu", "bf16-mixed", 50000)
    assert (data["size"], data["viscosity"], data["time_step"], data["snapshots"]) == (128, 0.001, 0.005, 200)
    backbone = config["model"]["backbone"]["init_args"]
    assert (backbone["model_channels"], backbone["channel_multipliers"]) == (64, [1, 2, 2, 4])
    interpolant = config["model"]["interpolant"]
    assert interpolant["class_path"] == "si_lightning.forecasting.EnergyConsistentInterpolant"
    assert interpolant["init_args"]["learnable"] and interpolant["init_args"]["project"]
    assert [path.name for path in tmp_path.iterdir()] == []
    if torch.cuda.is_available():
        return  # a GPU would train: the refusal below is what a CPU-only machine shows
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["fit", "-c", str(GPU)]) == 2
    stderr = capsys.readouterr().err
    assert last_line(stderr).startswith("error: trainer.accelerator = 'gpu': an accelerator this machine has (")
    assert "No supported gpu backend found" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "data").exists()
