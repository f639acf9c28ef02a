"""`si-lightning sample --inputs` through the real executable: super-resolution and in-painting of digits."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from si_lightning.callbacks.generation import HeldOutData, coupling_generators
from si_lightning.commands import evaluate as evaluate_command
from si_lightning.commands import sample as sample_command
from si_lightning.commands.checkpoints import load_model
from si_lightning.commands.outputs import npz_bytes
from si_lightning.couplings import Inpainting, SuperResolution
from si_lightning.data import DigitsDataModule
from si_lightning.data.base import to_model_input
from si_lightning.metrics import quantize_to_uint8
from si_lightning.sampling import ODESampler
from tests.commands.conftest import run_command

COUNT = 12
SAMPLER = ["--sampler", "ode-heun-10"]
# The couplings of configs/experiments/digits-superres.yaml and digits-inpainting.yaml.
SUPER_RESOLUTION = SuperResolution(factor=2, sigma=0.1, mode="bilinear")
INPAINTING = Inpainting(tiles=64, hide_probability=0.3, sigma=1.0)


def held_out_digits(count: int = COUNT) -> torch.Tensor:
    """uint8 (count, 1, 8, 8): validation digits, as a user's folder of images would hold them."""
    datamodule = DigitsDataModule(image_size=8, batch_size=4)
    datamodule.setup("fit")
    return quantize_to_uint8(datamodule.real_samples(count, torch.Generator().manual_seed(0), split="val"))


