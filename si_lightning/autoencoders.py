"""Autoencoders that map images to the latents a latent model is trained on, and back.

An autoencoder is any object with

    encode(images (B, 3, H, W) in [-1, 1]) -> latents (B, C, h, w), already multiplied by the scale
    decode(latents (B, C, h, w)) -> images (B, 3, H, W) in [-1, 1]

``DiffusersAutoencoder`` is diffusers' ``AutoencoderKL`` (Stable Diffusion's VAE, the one SiT and
DiT use) read from a local folder; ``load_autoencoder`` builds one from a spec string: a local folder
path, or ``module:factory`` naming a callable that returns such an object (tests and custom models).
Nothing is ever downloaded: a folder that is not there is an error naming it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from si_lightning.checks import is_number
from si_lightning.errors import ConfigurationError

DEFAULT_SCALE = 0.18215  # Stable Diffusion's latent scale: unit variance for its VAE's latents of ImageNet
AUTOENCODER_EXPECTED = "a local AutoencoderKL folder (nothing is downloaded) or module:factory"
OPERATIONS = ("encode", "decode")


@runtime_checkable
class Autoencoder(Protocol):
    """images (B, 3, H, W) in [-1, 1] <-> latents (B, C, h, w) times the scale."""

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...


class DiffusersAutoencoder(nn.Module):
    """diffusers' ``AutoencoderKL`` from a local folder (``config.json`` and weights), never downloaded.

    encode(x) = scale x (posterior mean of the encoder); decode(z) = the decoder's output at z / scale.
    diffusers is an optional dependency (``pip install diffusers``).

    Args:
        path: a folder written by ``AutoencoderKL.save_pretrained`` (e.g. stabilityai/sd-vae-ft-ema).
        scale: the factor the latents are multiplied by (0.18215 for Stable Diffusion's VAE).
        key: the setting that named the folder, for error messages.
    """

    def __init__(self, path: str | Path, scale: float = DEFAULT_SCALE, key: str = "autoencoder") -> None:
        super().__init__()
        try:
            from diffusers.models import AutoencoderKL
        except ImportError:
            raise ConfigurationError(
                key, str(path), "a folder needs the optional dependency diffusers (pip install diffusers)"
            ) from None
        if not Path(path).expanduser().is_dir():
            raise ConfigurationError(key, str(path), f"an existing folder: {AUTOENCODER_EXPECTED}")
        if not is_number(scale) or not scale > 0:
            raise ConfigurationError("scale", scale, "a number > 0 (0.18215 for Stable Diffusion's VAE)")
        try:
            self.vae = AutoencoderKL.from_pretrained(str(Path(path).expanduser()), local_files_only=True)
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigurationError(key, str(path), f"an AutoencoderKL folder; loading failed: {reason}") from None
        self.vae.eval().requires_grad_(False)
        self.scale = float(scale)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) in [-1, 1] -> scale x posterior mean (B, C, H / f, W / f)."""
        return self.vae.encode(images).latent_dist.mean * self.scale

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, C, h, w) (times the scale) -> images (B, 3, f h, f w), about [-1, 1]."""
        return self.vae.decode(latents / self.scale).sample


def load_factory(spec: str, key: str) -> object:
    """The object returned by the callable ``module:name``; a bad spec is a ConfigurationError."""
    module_name, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigurationError(key, spec, f"{AUTOENCODER_EXPECTED}; {type(error).__name__}: {error}") from None
    if not callable(factory):
        raise ConfigurationError(key, spec, f"{AUTOENCODER_EXPECTED}; {name} is not callable")
    return factory()


def load_autoencoder(
    spec: str,
    scale: float = DEFAULT_SCALE,
    key: str = "autoencoder",
    operations: tuple[str, ...] = OPERATIONS,
) -> Autoencoder:
    """The autoencoder of ``spec``: a local diffusers folder (with ``scale``) or ``module:factory``.

    A factory's object applies its own scale (``scale`` is for the folder). ``operations`` are the
    methods the caller needs (``("encode",)`` for pre-computing latents); a missing one is an error.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(key, spec, AUTOENCODER_EXPECTED)
    is_factory = ":" in spec and not Path(spec).expanduser().exists()
    autoencoder = load_factory(spec, key) if is_factory else DiffusersAutoencoder(spec, scale, key)
    missing = [name for name in operations if not callable(getattr(autoencoder, name, None))]
    if missing:
        raise ConfigurationError(key, spec, f"an autoencoder with {' and '.join(operations)}; it lacks {missing[0]}")
    return autoencoder


def move_to(autoencoder: Autoencoder, device: torch.device) -> Autoencoder:
    """The autoencoder on ``device`` when it can move (an nn.Module or anything with ``to``), else as it is."""
    mover = getattr(autoencoder, "to", None)
    return mover(device) if callable(mover) else autoencoder
