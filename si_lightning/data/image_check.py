"""Checking every file of an image folder once, before training, so a broken file is named at setup.

Each image is opened, verified (``Image.verify``) and decoded. The outcome is cached per folder in
a small JSON file keyed by the files' names, sizes and modification times, so a folder is read in
full only when it changes. A file that cannot be decoded is an error naming its path, or, with
``bad_images="skip"``, left out with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from si_lightning.files import write_atomically

BAD_IMAGE_POLICIES = ("error", "skip")
CACHE_VERSION = 1


def cache_directory() -> Path:
    """Where the verification results live: $SI_LIGHTNING_CACHE, else $XDG_CACHE_HOME (~/.cache)/si_lightning."""
    if os.environ.get("SI_LIGHTNING_CACHE"):
        return Path(os.environ["SI_LIGHTNING_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "si_lightning"


def undecodable(path: str) -> str | None:
    """Why ``path`` cannot be read as an image, or None when it decodes."""
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums, without decoding
        with Image.open(path) as image:
            image.load()  # the pixels: catches truncated data that verify lets through
    except Exception as error:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError ...)
        return f"{type(error).__name__}: {error}"
    return None


def folder_fingerprint(paths: Sequence[str]) -> str:
    """A digest of the files' names, sizes and modification times (any change means a new check)."""
    digest = hashlib.sha256(str(CACHE_VERSION).encode())
    for path in sorted(paths):
        status = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def bad_image_files(root: Path, paths: Sequence[str]) -> dict[str, str]:
    """{path: reason} for the files that cannot be decoded; cached per folder (see module docstring)."""
    fingerprint = folder_fingerprint(paths)
    cache = cache_directory() / "image-folders" / f"{hashlib.sha256(str(root.resolve()).encode()).hexdigest()}.json"
    try:
        stored = json.loads(cache.read_text())
        if stored.get("fingerprint") == fingerprint:
            return dict(stored["bad"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: check again
    bad = {path: reason for path in paths if (reason := undecodable(path)) is not None}
    try:
        write_atomically(cache, json.dumps({"fingerprint": fingerprint, "bad": bad}).encode())
    except OSError as error:  # a read-only home: check again next time
        warnings.warn(f"could not cache the image check of {root} in {cache}: {error}", stacklevel=2)
    return bad


def checked_samples(root: Path, samples: Sequence[tuple[str, int]], policy: str) -> list[tuple[str, int]]:
    """``samples`` (path, label) without undecodable files (``policy="skip"``), or a ValueError naming the first."""
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"bad_images must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {policy!r}")
    bad = bad_image_files(root, [path for path, _ in samples])
    if not bad:
        return list(samples)
    first = sorted(bad)[0]
    if policy == "error":
        others = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(
            f"{first} cannot be decoded as an image{others}: {bad[first]}; remove it, or set bad_images: skip"
        )
    warnings.warn(f"skipping {len(bad)} image file(s) of {root} that cannot be decoded, first: {first}", stacklevel=2)
    return [(path, label) for path, label in samples if path not in bad]