def write_folder(folder: Path, images: torch.Tensor) -> Path:
    """One PNG per uint8 (C, H, W) image, named so that the sorted order is the tensor's."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"digit-{index:03d}.png")
    return folder


def sample(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    arguments = ["sample", "--ckpt", str(checkpoint), "--inputs", str(inputs), "--out", str(out), "--quiet"]
    completed = run_command([*arguments, *SAMPLER, *extra], timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def sample_in_process(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> None:
    """``sample`` through the entry point the executable calls, in this process (no start-up to pay)."""
    arguments = ["--ckpt", str(checkpoint), "--inputs", str(inputs), "--out", str(out), "--quiet"]
    assert sample_command.main([*arguments, *SAMPLER, *extra]) == 0


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as content:
        return {name: content[name] for name in content.files}


def float_samples(out: Path) -> torch.Tensor:
    shards = sorted((out / "shards").glob("shard-*.pt"))
    return torch.cat([torch.load(path, weights_only=True)["samples"] for path in shards])


def assert_same_up_to_batched_kernels(out: Path, reference: Path) -> None:
    """Float samples to 1e-5 and uint8 pixels within one level on at most 0.1% (as the unconditional tests)."""
    torch.testing.assert_close(float_samples(out), float_samples(reference), atol=1e-5, rtol=0)
    difference = np.abs(npz(out / "samples.npz")["arr_0"].astype(int) - npz(reference / "samples.npz")["arr_0"])
    assert difference.max() <= 1 and (difference > 0).mean() <= 1e-3


@pytest.mark.timeout(600)  # about 25 s: the fit of the fixture and one run of the executable
def test_super_resolution_restores_each_input_as_the_training_evaluation_does(superres_checkpoint, tmp_path):
    digits = held_out_digits()
    inputs = write_folder(tmp_path / "clean", digits)
    out = tmp_path / "out"
    completed = sample(superres_checkpoint, inputs, out, "--batch-size", "5", "--shard-size", "8", "--keep-shards")
    assert completed.stdout.strip().splitlines()[-1] == f"{COUNT} samples, 19.0 NFE per sample -> {out}"
    names = [f"{seed:06d}.png" for seed in range(COUNT)]
    for folder in ("images", "inputs"):
        assert sorted(path.name for path in (out / folder / "000000").glob("*.png")) == names

    # inputs/ and inputs.npz hold D(x1), the coupling's 2x2 block means of input i, quantised: (N, 4, 4, 1).
    low = quantize_to_uint8(SUPER_RESOLUTION.downsample(to_model_input(digits))).permute(0, 2, 3, 1).numpy()
    conditions = npz(out / "inputs.npz")
    assert list(conditions) == ["arr_0"] and conditions["arr_0"].shape == (COUNT, 4, 4, 1)
    np.testing.assert_array_equal(conditions["arr_0"], low)
    with Image.open(out / "inputs" / "000000" / "000007.png") as picture:
        np.testing.assert_array_equal(np.asarray(picture), low[7, ..., 0])

    # Sample i is the restoration of input i from seed i, as the RestorationCallback's engine makes it.
    module = load_model(superres_checkpoint)
    batch = HeldOutData(SUPER_RESOLUTION, to_model_input(digits), None).inputs(list(range(COUNT)), torch.device("cpu"))
    with torch.no_grad():
        expected = ODESampler(method="heun", steps=10).sample(module.fields(), batch.x0, batch.cond).x
    torch.testing.assert_close(float_samples(out), expected, atol=1e-5, rtol=0)

    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "complete" and record["inputs"]["path"] == str(inputs.resolve())
    assert record["settings"]["inputs"]["kind"] == "clean" and record["settings"]["inputs"]["count"] == COUNT
    assert len(record["settings"]["inputs"]["sha256"]) == 64


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_low_resolution_inputs_give_the_samples_of_their_block_constant_images(superres_checkpoint, tmp_path):
    """A 4x4 image given as D(x1) and its nearest 2x up-sampling given as x1 (whose D is that image) agree."""
    low = held_out_digits(8)[:, :, ::2, ::2].contiguous()  # uint8 (8, 1, 4, 4)
    blocks = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    sample(superres_checkpoint, write_folder(tmp_path / "low", low), tmp_path / "from-low", "--keep-shards")
    sample_in_process(
        superres_checkpoint, write_folder(tmp_path / "blocks", blocks), tmp_path / "from-blocks", "--keep-shards"
    )
    record = json.loads((tmp_path / "from-low" / "record.json").read_text())
    assert record["settings"]["inputs"]["kind"] == "low-resolution"
    # x0 = U(low) + sigma zeta with zeta from each seed: equal up to the rounding of the block mean.
    assert_same_up_to_batched_kernels(tmp_path / "from-low", tmp_path / "from-blocks")
    for name in ("inputs.npz", "samples.npz"):
        assert (tmp_path / "from-low" / name).is_file()
    np.testing.assert_array_equal(npz(tmp_path / "from-low" / "inputs.npz")["arr_0"], low.permute(0, 2, 3, 1).numpy())
    assert (tmp_path / "from-low" / "inputs.npz").read_bytes() == (tmp_path / "from-blocks" / "inputs.npz").read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_inpainting_keeps_every_known_pixel_of_its_input(inpainting_checkpoint, tmp_path):
    digits = held_out_digits()
    inputs = tmp_path / "digits.npz"
    inputs.write_bytes(npz_bytes({"arr_0": digits.permute(0, 2, 3, 1).numpy()}))  # ADM's layout
    seeds = [5, 3, *range(20, 30)]  # sample i restores input i with seed i of the list
    common = ["--seeds", "5,3,20-29", "--shard-size", "4"]
    out = tmp_path / "out"
    sample(inpainting_checkpoint, inputs, out, *common, "--batch-size", "3", "--keep-shards")

    # The mask of sample i is the coupling's mask drawn from seed i (as in training's evaluation).
    expected_keep = torch.cat(
        [
            INPAINTING.keep_mask(to_model_input(digits[:1]), coupling_generators(seed, torch.device("cpu"))[0])
            for seed in seeds
        ]
    )[:, 0].to(torch.uint8)
    conditions = npz(out / "inputs.npz")
    np.testing.assert_array_equal(conditions["keep"], expected_keep.numpy())
    keep = conditions["keep"].astype(bool)
    assert 0 < keep.mean() < 1
    truth = digits[:, 0].numpy()
    # inputs/ shows the kept pixels, hidden ones mid-grey (0 in [-1, 1] -> 128).
    np.testing.assert_array_equal(conditions["arr_0"][..., 0], np.where(keep, truth, 128))
    with Image.open(out / "inputs" / "000000" / "000003.png") as picture:
        np.testing.assert_array_equal(np.asarray(picture), conditions["arr_0"][1, ..., 0])

    # The velocity is zero on kept pixels: every sample equals its input there, bit for bit after quantising.
    samples = npz(out / "samples.npz")["arr_0"][..., 0]
    np.testing.assert_array_equal(samples[keep], truth[keep])
    floats = float_samples(out)[:, 0]
    torch.testing.assert_close(
        floats[torch.from_numpy(keep)], to_model_input(digits)[:, 0][torch.from_numpy(keep)], atol=0, rtol=0
    )
    assert (samples[~keep] != truth[~keep]).any()  # the hidden pixels were generated, not copied

    # The same seeds give the same bytes, whatever the batch size; a second process changes nothing either.
    again = tmp_path / "again"
    sample_in_process(inpainting_checkpoint, inputs, again, *common, "--batch-size", "12")
    for name in ("samples.npz", "inputs.npz"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert sorted(path.name for path in (again / "images" / "000000").glob("*.png")) == [
        f"{seed:06d}.png" for seed in sorted(seeds)
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_processes_and_a_resumed_run_give_the_samples_of_one(superres_checkpoint, tmp_path):
    inputs = write_folder(tmp_path / "clean", held_out_digits())
    common = ["--shard-size", "4", "--keep-shards"]
    reference = tmp_path / "one"
    sample(superres_checkpoint, inputs, reference, *common)
    two = tmp_path / "two"
    sample(superres_checkpoint, inputs, two, *common, "--devices", "2", "--accelerator", "cpu")
    assert json.loads((two / "record.json").read_text())["processes"] == 2
    assert_same_up_to_batched_kernels(two, reference)
    assert (two / "inputs.npz").read_bytes() == (reference / "inputs.npz").read_bytes()

    # What an interrupted run leaves: shards 0 and 1 done, shard 2 missing, nothing assembled.
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    for name in ("shards/shard-000002.pt", "shards/inputs-000002.pt", "samples.npz", "inputs.npz"):
        (resumed / name).unlink()
    record = json.loads((resumed / "record.json").read_text())
    (resumed / "record.json").write_text(json.dumps({"status": "incomplete", "settings": record["settings"]}))
    written = (resumed / "shards" / "shard-000000.pt").stat().st_mtime_ns
    sample(superres_checkpoint, inputs, resumed, *common)
    assert (resumed / "shards" / "shard-000000.pt").stat().st_mtime_ns == written  # skipped, not redone
    for name in ("samples.npz", "inputs.npz"):
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.slow  # launches of the executable (each imports torch and Lightning)
@pytest.mark.timeout(900)
def test_bad_inputs_are_one_line_and_exit_2(superres_checkpoint, digits_checkpoint, tmp_path, capsys):
    digits = held_out_digits(4)
    good = write_folder(tmp_path / "good", digits)
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong_size = write_folder(tmp_path / "six", quantize_to_uint8(torch.rand(3, 1, 6, 6) * 2 - 1))
    rgb = write_folder(tmp_path / "rgb", digits.repeat(1, 3, 1, 1))
    reordered = write_folder(tmp_path / "reordered", digits.flip(0))
    independent_config = tmp_path / "independent.yaml"
    independent_config.write_text("data:\n  class_path: si_lightning.data.DigitsDataModule\n  init_args: {}\n")
    taken = tmp_path / "taken"
    sample_in_process(superres_checkpoint, good, taken)  # the samples of other inputs
    out = ["--out", str(tmp_path / "o")]
    base = ["sample", "--ckpt", str(superres_checkpoint), *SAMPLER]
    through_the_executable = {"missing": ("--inputs", [*base, "--inputs", str(tmp_path / "nowhere"), *out])}
    for case, (key, arguments) in through_the_executable.items():
        completed = run_command(arguments, timeout=120)
        lines = completed.stderr.strip().splitlines()
        assert completed.returncode == 2, (case, completed.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"error: {key} = "), (case, completed.stderr)

    # The same entry point in this process (the executable's start-up is the slow part).
    in_process = {
        "unset": ("--inputs", [*base, "--num-samples", "4", *out]),
        "gaussian base": ("--inputs", ["sample", "--ckpt", str(digits_checkpoint), "--inputs", str(good), *out]),
        "empty": ("--inputs", [*base, "--inputs", str(empty), *out]),
        "size": ("--inputs", [*base, "--inputs", str(wrong_size), *out]),
        "channels": ("--inputs", [*base, "--inputs", str(rgb), *out]),
        "more samples": ("--num-samples", [*base, "--inputs", str(good), "--num-samples", "5", *out]),
        "more seeds": ("--seeds", [*base, "--inputs", str(good), "--seeds", "0-4", *out]),
        "sde": ("--sampler", [*base, "--inputs", str(good), "--sampler", "sde-euler-sbdm-10", *out]),
        "coupling": ("--data-config", [*base, "--inputs", str(good), "--data-config", str(independent_config), *out]),
        "other inputs": ("--out", [*base, "--inputs", str(reordered), "--out", str(taken)]),
    }
    for case, (key, arguments) in in_process.items():
        assert sample_command.main(arguments[1:]) == 2, case
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {key} = "), (case, lines)
    assert not (tmp_path / "o").exists()
    assert sample_command.main([*base[1:], "--inputs", str(wrong_size), *out]) == 2
    size_line = capsys.readouterr().err
    assert "8x8 with 1 channel (clean" in size_line and "4x4 with 1 channel (low-resolution" in size_line
    assert "got 6x6 with 1 channel" in size_line
    # evaluate cannot draw a restoration model's samples from seeds alone: it points at sample --inputs.
    arguments = ["--ckpt", str(superres_checkpoint), "--num-samples", "4", "--extractor", "digits", *out]
    assert evaluate_command.main(arguments) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --ckpt = ") and "sample --inputs" in lines[0]
