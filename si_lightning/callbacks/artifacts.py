"""What evaluation callbacks leave behind: PNG files, metric records, and the same handed to the loggers.

Files go into the run directory (``trainer.log_dir``: the first logger's directory, else
``default_root_dir``), are written by global rank 0 only, and atomically (a temporary file in the
same directory, then ``os.replace``), so an interrupted run never leaves half a PNG or a truncated
record file under the final name. Images are handed to every logger that can show one (W&B,
TensorBoard, through ``IMAGE_LOGGERS``); any other logger (CSV) has the file in the run directory.
Metrics go to every logger's ``log_metrics``, to ``trainer.callback_metrics`` (so ModelCheckpoint
or EarlyStopping can monitor them) and to ``evaluation/metrics.jsonl``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from si_lightning.files import write_atomically
from si_lightning.metrics import quantize_to_uint8

METRICS_FILE = Path("evaluation") / "metrics.jsonl"
GRID_PADDING = 2  # pixels between images (and around the grid), white
SCATTER_SIZE_INCHES, SCATTER_DPI = 4.0, 100  # a 400 x 400 pixel scatter plot


def run_directory(trainer: pl.Trainer) -> Path:
    """The run directory, where the config, samples and metrics go. A collective: call on every rank.

    TensorBoard and CSV loggers have their own versioned ``log_dir``. For any other logger (W&B) it is
    ``save_dir/name/version``, the folder ModelCheckpoint also uses, so two W&B runs never share (and
    overwrite) one directory the way ``trainer.log_dir`` (their bare ``save_dir``) would have them.
    """
    logger = trainer.logger
    if logger is None or isinstance(logger, (TensorBoardLogger, CSVLogger)) or logger.save_dir is None:
        directory = trainer.log_dir  # broadcasts rank 0's value
        return Path(directory if directory is not None else trainer.default_root_dir)
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(trainer.strategy.broadcast(os.path.join(logger.save_dir, str(logger.name), version)))


def write_png(image: np.ndarray, path: Path) -> Path:
    """Save a uint8 image (H, W) or (H, W, 1 | 3) as a PNG, atomically."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 image (H, W) or (H, W, C); got {image.dtype} of shape {image.shape}")
    pixels = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return write_atomically(path, buffer.getvalue())


def image_grid(images: Tensor, columns: int) -> np.ndarray:
    """Images (B, C, H, W) in [-1, 1], C in {1, 3} -> uint8 grid (rows * (H + p) + p, columns * (W + p) + p, C).

    Row-major: image i sits in row i // columns, column i % columns; p = GRID_PADDING white pixels.
    Pixels are quantised exactly as for FID (``quantize_to_uint8``), then laid out by torchvision's
    ``make_grid`` (as in si_lightning/demo.py).
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"a grid needs images (B, 1 or 3, H, W); got shape {tuple(images.shape)}")
    count, channels, height, width = images.shape
    rows = -(-count // columns)
    pixels = quantize_to_uint8(images.float().cpu())
    # Every cell of the rows x columns grid is filled (white where there is no image), so the grid has
    # ``columns`` columns even for fewer images: make_grid would otherwise narrow it to the image count.
    blank = torch.full((rows * columns - count, channels, height, width), 255, dtype=torch.uint8)
    cells = torch.cat([pixels, blank])
    if len(cells) == 1:  # make_grid returns a lone image as it is, without the border
        grid = torch.nn.functional.pad(cells[0], (GRID_PADDING,) * 4, value=255)
    else:
        grid = make_grid(cells, nrow=columns, padding=GRID_PADDING, pad_value=255)[:channels]  # grey: 1 of 3
    return grid.permute(1, 2, 0).numpy()


def scatter_image(samples: Tensor, reference: Tensor) -> np.ndarray:
    """2-D samples (N, 2) drawn over a density histogram of ``reference`` (M, 2): uint8 (400, 400, 3).

    The axes cover the reference points with a margin, the same for every evaluation of a run, so
    successive plots are comparable; samples outside the axes are not shown.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples, reference = samples.detach().double().cpu().numpy(), reference.detach().double().cpu().numpy()
    limit = 1.1 * float(np.abs(reference).max())
    figure = Figure(figsize=(SCATTER_SIZE_INCHES, SCATTER_SIZE_INCHES), dpi=SCATTER_DPI)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.hist2d(reference[:, 0], reference[:, 1], bins=100, range=[[-limit, limit], [-limit, limit]], cmap="Greys")
    axes.scatter(samples[:, 0], samples[:, 1], s=3, c="tab:red", linewidths=0)
    axes.set_xlim(-limit, limit)
    axes.set_ylim(-limit, limit)
    axes.set_axis_off()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _wandb_image(logger: Logger, key: str, image: np.ndarray, step: int) -> None:
    logger.log_image(key=key, images=[image], step=step)


def _tensorboard_image(logger: Logger, key: str, image: np.ndarray, step: int) -> None:
    logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")


# Loggers that can show an image, and how; others get the PNG in the run directory only.
IMAGE_LOGGERS: dict[type[Logger], Callable[[Logger, str, np.ndarray, int], None]] = {
    WandbLogger: _wandb_image,
    TensorBoardLogger: _tensorboard_image,
}


def log_image(loggers: Sequence[Logger], key: str, image: np.ndarray, step: int) -> None:
    """Hand a uint8 image (H, W, C) to each logger in ``IMAGE_LOGGERS`` (call on rank 0)."""
    if image.ndim == 2:
        image = image[..., None]
    for logger in loggers:
        for kind, write in IMAGE_LOGGERS.items():
            if isinstance(logger, kind):
                write(logger, key, image, step)
                break


def publish_image(trainer: pl.Trainer, directory: Path, key: str, image: np.ndarray) -> Path | None:
    """Rank 0: save ``image`` as ``directory/{key}/step-{global_step}.png`` and log it under ``key``."""
    if not trainer.is_global_zero:
        return None
    step = trainer.global_step
    path = write_png(image, directory / key / f"step-{step:08d}.png")
    log_image(trainer.loggers, key, image, step)
    return path


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to ``path``, rewriting the file atomically (records are few and small)."""
    existing = path.read_bytes() if path.is_file() else b""
    line = json.dumps(dict(record), sort_keys=True).encode() + b"\n"
    write_atomically(path, existing + line)


def publish_metrics(
    trainer: pl.Trainer, directory: Path, metrics: Mapping[str, float], details: Mapping[str, Any] | None = None
) -> None:
    """Make evaluation ``metrics`` visible everywhere; call on every rank with the same (already merged) values.

    Every rank: ``trainer.callback_metrics`` (for monitors). Rank 0: every logger's ``log_metrics``
    at the global step, and one record {step, epoch, stage, checkpoint, metrics, details} in
    ``directory/evaluation/metrics.jsonl`` (a standalone ``validate`` names its checkpoint there).
    """
    for name, value in metrics.items():
        trainer.callback_metrics[name] = torch.tensor(float(value))
    if not trainer.is_global_zero:
        return
    step = trainer.global_step
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)
        logger.save()
    record = {
        "step": step,
        "epoch": trainer.current_epoch,
        "stage": trainer.state.fn.value if trainer.state.fn is not None else None,
        "checkpoint": None if trainer.ckpt_path is None else str(trainer.ckpt_path),
        "metrics": dict(metrics),
        "details": dict(details or {}),
    }
    append_record(directory / METRICS_FILE, record)
