"""What ``sample`` writes: shards, PNGs in sub-folders of 1,000, ``samples.npz`` and ``record.json``.

Layout of an output directory::

    record.json                 settings, checkpoint hash, measured NFE, versions (see ``sample``)
    shards/shard-000000.pt      float32 samples of seeds [0, S), their labels and summed NFE
    images/000000/000000.png    one PNG per image sample, named by seed, 1,000 seeds per sub-folder
    samples.npz                 arr_0: uint8 (N, H, W, C) (float32 (N, D) for non-image data); arr_1: labels
    inputs/000000/000000.png    with ``--inputs``: what each sample was conditioned on (``conditioning``)
    inputs.npz                  with ``--inputs``: those images in seed order (and in-painting's masks)

A shard file is written atomically after its PNGs, so a shard that exists is complete and is
skipped on a rerun. ``samples.npz`` is assembled from the shards at the end, as a zip whose entries
carry a fixed date: the same samples give the same bytes.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from si_lightning.files import write_atomically
from si_lightning.metrics import quantize_to_uint8

RECORD = "record.json"
SAMPLES = "samples.npz"
SHARDS = "shards"
IMAGES = "images"
INPUTS = "inputs"
INPUTS_NPZ = "inputs.npz"
FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def shard_path(directory: Path, shard: int) -> Path:
    return directory / SHARDS / f"shard-{shard:06d}.pt"


def image_path(directory: Path, seed: int, folder: str = IMAGES) -> Path:
    """EDM's layout: seed 12345 goes to images/012000/012345.png (``folder``/012000/012345.png)."""
    return directory / folder / f"{seed - seed % 1000:06d}" / f"{seed:06d}.png"


def is_image_shape(data_shape: tuple[int, ...]) -> bool:
    return len(data_shape) == 3 and data_shape[0] in (1, 3)


def to_uint8_hwc(samples: Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), the layout of ADM's evaluator."""
    return quantize_to_uint8(samples).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def write_pngs(directory: Path, seeds: list[int], samples: Tensor, folder: str = IMAGES) -> None:
    """One PNG per image (N, C, H, W) in [-1, 1], named by its seed, under ``folder``."""
    for seed, image in zip(seeds, to_uint8_hwc(samples), strict=True):
        picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        write_atomically(image_path(directory, seed, folder), buffer.getvalue())


def write_shard(
    directory: Path, shard: int, seeds: list[int], samples: Tensor, labels: Tensor | None, nfe: float
) -> None:
    content = {
        "seeds": torch.tensor(seeds, dtype=torch.long),
        "samples": samples.detach().to("cpu", torch.float32).contiguous(),
        "labels": None if labels is None else labels.detach().cpu(),
        "nfe": float(nfe),
    }
    buffer = io.BytesIO()
    torch.save(content, buffer)
    write_atomically(shard_path(directory, shard), buffer.getvalue())


def read_shard(directory: Path, shard: int) -> dict[str, Any]:
    return torch.load(shard_path(directory, shard), map_location="cpu", weights_only=True)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (what ``numpy.savez`` writes) with fixed entry dates, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_ZIP_DATE), entry.getvalue())
    return buffer.getvalue()


def assemble_samples(directory: Path, num_shards: int, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """Write samples.npz from every shard; returns {"count", "nfe_total"}."""
    samples, labels, nfe_total = [], [], 0.0
    for shard in range(num_shards):
        content = read_shard(directory, shard)
        samples.append(content["samples"])
        if content["labels"] is not None:
            labels.append(content["labels"])
        nfe_total += content["nfe"]
    stacked = torch.cat(samples)
    first = to_uint8_hwc(stacked) if is_image_shape(data_shape) else stacked.numpy()
    arrays = {"arr_0": first}
    if labels:
        arrays["arr_1"] = torch.cat(labels).to(torch.int64).numpy()
    write_atomically(directory / SAMPLES, npz_bytes(arrays))
    return {"count": int(stacked.shape[0]), "nfe_total": nfe_total}


def read_record(directory: Path) -> dict[str, Any] | None:
    path = directory / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_record(directory: Path, record: dict[str, Any]) -> None:
    write_atomically(directory / RECORD, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def clear_outputs(directory: Path) -> None:
    """Remove what an earlier run wrote here (for ``--overwrite``); other files are left alone."""
    for name in (SHARDS, IMAGES, INPUTS):
        shutil.rmtree(directory / name, ignore_errors=True)
    for name in (SAMPLES, RECORD, INPUTS_NPZ):
        (directory / name).unlink(missing_ok=True)


def holds_samples(directory: Path) -> bool:
    return any((directory / name).exists() for name in (SHARDS, IMAGES, SAMPLES, RECORD, INPUTS, INPUTS_NPZ))
