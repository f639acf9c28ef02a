"""The SiT experiment's smoke variant end to end on the CPU: latents -> fit -> sample (decoded) -> evaluate."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from si_lightning.commands import sample
from si_lightning.metrics import quantize_to_uint8
from tests.experiments.test_sit_latents import SCRIPT, TinyAutoencoder, write_image_folder
from tests.experiments.test_smoke import EXPERIMENTS, run

CONFIGS = EXPERIMENTS.parent / "configs"
FOLDER = EXPERIMENTS / "sit-imagenet256"
STAND_IN = "tests.experiments.test_sit_latents:TinyAutoencoder"
EXECUTABLE = Path(sys.executable).parent / "si-lightning"


def si_lightning(*arguments: str) -> str:
    """The real executable as a subprocess; its exit status must be 0; returns its last stdout line ('' if none)."""
    completed = run([str(EXECUTABLE), *arguments], 120)
    return (completed.stdout.strip().splitlines() or [""])[-1]


@pytest.mark.slow  # five executables start (about 8 s of imports each); about 50 s in all on one core
@pytest.mark.timeout(300)
def test_sit_smoke_trains_on_latents_and_samples_decoded_images(tmp_path, capsys) -> None:
    write_image_folder(tmp_path / "images", per_class=6)
    latents = tmp_path / "latents"
    run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path / "images"), "--out", str(latents)]
        + ["--image-size", "8", "--shard-size", "5", "--encoder", STAND_IN],
        120,
    )
    assert json.loads((latents / "index.json").read_text())["autoencoder"] == STAND_IN

    runs = tmp_path / "runs"
    configs = [CONFIGS / "trainer.yaml", CONFIGS / "backbone" / "dit-b2.yaml", FOLDER / "train.yaml"]
    configs += [FOLDER / "data.yaml", FOLDER / "smoke.yaml"]
    si_lightning(
        "fit",
        *[argument for config in configs for argument in ("-c", str(config))],
        "--data.init_args.root",
        str(latents),
        "--trainer.logger.init_args.save_dir",
        str(runs),
        "--trainer.logger.init_args.version",
        "0",
        "--trainer.default_root_dir",
        str(runs),
    )
    checkpoint = runs / "sit-imagenet256" / "version_0" / "checkpoints" / "last.ckpt"
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert content["global_step"] == 4
    recorded = content["datamodule_hyper_parameters"]
    assert (recorded["autoencoder"], recorded["autoencoder_scale"]) == (STAND_IN, 0.18215)

    # The latents themselves (--decoder none), then the decoded images (the recorded autoencoder).
    raw, decoded = tmp_path / "latent-samples", tmp_path / "samples"
    common = ["--ckpt", str(checkpoint), "--sampler", "ode-euler-2", "--seeds", "0-5", "--quiet"]
    assert si_lightning("sample", *common, "--decoder", "none", "--out", str(raw)).startswith("6 samples")
    last = si_lightning("sample", *common, "--keep-shards", "--out", str(decoded))
    assert last == f"6 samples, 2.0 NFE per sample -> {decoded}"
    with np.load(raw / "samples.npz") as file:
        generated = torch.from_numpy(file["arr_0"])
    assert generated.shape == (6, 4, 4, 4) and generated.dtype == torch.float32  # latents (C, h, w)
    expected = TinyAutoencoder().decode(generated)
    with np.load(decoded / "samples.npz") as file:
        images, labels = file["arr_0"], file["arr_1"]
    assert images.shape == (6, 8, 8, 3) and images.dtype == np.uint8  # the image shape, not the latent shape
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    shard = torch.load(decoded / "shards" / "shard-000000.pt", weights_only=True)
    torch.testing.assert_close(shard["samples"], expected, rtol=1e-6, atol=1e-6)  # the stand-in's decoding
    assert np.array_equal(images, quantize_to_uint8(expected).permute(0, 2, 3, 1).numpy())
    with Image.open(decoded / "images" / "000000" / "000005.png") as picture:
        assert picture.size == (8, 8) and np.array_equal(np.asarray(picture), images[5])
    record = json.loads((decoded / "record.json").read_text())
    assert record["status"] == "complete" and record["decoder"] == {"decoder": STAND_IN, "scale": 0.18215}

    # A latent checkpoint that records no autoencoder: refused in one line unless --decoder is given.
    del content["datamodule_hyper_parameters"]
    torch.save(content, tmp_path / "unrecorded.ckpt")
    arguments = ["--ckpt", str(tmp_path / "unrecorded.ckpt"), "--seeds", "0", "--out", str(tmp_path / "refused")]
    assert sample.main(arguments) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("error: --decoder = None: the autoencoder that decodes this model's latents (4, 4, 4) into images")
    )
    assert not (tmp_path / "refused").exists()

    reference = tmp_path / "reference"
    reference.mkdir()
    for index in range(6):
        pixels = np.random.default_rng(index).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(reference / f"{index}.png")
    evaluation = tmp_path / "evaluation"
    last = si_lightning(
        "evaluate",
        "--samples",
        str(decoded),
        "--reference",
        str(reference),
        "--metrics",
        "fid",
        "--extractor",
        "digits",
        "--out",
        str(evaluation),
    )
    values = json.loads((evaluation / "evaluation.json").read_text())["values"]
    assert math.isfinite(values["fid"]) and values["fid"] > 0
    assert last.startswith(f"fid={values['fid']:.6g} (6 samples, extractor digits")
