"""Encode an ImageNet-style folder into autoencoder latents once, with the horizontal flip, sharded and resumable.

    python experiments/sit-imagenet256/precompute_latents.py --data /data/imagenet/train \
        --vae /models/sd-vae-ft-ema --out /data/imagenet256-latents [--shard-size 1000]
    torchrun --nproc-per-node 8 experiments/sit-imagenet256/precompute_latents.py ...   # shards split over ranks

Images: ``data/<class folder>/<image>``, classes in sorted folder order (the labels of torchvision's
ImageFolder), files in sorted order; each is centre-cropped ADM-style (the shorter side resized
to the image size, then a centre crop) and scaled to [-1, 1]. Each image is encoded twice, as is
and mirrored, so training can flip without decoding: shard k holds images [k S, (k + 1) S) as
``{"latents": (n, C, h, w) float32, "flipped": (n, C, h, w), "labels": (n,) int64, "files": [...]}``
in ``shard-{k:06d}.pt``, written atomically; a shard already on disk is skipped, so an interrupted
run continues where it stopped. Rank r of W (torchrun's RANK / WORLD_SIZE) writes shards r, r + W, ...

The autoencoder (``si_lightning.autoencoders.load_autoencoder``): ``--vae PATH``, a local diffusers
``AutoencoderKL`` folder (diffusers is an optional dependency: ``pip install diffusers``; nothing is
downloaded, ``local_files_only=True``), encoded latents = posterior mean x ``--scale`` (0.18215, the
value SiT and DiT use); or ``--encoder module:factory``, any object with ``encode(images (B, 3, H, W)
in [-1, 1]) -> latents``. ``index.json`` records it (``autoencoder``, ``scale``): LatentDataModule
passes it on to the checkpoint, and ``si-lightning sample`` decodes the generated latents with it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from si_lightning.autoencoders import load_autoencoder, move_to
from si_lightning.errors import ConfigurationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".JPEG")


def list_images(root: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(path.name for path in root.iterdir() if path.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix in IMAGE_SUFFIXES or path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(label)
    return files, labels, classes


def centre_crop(path: Path, size: int) -> torch.Tensor:
    """ADM's centre crop (halve by box filter while >= 2 size, bicubic to size, crop): (3, S, S) in [-1, 1]."""
    with Image.open(path) as picture:
        image = picture.convert("RGB")
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    array = array[top : top + size, left : left + size]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def write_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="image folder root: <class>/<image>")
    parser.add_argument("--out", required=True)
    parser.add_argument("--vae", help="local diffusers AutoencoderKL folder")
    parser.add_argument("--encoder", help="module:factory of an object with encode(images) -> latents")
    parser.add_argument("--scale", type=float, default=0.18215)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    options = parser.parse_args(arguments)
    if (options.vae is None) == (options.encoder is None):
        print("error: --vae = None: exactly one of --vae (a local AutoencoderKL folder) or --encoder", file=sys.stderr)
        return 2
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    key, spec = ("--vae", options.vae) if options.vae else ("--encoder", options.encoder)
    try:
        encoder = move_to(load_autoencoder(spec, options.scale, key, operations=("encode",)), device)
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files, labels, classes = list_images(Path(options.data))
    if not files:
        print(f"error: --data = {options.data}: a folder of class folders holding images", file=sys.stderr)
        return 2
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        index = {
            "classes": classes,
            "num_images": len(files),
            "shard_size": options.shard_size,
            "image_size": options.image_size,
            "scale": options.scale,
            "autoencoder": str(Path(spec).expanduser().resolve()) if options.vae else spec,
        }
        write_atomically(out / "index.json", (json.dumps(index, indent=2) + "\n").encode())
    num_shards = -(-len(files) // options.shard_size)
    for shard in range(rank, num_shards, world_size):
        path = out / f"shard-{shard:06d}.pt"
        if path.is_file():
            continue
        start, stop = shard * options.shard_size, min((shard + 1) * options.shard_size, len(files))
        latents, flipped = [], []
        for first in range(start, stop, options.batch_size):
            batch = torch.stack(
                [centre_crop(files[i], options.image_size) for i in range(first, min(first + options.batch_size, stop))]
            )
            batch = batch.to(device)
            with torch.no_grad():
                latents.append(encoder.encode(batch).float().cpu())
                flipped.append(encoder.encode(batch.flip(-1)).float().cpu())
        content = {
            "latents": torch.cat(latents),
            "flipped": torch.cat(flipped),
            "labels": torch.tensor(labels[start:stop], dtype=torch.long),
            "files": [str(files[i].relative_to(options.data)) for i in range(start, stop)],
        }
        buffer = io.BytesIO()
        torch.save(content, buffer)
        write_atomically(path, buffer.getvalue())
        print(f"rank {rank}: shard {shard} ({stop - start} images)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
