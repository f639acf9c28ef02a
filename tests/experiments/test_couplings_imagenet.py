"""The couplings-imagenet experiment's smoke variant: fit, prepare the inputs, sample --inputs, evaluate."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from si_lightning.couplings import SuperResolution
from si_lightning.data.base import to_model_input
from si_lightning.metrics import quantize_to_uint8
from tests.experiments.test_smoke import EXPERIMENTS, run

FOLDER = EXPERIMENTS / "couplings-imagenet"
HELD_OUT = 6


def write_image_folder(root: Path, per_class: int = 12, seed: int = 0) -> None:
    """Two class folders of smooth 20x24 RGB pictures (a colour ramp plus a blob), as an ImageNet folder holds."""
    generator = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:20, 0:24]
    for label in ("class-a", "class-b"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            centre, colour = generator.uniform(4, 18, size=2), generator.uniform(0, 255, size=3)
            blob = np.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / 20.0)[..., None]
            ramp = (columns / 23.0)[..., None] * generator.uniform(0, 120, size=3)
            image = np.clip(ramp + blob * colour, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / label / f"{index:03d}.png")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("task", ["superres", "inpainting"])
def test_couplings_imagenet_smoke(tmp_path, task) -> None:
    write_image_folder(tmp_path / "images")
    inputs = tmp_path / "held-out"
    run(
        [sys.executable, str(FOLDER / "prepare_inputs.py"), "--images", str(tmp_path / "images"), "--size", "16"]
        + ["--out", str(inputs), "--count", str(HELD_OUT)],
        120,
    )
    out = tmp_path / "runs"
    run(
        [str(FOLDER / "run.sh"), "-c", str(FOLDER / "smoke.yaml"), "--data.init_args.root", str(tmp_path / "images")],
        500,
        TASK=task,
        OUT=str(out),
        INPUTS=str(inputs),
        SAMPLER="ode-euler-2",
        BATCH="4",
        EXTRA_EVALUATE="--extractor digits",
    )
    # fit ran the restoration evaluation (PSNR of 4 held-out images through the coupling).
    metrics = (out / f"imagenet256-{task}" / "version_0" / "evaluation" / "metrics.jsonl").read_text()
    assert "ode-euler-nfe2" in metrics

    samples = out / "samples-ode-euler-2"
    record = json.loads((samples / "record.json").read_text())
    assert record["status"] == "complete" and record["num_samples"] == HELD_OUT
    assert record["settings"]["inputs"]["kind"] == "clean"
    with np.load(samples / "samples.npz") as content:
        restored = content["arr_0"]
    with np.load(samples / "inputs.npz") as content:
        conditions = {name: content[name] for name in content.files}
    assert restored.shape == (HELD_OUT, 16, 16, 3) and restored.dtype == np.uint8
    truth = np.stack([np.asarray(Image.open(inputs / f"{index:06d}.png")) for index in range(HELD_OUT)])
    if task == "superres":  # the condition is the 4x block mean of each prepared input
        low = SuperResolution(factor=4).downsample(to_model_input(torch.from_numpy(truth).permute(0, 3, 1, 2)))
        np.testing.assert_array_equal(conditions["arr_0"], quantize_to_uint8(low).permute(0, 2, 3, 1).numpy())
    else:  # every known pixel of a restoration is the input's
        keep = conditions["keep"].astype(bool)
        assert 0 < keep.mean() < 1
        np.testing.assert_array_equal(restored[keep], truth[keep])

    values = json.loads((out / "evaluation-ode-euler-2" / "evaluation.json").read_text())["values"]
    assert math.isfinite(values["fid"]) and values["fid"] > 0
