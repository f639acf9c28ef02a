"""`si-lightning evaluate` through the real executable: torch-fidelity's FID and IS on the same files, the sweep."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from si_lightning.cli import main
from tests.commands.conftest import run_command
from tests.test_metrics_inception import write_random_inception_weights


def write_png_folder(directory, seed: int, count: int = 24, size: int = 16) -> None:
    """Smooth random RGB pictures (low-frequency noise upsampled), so features vary between images."""
    directory.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((count, 3, 4, 4), generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for index, picture in enumerate(pixels):
        Image.fromarray(picture).save(directory / f"{index:04d}.png")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fid_and_is_of_png_folders_match_torch_fidelity(tmp_path) -> None:
    import torch_fidelity

    torch.set_num_threads(1)  # two shared cores: more threads only spin
    weights = tmp_path / "inception.pth"
    write_random_inception_weights(weights)
    generated, reference = tmp_path / "generated", tmp_path / "reference"
    write_png_folder(generated, seed=1)
    write_png_folder(reference, seed=2)
    expected = torch_fidelity.calculate_metrics(
        input1=str(generated),
        input2=str(reference),
        fid=True,
        isc=True,
        isc_splits=10,
        feature_extractor_weights_path=str(weights),
        cuda=False,
        cache=False,
        verbose=False,
    )
    arguments = ["evaluate", "--samples", str(generated), "--reference", str(reference), "--metrics", "fid,is"]
    arguments += ["--inception-weights", str(weights), "--out", str(tmp_path / "out"), "--accelerator", "cpu"]
    completed = run_command(arguments, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    values = json.loads((tmp_path / "out" / "evaluation.json").read_text())["values"]
    assert math.isclose(values["fid"], expected["frechet_inception_distance"], rel_tol=1e-5)
    assert values["fid"] > 0
    assert "fid=" in completed.stdout.strip().splitlines()[-1]
    # IS over 10 splits with torch-fidelity's shuffling seed, on the unbiased logits of the same weights.
    assert math.isclose(values["is"], expected["inception_score_mean"], rel_tol=1e-5)
    assert math.isclose(values["is-std"], expected["inception_score_std"], rel_tol=1e-4, abs_tol=1e-9)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sweep_on_the_digits_checkpoint_writes_the_table_and_the_plot(digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "sweep"
    arguments = ["evaluate", "--ckpt", str(digits_checkpoint), "--sweep", "--num-samples", "64"]
    arguments += ["--extractor", "digits", "--ode-methods", "euler", "--ode-steps", "2,4"]
    arguments += ["--sde-diffusions", "sigma", "--sde-scales", "1.0", "--sde-steps", "4"]
    arguments += ["--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--accelerator", "cpu"]
    completed = run_command(arguments, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(out / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["sampler"] for row in rows] == ["ode-euler-2", "ode-euler-4", "sde-sigma-1-4"]
    # Euler: one call per step; Euler-Maruyama: 4 steps plus the mean last step.
    assert [float(row["nfe"]) for row in rows] == [2.0, 4.0, 5.0]
    assert all(math.isfinite(float(row["fid"])) and float(row["fid"]) > 0 for row in rows)
    with Image.open(out / "sweep.png") as picture:
        assert picture.size[0] > 300 and picture.size[1] > 200
    # The sweep's FID of one point is the FID of `sample` + `evaluate --samples` with that sampler and seeds.
    samples = tmp_path / "samples"
    completed = run_command(
        ["sample", "--ckpt", str(digits_checkpoint), "--sampler", "ode-euler-4", "--num-samples", "64", "--quiet"]
        + ["--out", str(samples), "--no-png"],
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    completed = run_command(
        ["evaluate", "--samples", str(samples), "--data-config", str(digits_checkpoint.parent.parent / "config.yaml")]
        + ["--extractor", "digits", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "one")],
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    fid = json.loads((tmp_path / "one" / "evaluation.json").read_text())["values"]["fid"]
    assert math.isclose(fid, float(rows[1]["fid"]), rel_tol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_evaluate_bad_input_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    images = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=images)
    cases = {
        "--metrics": ["--samples", str(tmp_path / "samples.npz"), "--metrics", "fid,beauty"],
        "--ckpt": ["--ckpt", str(tmp_path / "missing.ckpt")],
        "--reference": ["--samples", str(tmp_path / "samples.npz"), "--extractor", "digits"],
    }
    # The first through the executable; the others through the same entry point in this process (the
    # executable's start-up is the slow part; the command fuzz runs more of them through the executable).
    for index, (key, arguments) in enumerate(cases.items()):
        command = ["evaluate", *arguments, "--out", str(tmp_path / "out")]
        if index == 0:
            completed = run_command(command, timeout=120)
            status, stderr = completed.returncode, completed.stderr
        else:
            status, stderr = main(command), capsys.readouterr().err
        lines = stderr.strip().splitlines()
        assert status == 2, (key, stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"error: {key} = "), (key, stderr)
