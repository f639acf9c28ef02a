"""The shipped residual-bridge configs (configs/experiments/digits-rdbm-*.yaml) through the real executable.

Each run fits a few steps and must exit 0 with Lightning's max_steps line last, leave last.ckpt and its
end-of-fit restoration metrics (finite); ``sample --inputs`` then restores clean digits with that checkpoint,
and for the residual-modulated bridge every pixel the degradation left untouched comes back exactly as given.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from si_lightning.callbacks.generation import coupled_input
from si_lightning.cli import build_cli
from si_lightning.couplings import Rain
from si_lightning.data import DigitsDataModule
from si_lightning.data.base import to_model_input
from si_lightning.metrics import quantize_to_uint8
from tests.integration.executable import EXECUTABLE, REPOSITORY, last_line, run

STEPS = 3
SMOKE_SAMPLES = 12
FIT_LAST_LINE = f"`Trainer.fit` stopped: `max_steps={STEPS}` reached."


def smoke_overlay(config: Path, directory: Path) -> Path:
    """The config's callbacks with the restoration evaluation cut to SMOKE_SAMPLES images and 2 draws."""
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    for callback in callbacks:
        arguments = callback.get("init_args") or {}
        if "num_samples" in arguments:
            arguments.update(num_samples=SMOKE_SAMPLES, samples_per_image=2, rows=4)
    overlay = directory / f"smoke-{config.name}"
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}, sort_keys=False))
    return overlay


def fit(configs: list[str], directory: Path, *extra: str) -> Path:
    """last.ckpt of STEPS steps of the configs (paths from the repository; the first with its smoke overlay) and
    ``extra`` arguments; asserts the run's contract."""
    arguments = [str(EXECUTABLE), "fit"]
    for name in configs:
        arguments += ["-c", str(REPOSITORY / name)]
    arguments += ["-c", str(smoke_overlay(REPOSITORY / configs[0], directory)), *extra]
    arguments += ["--trainer.max_steps", str(STEPS), "--trainer.enable_progress_bar", "false"]
    arguments += ["--trainer.default_root_dir", str(directory), "--trainer.logger.init_args.save_dir", str(directory)]
    completed = run(arguments, directory, timeout=240)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert last_line(completed.stderr) == FIT_LAST_LINE, completed.stderr[-2000:]
    (checkpoint,) = directory.glob("*/version_0/checkpoints/last.ckpt")
    (metrics_file,) = directory.glob("*/version_0/evaluation/metrics.jsonl")
    metrics = json.loads(metrics_file.read_text().splitlines()[-1])["metrics"]
    assert (
        f"psnr/ode-heun-cosine-nfe39/n{SMOKE_SAMPLES}" in metrics
        or f"psnr-hidden/ode-heun-cosine-nfe39/n{SMOKE_SAMPLES}" in metrics
    )
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    return checkpoint


def held_out_digits(count: int) -> torch.Tensor:
    datamodule = DigitsDataModule(image_size=8, batch_size=4)
    datamodule.setup("fit")
    return quantize_to_uint8(datamodule.real_samples(count, torch.Generator().manual_seed(0), split="val"))


@pytest.mark.timeout(420)  # about 50 s on one core: a 3-step fit with its evaluation, and one sample run
def test_rdbm_deraining_fits_and_restores_inputs_keeping_untouched_pixels_exactly(tmp_path):
    checkpoint = fit(["configs/experiments/digits-rdbm-deraining.yaml"], tmp_path)
    digits = held_out_digits(6)
    folder = tmp_path / "clean"
    folder.mkdir()
    for index, image in enumerate(digits[:, 0].numpy()):
        Image.fromarray(image).save(folder / f"digit-{index}.png")
    out = tmp_path / "restored"
    arguments = ["sample", "--ckpt", str(checkpoint), "--inputs", str(folder), "--out", str(out), "--quiet"]
    sampling = ["--sampler", "ode-heun-10", "--samples-per-input", "2"]
    completed = run([str(EXECUTABLE), *arguments, *sampling], tmp_path, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert last_line(completed.stdout) == f"6 samples, 38.0 NFE per sample -> {out}"  # 2 draws of 19
    with np.load(out / "samples.npz") as content:
        restored = torch.from_numpy(content["arr_0"]).permute(0, 3, 1, 2)
        draws = torch.from_numpy(content["draws"]).permute(0, 1, 4, 2, 3)  # (6, 2, 1, 8, 8) uint8
    assert torch.equal(draws[:, 0], restored)
    # Input i is degraded with seed i's streaks, as the command does; off the streaks the sample is the input.
    streaks = torch.cat(
        [coupled_input(Rain(), to_model_input(digits[i : i + 1]).float(), None, i).cond.keep for i in range(6)]
    )
    kept = streaks.bool()
    assert 0 < int(kept.sum()) < kept.numel()
    assert torch.equal(restored[kept], digits[kept])
    # Draw 1 starts from the bridge's spread x0 + gamma(t0) m z, not from the point x0 again: it differs
    # from draw 0 on the streaks (m = 1) and keeps every untouched pixel (m = 0) exactly.
    assert torch.equal(draws[:, 1][kept], digits[kept])
    assert bool((draws[:, 1][~kept] != draws[:, 0][~kept]).any())


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("task", "bridge"),
    [
        ("inpainting", "rdbm"),
        ("superres", "rdbm"),
        ("denoising", "rdbm"),
        ("deraining", "bbdm"),
        ("superres", "goub"),
        ("inpainting", "plain"),
        ("superres", "plain"),
    ],
)
def test_every_rdbm_config_and_the_bridge_switch_build(task, bridge, tmp_path, monkeypatch):
    """bbdm and goub by the one flag, plain by its overlay, through the real LightningCLI parser in this
    process (the executable's path is the de-raining test's: its start-up is the slow part)."""
    configs = [f"configs/experiments/digits-rdbm-{task}.yaml"]
    extra = []
    if bridge == "plain":
        configs.append("experiments/restoration-bridges/plain.yaml")
    elif bridge != "rdbm":
        extra = ["--model.interpolant.init_args.name", bridge]
    monkeypatch.chdir(tmp_path)
    arguments = [argument for name in configs for argument in ("-c", str(REPOSITORY / name))]
    cli = build_cli([*arguments, *extra, "--trainer.logger", "false"], run=False)
    assert cli.model.interpolant.bridge_name == bridge
    cli.datamodule.setup("fit")
    assert cli.datamodule.coupling.sigma == (0.1 if bridge == "plain" else 0.0)
