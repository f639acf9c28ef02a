"""The SiT latent pre-computation: sharded over ranks, resumable, with the flip, on a tiny stand-in autoencoder."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.experiments.test_smoke import EXPERIMENTS, run

SCRIPT = EXPERIMENTS / "sit-imagenet256" / "precompute_latents.py"


class TinyAutoencoder(torch.nn.Module):
    """A fixed linear stand-in autoencoder: 2x2 average pooling then a seeded 1x1 convolution to 4 channels;
    decode: a seeded 1x1 convolution back to 3 channels, then a nearest 2x upsampling (8 x 8 -> 4 x 4 -> 8 x 8)."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("weight", torch.randn(4, 3, 1, 1, generator=generator))
        self.register_buffer("decoder_weight", torch.randn(3, 4, 1, 1, generator=generator) / 2)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(images, 2), self.weight)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = torch.nn.functional.conv2d(latents, self.decoder_weight)
        return torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")


def write_image_folder(root, per_class: int = 4) -> None:
    generator = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = generator.integers(0, 256, size=(12, 10 + index, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")


def precompute(data, out, rank: int, world_size: int) -> None:
    arguments = [sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), "--image-size", "8"]
    arguments += [
        "--shard-size",
        "3",
        "--batch-size",
        "2",
        "--encoder",
        "tests.experiments.test_sit_latents:TinyAutoencoder",
    ]
    run(arguments, 300, RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0")


@pytest.mark.timeout(600)
def test_latents_are_sharded_resumable_and_flipped(tmp_path) -> None:
    write_image_folder(tmp_path / "images")
    out = tmp_path / "latents"
    precompute(tmp_path / "images", out, rank=0, world_size=2)
    assert sorted(path.name for path in out.glob("shard-*.pt")) == ["shard-000000.pt", "shard-000002.pt"]
    precompute(tmp_path / "images", out, rank=1, world_size=2)
    shards = sorted(out.glob("shard-*.pt"))
    assert [path.name for path in shards] == [f"shard-{index:06d}.pt" for index in range(3)]

    # Resume: a lost shard is rewritten identically, the others are left alone.
    before = {path.name: (path.read_bytes(), os.stat(path).st_mtime_ns) for path in shards}
    (out / "shard-000001.pt").unlink()
    precompute(tmp_path / "images", out, rank=0, world_size=1)
    for path in sorted(out.glob("shard-*.pt")):
        content, modified = before[path.name]
        if path.name != "shard-000001.pt":
            assert os.stat(path).st_mtime_ns == modified
    contents = [torch.load(path, weights_only=True) for path in sorted(out.glob("shard-*.pt"))]
    restored = torch.load(out / "shard-000001.pt", weights_only=True)
    reference = torch.load(__import__("io").BytesIO(before["shard-000001.pt"][0]), weights_only=True)
    torch.testing.assert_close(restored["latents"], reference["latents"], rtol=0, atol=0)

    labels = torch.cat([content["labels"] for content in contents])
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    latents = torch.cat([content["latents"] for content in contents])
    flipped = torch.cat([content["flipped"] for content in contents])
    assert latents.shape == (8, 4, 4, 4)
    # The encoder is equivariant to a mirror: the flipped latent is the mirrored latent, exactly.
    torch.testing.assert_close(flipped, latents.flip(-1), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(flipped, latents)
    files = [name for content in contents for name in content["files"]]
    assert files[0] == os.path.join("cat", "0.png") and files[-1] == os.path.join("dog", "3.png")
