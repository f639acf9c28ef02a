"""Inputs of the ``evaluate`` command: images from files, the data of a run, generated samples.

Images on disk are a folder of PNG/JPEG files (searched recursively, sorted by path) or an .npz in
the layout of ADM's evaluator (``arr_0``: uint8 (N, H, W, C)); ``sample``'s output directory is
read through its ``samples.npz``. The data of a run is rebuilt from the ``data`` section of a
config (by default the ``config.yaml`` that ``fit`` wrote beside the checkpoint's folder).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch import Tensor

from si_lightning.callbacks.generation import batched, sample_with_labels
from si_lightning.commands.outputs import SAMPLES
from si_lightning.errors import ConfigurationError, one_line
from si_lightning.module import InterpolantModule
from si_lightning.sampling import ODESampler, SDESampler

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)


def picture_channels(mode: str) -> int:
    """Channels an image of PIL ``mode`` is read with: 1 for grayscale (L), 3 otherwise (converted to RGB)."""
    return 1 if mode == "L" else 3


def read_picture(file: Path) -> np.ndarray:
    """uint8 (H, W, C) of one image file: grayscale kept as one channel, every other mode as RGB."""
    with Image.open(file) as picture:
        array = np.asarray(picture.convert("RGB") if picture.mode not in ("L", "RGB") else picture)
    return array[..., None] if array.ndim == 2 else array


NPZ_EXPECTED = "an .npz with arr_0: uint8 (N, H, W, C), N >= 2, C = 1 or 3 (ADM's layout)"


def read_npz_images(path: Path, key: str) -> np.ndarray:
    """arr_0 of an .npz in ADM's layout: uint8 (N, H, W, C) with N >= 2 and C = 1 or 3.

    Read without pickles; a file that is no zip of arrays, NCHW arrays and empty arrays are refused.
    """
    try:
        content = np.load(path, allow_pickle=False)
        if isinstance(content, np.ndarray):  # a single .npy array under an .npz name
            raise ConfigurationError(key, str(path), f"{NPZ_EXPECTED}; this is one bare .npy array")
        with content:
            if "arr_0" not in content.files:
                raise ConfigurationError(key, str(path), f"{NPZ_EXPECTED}; it holds {sorted(content.files)[:5]}")
            array = content["arr_0"]
    except ConfigurationError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        reason = "not a NumPy .npz archive" if "pickle" in str(error) else one_line(str(error), 200)
        raise ConfigurationError(key, str(path), f"{NPZ_EXPECTED}; {reason}") from None
    if array.dtype != np.uint8 or array.ndim != 4:
        raise ConfigurationError(key, str(path), f"{NPZ_EXPECTED}; got {array.dtype} {array.shape}")
    if array.shape[3] not in (1, 3):
        layout = " (channels first? ADM's layout has them last)" if array.shape[1] in (1, 3) else ""
        raise ConfigurationError(key, str(path), f"{NPZ_EXPECTED}; got shape {array.shape}{layout}")
    if array.shape[0] < 2:
        raise ConfigurationError(key, str(path), f"{NPZ_EXPECTED}; it holds {array.shape[0]} images")
    return array


def read_images(path: str | Path, key: str) -> Tensor:
    """uint8 (N, C, H, W) images from a folder of image files, an .npz or a ``sample`` output directory."""
    path = Path(path)
    if path.is_dir() and (path / SAMPLES).is_file():
        path = path / SAMPLES
    if path.is_file() and path.suffix == ".npz":
        return torch.from_numpy(read_npz_images(path, key)).permute(0, 3, 1, 2).contiguous()
    if not path.is_dir():
        raise ConfigurationError(key, str(path), "a folder of images, a sample output directory or an .npz")
    files = image_files(path)
    if len(files) < 2:
        raise ConfigurationError(key, str(path), "a folder holding at least 2 images (.png, .jpg, ...)")
    pictures = [read_picture(file) for file in files]
    if len({picture.shape for picture in pictures}) != 1:
        raise ConfigurationError(key, str(path), "images that all have one size and channel count")
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()


def run_config_path(checkpoint: str | Path) -> Path:
    """``{run directory}/config.yaml`` for ``{run directory}/checkpoints/x.ckpt``."""
    return Path(checkpoint).resolve().parent.parent / "config.yaml"


def build_datamodule(config_path: Path, key: str = "--data-config") -> LightningDataModule:
    """The datamodule of the ``data`` section of a LightningCLI config file."""
    if not config_path.is_file():
        raise ConfigurationError(key, str(config_path), "a config file with a data section (the run's config.yaml)")
    try:
        content = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or one_line(str(error), 200)
        raise ConfigurationError(key, str(config_path), f"a YAML file: {problem}{where}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(key, str(config_path), f"a readable YAML file: {one_line(str(error), 200)}") from None
    if not isinstance(content, dict) or "data" not in content:
        raise ConfigurationError(key, str(config_path), "a config file with a data section (class_path, init_args)")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    try:
        namespace = parser.parse_object({"data": content["data"]})
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
        datamodule = instantiate(namespace).data
    except Exception as error:
        raise ConfigurationError(key, str(config_path), f"a valid data section ({error})".replace("\n", " ")) from None
    if not hasattr(datamodule, "real_samples"):
        raise ConfigurationError(key, str(config_path), "a datamodule with real_samples() (si_lightning.data)")
    return datamodule


def default_labels(seeds: list[int], num_classes: int) -> Tensor | None:
    return torch.tensor([seed % num_classes for seed in seeds]) if num_classes > 0 else None


def generate(
    module: InterpolantModule,
    sampler: ODESampler | SDESampler,
    seeds: list[int],
    batch_size: int,
    device: torch.device,
    guidance_scale: float | None = None,
    path: dict | None = None,
) -> tuple[Tensor, float]:
    """Samples (N, *data_shape) from per-sample seeds (labels seed mod K) and the mean NFE per sample.

    ``path``: sample along that interpolant (``si_lightning.commands.paths``), None the checkpoint's own.
    """
    from si_lightning.commands.paths import along_path

    data_shape = tuple(module.backbone.data_shape)
    num_classes = int(getattr(module.backbone, "num_classes", 0) or 0)
    fields = along_path(module.fields(ema=True, guidance_scale=guidance_scale), path)
    chunks, evaluations = [], 0.0
    with torch.no_grad():
        for batch in batched(seeds, batch_size):
            result = sample_with_labels(fields, sampler, batch, data_shape, device, default_labels(batch, num_classes))
            chunks.append(result.x.float().cpu())
            evaluations += result.nfe * len(batch)
    return torch.cat(chunks), evaluations / len(seeds)
