"""Checks shared by ``sample`` and ``evaluate``, made before any work: output paths, real points, image shapes.

Each refusal is a ``ConfigurationError`` naming the option the user typed (``--out``, ``--split``,
``--num-real``, ``--samples``), so the command ends with one ``error: KEY = VALUE: expected`` line
and exit status 2 instead of an OSError or a ValueError after minutes of sampling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from si_lightning.errors import ConfigurationError

NAME_MAX = 255  # the longest file name of common filesystems (ext4, xfs, btrfs, APFS)


def check_output_path(path: str | Path, key: str = "--out") -> Path:
    """``path`` as a directory to write into: not a file, not under a file, every name short enough.

    Nothing is created; a missing directory is fine (the command creates it when it writes).
    """
    text = str(path)
    out = Path(text)
    too_long = [part for part in out.parts if len(os.fsencode(part)) > NAME_MAX]
    if too_long:
        shown = f"{text[:40]}...({len(text)} characters)" if len(text) > 60 else text
        raise ConfigurationError(key, shown, f"a directory whose names are at most {NAME_MAX} bytes each")
    if out.exists() and not out.is_dir():
        raise ConfigurationError(key, text, "a directory (this is a file)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigurationError(key, text, f"a directory; {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK) and not out.exists():
                raise ConfigurationError(key, text, f"a directory that can be created; {parent} is not writable")
            break
    return out


def check_real_points(datamodule: Any, split: str, count: int | None, split_key: str, count_key: str) -> None:
    """``split`` is a split of ``datamodule`` holding at least ``count`` (>= 2) points, checked before sampling."""
    if count is not None and count < 2:
        raise ConfigurationError(count_key, count, "an integer >= 2 (statistics need two points or more)")
    dataset = getattr(datamodule, "dataset", None)
    if dataset is None:  # data drawn afresh (2-D toys): any split, any count
        return
    try:
        points = len(dataset(split))
    except ValueError as error:
        raise ConfigurationError(split_key, split, str(error)) from None
    if count is not None and count > points:
        raise ConfigurationError(count_key, count, f"at most the {points} points of the {split} split")


def check_same_images(images: Tensor, shape: tuple[int, ...], key: str, value: str, of_what: str) -> None:
    """``images`` (N, C, H, W) have the shape (C, H, W) of ``of_what`` (the data, the reference images)."""
    found = tuple(int(size) for size in images.shape[1:])
    if found != tuple(shape):
        raise ConfigurationError(
            key, value, f"images of the shape of {of_what} (C, H, W) = {tuple(shape)}; these are {found}"
        )
