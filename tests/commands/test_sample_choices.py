"""Sampling choices on the user's path: grid presets, ``--path``, fitted grids and ``--search``.

Through the real executable on the session's tiny digits checkpoint; refusals in-process (they come
before the checkpoint is read, so a missing checkpoint must not be what is reported).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from si_lightning.cli import main
from si_lightning.commands.search import DigitsClassReward
from si_lightning.metrics.digits import load_digits_data
from tests.commands.conftest import run_command


def brightness_reward():
    """A ``module:factory`` reward: the mean pixel value of each image, (n, ...) -> (n,)."""
    return lambda images: images.flatten(1).mean(1)


def sample(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    completed = run_command(["sample", "--ckpt", str(checkpoint), "--out", str(out), "--quiet", *extra], timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.strip().splitlines()


def sample_in_process(checkpoint: Path, out: Path, *extra: str) -> None:
    """``sample`` through the entry point the executable calls, in this process (no start-up to pay)."""
    assert main(["sample", "--ckpt", str(checkpoint), "--out", str(out), "--quiet", *extra]) == 0


def shard_samples(out: Path, shard: int) -> torch.Tensor:
    return torch.load(out / "shards" / f"shard-{shard:06d}.pt", weights_only=True)["samples"]


@pytest.mark.timeout(120)
def test_choices_are_refused_in_one_line_before_the_checkpoint_is_read(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.ckpt")  # reported only if a refusal came too late
    base = ["sample", "--ckpt", missing, "--num-samples", "4", "--out", str(tmp_path / "out")]
    cases = {
        "--sampler": ["--sampler", "ode-dpm++2m-warped-8"],
        "--path": ["--path", "warp"],
        "--path ": ["--path", "linear:nope"],
        "--grid": ["--grid", "fitted-everything"],
        "--grid ": ["--grid", "fitted-lipschitz", "--sampler", "dopri5"],
        "--pilot": ["--grid", "fitted-lipschitz", "--pilot", "0"],
        "--search": ["--search", "greedy", "--reward", "digits-class:3", "--budget", "60"],
        "--reward": ["--search", "smc", "--budget", "60"],
        "--reward ": ["--search", "best-of-n", "--reward", "digits-class:12", "--budget", "60"],
        "--reward  ": ["--search", "best-of-n", "--reward", "no_such_module:factory", "--budget", "60"],
        "--reward   ": ["--reward", "digits-class:3"],
        "--budget": ["--search", "best-of-n", "--reward", "digits-class:3", "--budget", "4"]
        + ["--sampler", "ode-euler-4"],
        "--labels": ["--search", "smc", "--reward", "digits-class:3", "--budget", "60", "--labels", "3"],
        "--search-temperature": ["--search", "smc", "--reward", "digits-class:3", "--budget", "60"]
        + ["--search-temperature", "-1"],
    }
    commands = {key: [*base, *extra] for key, extra in cases.items()}
    evaluation = ["evaluate", "--ckpt", missing, "--out", str(tmp_path / "evaluation")]
    commands["--path    "] = [*evaluation, "--path", "warp"]
    commands["--sweep-samplers"] = [*evaluation, "--sweep", "--sweep-samplers", "ode-heun-cosine-4,ode-heun-warped-4"]
    for key, command in commands.items():
        status, stderr = main(command), capsys.readouterr().err
        lines = stderr.strip().splitlines()
        assert status == 2, (key, stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"error: {key.strip()} = "), (key, stderr)
    assert not (tmp_path / "out").exists()


def test_digits_class_reward_is_the_classifier_log_probability() -> None:
    images, labels = load_digits_data()
    images, labels = images[:300], labels[:300]
    rewards = torch.stack([DigitsClassReward(label)(images) for label in range(10)], dim=1)
    # log p(K | x) over the 10 classes: the probabilities sum to 1 up to float32 rounding of the softmax.
    torch.testing.assert_close(rewards.exp().sum(1), torch.ones(300, dtype=torch.float64), atol=1e-5, rtol=0)
    # The shipped classifier is accurate on the digits it was trained on (>= 97 % of the first 300; 0.9 leaves room).
    assert (rewards.argmax(1) == labels).double().mean() > 0.9


@pytest.mark.timeout(600)
def test_presets_paths_and_fitted_grids_are_recorded_and_reused(digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "fitted"
    common = ["--sampler", "ode-heun-cosine-4", "--path", "trig", "--grid", "fitted-lipschitz", "--pilot", "8"]
    common += ["--num-samples", "6", "--shard-size", "3"]
    lines = sample(digits_checkpoint, out, *common, "--keep-shards")
    assert lines[-1] == f"6 samples, 7.0 NFE per sample -> {out}"  # Heun: 2 calls a step, Euler on the last
    assert (out / "samples.npz").is_file() and len(list((out / "images").rglob("*.png"))) == 6
    record = json.loads((out / "record.json").read_text())
    settings = record["settings"]
    assert settings["sampler"]["init_args"] == {"method": "heun", "steps": 4, "grid": "cosine"}
    assert settings["path"] == {"schedule": "trig", "gamma": "zero"}
    grid = settings["grid"]
    assert (grid["name"], grid["pilot"], grid["criterion"]) == ("fitted-lipschitz", 8, "lipschitz")
    assert len(grid["times"]) == len(grid["density"]) == 33  # the pilot's 32 Heun steps on the cosine grid
    assert all(value > 0 for value in grid["density"])

    # 1 process = 2 processes: the pilot batch is drawn from seeds 0 .. 7 alone and the grid is fitted once
    # before the processes start, so both runs record the same grid and write the same bytes (shards of 3
    # seeds, one batch each on either count of processes: the same kernels).
    two = tmp_path / "two"
    sample(digits_checkpoint, two, *common, "--devices", "2", "--accelerator", "cpu")
    assert (two / "samples.npz").read_bytes() == (out / "samples.npz").read_bytes()
    assert json.loads((two / "record.json").read_text())["settings"] == settings

    # Resume: the recorded grid is read back, not fitted again. A flat density (a uniform grid) put in the
    # record shows it: shard 1, written again, equals a uniform-grid run of its seeds, and shard 0 is kept.
    first_shard = shard_samples(out, 0)
    record["status"] = "incomplete"
    grid["density"] = [1.0] * len(grid["times"])
    (out / "record.json").write_text(json.dumps(record))
    (out / "shards" / "shard-000001.pt").unlink()
    (out / "samples.npz").unlink()
    sample_in_process(digits_checkpoint, out, *common, "--keep-shards")  # in this process: what it reads back
    assert json.loads((out / "record.json").read_text())["settings"]["grid"]["density"] == grid["density"]
    torch.testing.assert_close(shard_samples(out, 0), first_shard, atol=0, rtol=0)
    uniform = tmp_path / "uniform"
    sample_in_process(
        digits_checkpoint, uniform, "--sampler", "ode-heun-4", "--path", "trig", "--seeds", "3-5", "--keep-shards"
    )
    # The fitted grid's inverse cumulative of a flat density on a 4097-point mesh is the uniform grid to
    # float64 rounding; the samples are float32, so a few ulps of the pixel scale.
    torch.testing.assert_close(shard_samples(out, 1), shard_samples(uniform, 0), atol=1e-5, rtol=0)

    # evaluate --sweep compares presets (method and grid) along a converted path.
    sweep = tmp_path / "sweep"
    completed = run_command(
        ["evaluate", "--ckpt", str(digits_checkpoint), "--sweep", "--num-samples", "16", "--extractor", "digits"]
        + ["--sweep-samplers", "ode-euler-uniform-2,ode-dpm++2m-logsnr-2", "--path", "trig"]
        + ["--cache-dir", str(tmp_path / "cache"), "--out", str(sweep), "--accelerator", "cpu"],
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(sweep / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["sampler"] for row in rows] == ["ode-euler-uniform-2", "ode-dpm++2m-logsnr-2"]
    assert [row["family"] for row in rows] == ["ode-euler-uniform", "ode-dpm++2m-logsnr"]
    assert [float(row["nfe"]) for row in rows] == [2.0, 2.0]  # one call per step for both
    assert all(math.isfinite(float(row["fid"])) for row in rows)
    assert completed.stdout.strip().splitlines()[-1].startswith("best: ")


@pytest.mark.timeout(600)
def test_search_writes_rewards_and_does_not_depend_on_processes(digits_checkpoint, tmp_path, capsys) -> None:
    common = ["--sampler", "sde-euler-sigma-4", "--search", "smc", "--reward", "digits-class:3", "--budget", "15"]
    common += ["--search-temperature", "2", "--num-samples", "4", "--shard-size", "2", "--keep-shards"]
    one, two = tmp_path / "one", tmp_path / "two"
    # Shards of 2 seeds, one batch each on either count of processes: the same kernels, the same bytes.
    lines = sample(digits_checkpoint, one, *common)
    assert lines[-1] == f"4 samples, 15.0 NFE per sample -> {one}"  # 3 particles of 4 steps + 1 evaluation
    sample(digits_checkpoint, two, *common, "--devices", "2", "--accelerator", "cpu")
    assert (two / "samples.npz").read_bytes() == (one / "samples.npz").read_bytes()
    assert (two / "rewards.csv").read_text() == (one / "rewards.csv").read_text()
    record = json.loads((one / "record.json").read_text())
    assert record["settings"]["search"] == {
        "method": "smc",
        "reward": "digits-class:3",
        "budget": 15,
        "temperature": 2.0,
        "steps": 4,
        "diffusion": "sigma",
        "scale": 1.0,
        "grid": "uniform",
    }
    with open(one / "rewards.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["seed"]) for row in rows] == [0, 1, 2, 3]
    rewards = torch.tensor([float(row["reward"]) for row in rows], dtype=torch.float64)
    assert math.isclose(record["search"]["mean_reward"], float(rewards.mean()), rel_tol=1e-12)
    # Each recorded reward is the reward of the sample written (float32 samples; float32 classifier).
    written = torch.cat([shard_samples(one, 0), shard_samples(one, 1)])
    torch.testing.assert_close(DigitsClassReward(3)(written), rewards, atol=1e-5, rtol=0)

    # A module:factory reward, in this process: best-of-n keeps the brightest of its 3 paths per seed.
    factory = f"{__name__}:brightness_reward"
    best = tmp_path / "best"
    arguments = ["sample", "--ckpt", str(digits_checkpoint), "--out", str(best), "--quiet", "--num-samples", "2"]
    arguments += ["--sampler", "ode-euler-4", "--search", "best-of-n", "--reward", factory, "--budget", "15"]
    assert main([*arguments, "--keep-shards"]) == 0, capsys.readouterr().err
    chosen = shard_samples(best, 0)
    with open(best / "rewards.csv") as file:
        best_rewards = [float(row["reward"]) for row in csv.DictReader(file)]
    torch.testing.assert_close(chosen.flatten(1).mean(1).double(), torch.tensor(best_rewards, dtype=torch.float64))
    # Branches 0, 1, 2 of a seed include the single branch 0 of a budget of one path (5): never worse.
    single = tmp_path / "single"
    assert main([*arguments[:4], str(single), *arguments[5:-1], "5"]) == 0, capsys.readouterr().err
    with open(single / "rewards.csv") as file:
        single_rewards = [float(row["reward"]) for row in csv.DictReader(file)]
    # (up to float32 rounding: the same path computed in a batch of 6 rows rather than 2)
    assert all(mine >= theirs - 1e-5 for mine, theirs in zip(best_rewards, single_rewards, strict=True)), (
        best_rewards,
        single_rewards,
    )


@pytest.mark.slow  # about 40 s of CPU with the in-painting checkpoint's fit
@pytest.mark.timeout(600)
def test_samples_per_input_writes_every_draw_and_the_posterior_mean(inpainting_checkpoint, tmp_path) -> None:
    from si_lightning.commands.outputs import npz_bytes
    from tests.commands.test_sample_inputs import held_out_digits

    digits = held_out_digits(4)
    inputs = tmp_path / "digits.npz"
    inputs.write_bytes(npz_bytes({"arr_0": digits.permute(0, 2, 3, 1).numpy()}))
    common = ["--inputs", str(inputs), "--sampler", "ode-euler-4", "--samples-per-input", "3", "--shard-size", "2"]
    one, two = tmp_path / "one", tmp_path / "two"
    lines = sample(inpainting_checkpoint, one, *common)
    assert lines[-1] == f"4 samples, 12.0 NFE per sample -> {one}"  # 3 draws of 4 Euler steps per input
    sample(inpainting_checkpoint, two, *common, "--devices", "2", "--accelerator", "cpu")
    assert (two / "samples.npz").read_bytes() == (one / "samples.npz").read_bytes()
    for folder, names in {
        "images": ["000000.png"],
        "draws": ["000000-1.png", "000000-2.png"],
        "mean": ["000000.png"],
        "std": ["000000.png"],
    }.items():
        assert sorted(path.name for path in (one / folder / "000000").glob("000000*.png")) == names, folder
    record = json.loads((one / "record.json").read_text())
    assert record["settings"]["samples_per_input"] == 3 and record["posterior"]["samples_per_input"] == 3

    with np.load(one / "samples.npz") as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    with np.load(one / "inputs.npz") as loaded:
        keep = loaded["keep"].astype(bool)  # (4, 8, 8): the mask of each input's seed
    draws = arrays["draws"][..., 0].astype(np.float64)  # (4, 3, 8, 8) uint8 levels
    assert arrays["draws"].shape == (4, 3, 8, 8, 1) and arrays["std"].dtype == np.float32
    np.testing.assert_array_equal(arrays["draws"][:, 0], arrays["arr_0"])  # draw 0 is the plain sample
    # One mask for the K draws: every draw equals the input on its kept pixels, so the spread is exactly 0 there.
    truth = digits[:, 0].numpy()
    for draw in range(3):
        np.testing.assert_array_equal(draws[:, draw][keep], truth[keep])
    assert np.all(arrays["std"][..., 0][keep] == 0)
    # The draws differ only on hidden pixels (the coupling noise of (seed, draw) fills them anew).
    assert np.all(arrays["std"][..., 0][~keep] > 0)
    # mean and std of the float draws against those of the written uint8 draws: quantising moves each
    # draw by at most half a level (1 / 255 in [-1, 1]), so the mean by that much and the std by at most
    # sqrt(K / (K - 1)) of it, plus the mean's own rounding of half a level.
    # Only where no draw was clipped to [-1, 1] (levels 1 .. 254), where quantising is the only difference.
    inside = ((draws > 0) & (draws < 255)).all(1)
    assert inside.sum() > 20
    levels = draws / 127.5 - 1
    mean_image = arrays["mean"][..., 0] / 127.5 - 1
    assert np.abs(mean_image - levels.mean(1))[inside].max() <= 2 / 255 + 1e-9
    spread = np.abs(arrays["std"][..., 0] - levels.std(1, ddof=1))
    assert spread[inside].max() <= math.sqrt(1.5) / 255 + 1e-6
