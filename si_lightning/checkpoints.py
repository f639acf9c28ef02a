"""Checking a checkpoint file before a run uses it: one line naming the file and what is wrong.

Checkpoints are always read with ``torch.load(..., weights_only=True)``: tensors, numbers, strings
and plain containers only, so a file that would run code when unpickled is refused, never run.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from si_lightning.errors import ConfigurationError, one_line

# Values of ``ckpt_path`` that the Trainer resolves itself (newest, best, HPC checkpoint, registry).
SPECIAL_CHECKPOINTS = ("last", "best", "hpc", "registry")


def check_checkpoint(path: str | Path, key: str = "ckpt_path") -> None:
    """Raise a ConfigurationError (for setting ``key``) unless ``path`` is a readable Lightning checkpoint.

    Read on the CPU with ``weights_only=True`` (memory-mapped when the file allows it, so gigabytes of
    weights are not copied) and required to hold a ``state_dict``.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigurationError(key, str(path), "no such checkpoint file")
    if not file.is_file():
        raise ConfigurationError(key, str(path), "not a file; expected a checkpoint file (.ckpt)")
    if file.stat().st_size == 0:
        raise ConfigurationError(key, str(path), f"the checkpoint file {file} is empty")
    with open(file, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK") and not zipfile.is_zipfile(file):
        raise ConfigurationError(
            key, str(path), f"{file} is a truncated or corrupt checkpoint (incomplete zip archive)"
        )
    if not head.startswith((b"PK", b"\x80")):  # torch.save writes a zip archive, or a pickle in the legacy format
        raise ConfigurationError(
            key, str(path), f"{file} is not a PyTorch checkpoint (neither a zip archive nor a pickle)"
        )
    try:
        checkpoint = _load(file)
    except pickle.UnpicklingError as error:
        reason = _first_meaningful_line(str(error))
        raise ConfigurationError(
            key, str(path), f"{file} was refused by the safe loader (weights_only=True): {reason}"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, zipfile.BadZipFile) as error:
        raise ConfigurationError(
            key, str(path), f"{file} is not a readable PyTorch checkpoint (truncated or corrupt?): {one_line(error)}"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConfigurationError(key, str(path), f"{file} holds no 'state_dict' (found {found}); not a checkpoint")


def _load(file: Path) -> object:
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
    return torch.load(file, map_location="cpu", weights_only=True)  # a legacy (non-zip) file cannot be mapped


def _first_meaningful_line(text: str) -> str:
    """The line of torch's refusal that names what the file tried to load."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "Unsupported operand" in line or "GLOBAL" in line:
            return one_line(line, 300)
    return one_line(lines[-1] if lines else text, 300)
