"""The digits multimarginal config through the real executable: fit, generate, translate, refuse, evaluate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from si_lightning.cli import build_cli
from si_lightning.errors import ConfigurationError
from tests.integration.executable import EXECUTABLE, REPOSITORY, environment, last_line, run

CONFIG = REPOSITORY / "configs" / "experiments" / "digits-multimarginal.yaml"
EXPERIMENT = REPOSITORY / "experiments" / "multimarginal"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_digits_multimarginal_smoke_fit_sample_translate_and_table(tmp_path):
    root = tmp_path / "runs"
    fit = run(
        [
            str(EXECUTABLE), "fit", "-c", str(CONFIG), "-c", str(EXPERIMENT / "smoke.yaml"),
            "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root), "--trainer.logger.init_args.name", "multimarginal",
            "--trainer.logger.init_args.version", "seed0",
        ],
        tmp_path,
        240,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "max_steps=4" in last_line(fit.stderr), fit.stderr[-2000:]
    checkpoint = root / "multimarginal" / "seed0" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    # The shipped config trains on the label-shared coupling (the run's saved config records it).
    assert "coupling: label-shared" in (root / "multimarginal" / "seed0" / "config.yaml").read_text()

    generated = tmp_path / "rotated"
    sample = run(
        [
            str(EXECUTABLE), "sample", "--ckpt", str(checkpoint), "--to-marginal", "2", "--num-samples", "4",
            "--out", str(generated), "--quiet",
        ],
        tmp_path,
        120,
    )  # fmt: skip
    assert sample.returncode == 0, sample.stderr[-3000:]
    # Without --sampler a multimarginal checkpoint gets Heun 50 on the cosine grid (99 NFE), not the uniform grid.
    assert last_line(sample.stdout) == f"4 samples, marginal 0 -> 2, 99 NFE per sample -> {generated}"
    recorded = json.loads((generated / "record.json").read_text())["sampler"]
    assert recorded["init_args"] == {"method": "heun", "steps": 50, "grid": "cosine"}
    with np.load(generated / "samples.npz") as content:
        assert content["arr_0"].shape == (4, 8, 8, 1) and content["arr_0"].dtype == np.uint8
    assert len(list((generated / "images").rglob("*.png"))) == 4

    # --via k: the two edges through vertex k (here the upright digits between rotated and inverted);
    # --path through-base is the same route via vertex 0 (tests/commands/test_multimarginal_routes.py).
    translated = tmp_path / "inverted"
    translation = run(
        [
            str(EXECUTABLE), "sample", "--ckpt", str(checkpoint), "--inputs", str(generated), "--from-marginal", "2",
            "--to-marginal", "3", "--via", "1", "--sampler", "ode-euler-2", "--out", str(translated),
        ],
        tmp_path,
        120,
    )  # fmt: skip
    assert translation.returncode == 0, translation.stderr[-3000:]
    assert last_line(translation.stdout) == f"4 samples, marginal 2 -> 1 -> 3, 4 NFE per sample -> {translated}"
    assert json.loads((translated / "record.json").read_text())["route"] == [2, 1, 3]

    refused = run(
        [str(EXECUTABLE), "sample", "--ckpt", str(checkpoint), "--to-marginal", "9", "--out", str(tmp_path / "x")],
        tmp_path,
        120,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: --to-marginal = 9: a marginal of this model, 0..3"
    assert not (tmp_path / "x").exists()

    table = tmp_path / "results.json"
    evaluation = subprocess.run(
        [
            sys.executable, str(EXPERIMENT / "evaluate.py"), "--runs", str(root), "--seed", "0", "--steps", "1",
            "--fid-samples", "20", "--paths", "edge,through-base,through-interior", "--kappa", "0.3,0.9",
            "--out", str(table),
        ],
        capture_output=True, text=True, timeout=240, env=environment(), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    results = json.loads(table.read_text())
    row = results["models"]["multimarginal, edge"]
    expected = {f"class kept {i}->{j}" for i in (1, 2, 3) for j in (1, 2, 3) if i != j}
    expected |= {f"cycle RMSE {i}->{j}->{i}" for i in (1, 2, 3) for j in (1, 2, 3) if i != j}
    expected |= {"FID 1", "FID 2", "FID 3", "FID floor (real vs real)"}
    assert set(row) == expected
    assert all(0 <= row[key] <= 1 for key in row if key.startswith("class kept"))
    # The interior path: one row per bend, translations only (no FID: generation is the edge's).
    bends = {"multimarginal, through-interior, kappa 0.3", "multimarginal, through-interior, kappa 0.9"}
    assert set(results["models"]) == {"multimarginal, edge", "multimarginal, through-base"} | bends
    translations = {key for key in expected if not key.startswith("FID")}
    assert all(set(results["models"][name]) == translations for name in bends)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        (
            ["--model.backbone.init_args.out_channels", "5"],
            "model.backbone.init_args.out_channels",
            "needs a backbone with out_channels = 4 (4 x 1 data channels), got out_channels = 5",
        ),
        (["--model.interpolant.init_args.gamma", "browian"], "model.interpolant.init_args.gamma", "unknown simplex"),
        (["--data.init_args.marginals", "[identity, gaussian]"], "data.init_args.marginals", "may only be the first"),
        (
            ["--data.init_args.coupling", "paired"],
            "data.init_args.coupling",
            "coupling must be one of independent, label-shared, got 'paired'",
        ),
    ],
)
def test_bad_multimarginal_settings_name_their_key(override, key, message, tmp_path, monkeypatch):
    """The command line's checks (exit status 2, one line) see the key; here through the same parser in-process."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as raised:
        build_cli(["-c", str(CONFIG), *override, "--trainer.logger", "false"], run=False)
    assert raised.value.key == key
    assert message in str(raised.value)
