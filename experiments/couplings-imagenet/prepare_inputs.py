"""Held-out images at the model's size for ``si-lightning sample --inputs``: resized and centre-cropped.

    python experiments/couplings-imagenet/prepare_inputs.py --images /data/imagenet/val --size 256 \
        --out /data/imagenet256-val-inputs [--count 50000]

Every image file under ``--images`` (searched recursively, sorted by path) gets the transform the
training data gets (``ImageDataModule`` with an image folder): the shorter side resized to
``--size`` (bilinear, anti-aliased), then a centre crop, as RGB. Image k is written to
``{out}/{k:06d}.png``, so the sorted order (and with it the seed of each input) is kept; a PNG that
exists is skipped, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image
from torchvision import transforms

from si_lightning.commands.inputs import image_files
from si_lightning.files import write_atomically


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parse.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parse.add_argument("--size", type=int, required=True, help="side of the square images the model was trained on")
    parse.add_argument("--out", required=True, help="folder for the PNGs")
    parse.add_argument("--count", type=int, help="the first N images in sorted order (default: all)")
    return parse


def main(arguments: list[str]) -> int:
    options = parser().parse_args(arguments)
    files = image_files(Path(options.images))[: options.count]
    if not files or options.size < 1:
        print(f"error: --images = {options.images}: a folder holding image files (and --size >= 1)", file=sys.stderr)
        return 2
    transform = transforms.Compose([transforms.Resize(options.size), transforms.CenterCrop(options.size)])
    out = Path(options.out)
    for index, file in enumerate(files):
        target = out / f"{index:06d}.png"
        if target.is_file():
            continue
        with Image.open(file) as picture:
            image = transform(picture.convert("RGB"))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_atomically(target, buffer.getvalue())
    print(f"{len(files)} images of {options.size}x{options.size} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
