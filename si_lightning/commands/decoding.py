"""Decoding the samples of a latent model into images, for ``sample``.

A model trained on autoencoder latents (``LatentDataModule``) generates latents (C, h, w); the
images are the autoencoder's decoding of them. Which autoencoder: ``--decoder`` (a local
AutoencoderKL folder or ``module:factory``, see ``si_lightning.autoencoders``), by default the one the
checkpoint records (the datamodule's ``autoencoder`` hyper-parameter, which Lightning stores under
``datamodule_hyper_parameters``), with ``--scale`` defaulting to the recorded ``autoencoder_scale``.

A latent model without a decoder is refused (one line, exit status 2) rather than spending a long
run on samples that cannot be looked at or scored; ``--decoder none`` writes the float latents
themselves (shards and ``samples.npz`` hold (N, C, h, w) float32, no PNGs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from si_lightning.autoencoders import DEFAULT_SCALE, Autoencoder, load_autoencoder, move_to
from si_lightning.commands.outputs import is_image_shape
from si_lightning.errors import ConfigurationError

NO_DECODER = "none"
DATAMODULE_HYPER_PARAMETERS = "datamodule_hyper_parameters"


@dataclass(frozen=True)
class DecoderSpec:
    """The autoencoder that decodes the samples (picklable: each process builds its own)."""

    spec: str
    scale: float

    def build(self, device: torch.device) -> Autoencoder:
        autoencoder = load_autoencoder(self.spec, self.scale, key="--decoder", operations=("decode",))
        return move_to(autoencoder, device)

    def as_dict(self) -> dict[str, Any]:
        return {"decoder": self.spec, "scale": self.scale}


def recorded_hyper_parameters(checkpoint: str | Path) -> dict[str, Any]:
    """The datamodule hyper-parameters stored in a checkpoint ({} if none), read without loading the weights."""
    try:  # memory-mapped: the tensors are not read, so a large checkpoint costs nothing here
        content = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a checkpoint in torch's legacy (non-zip) format cannot be mapped
        content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    recorded = content.get(DATAMODULE_HYPER_PARAMETERS) if isinstance(content, dict) else None
    return dict(recorded) if recorded else {}


def choose_decoder(
    decoder: str | None, scale: float | None, checkpoint: str | Path, data_shape: tuple[int, ...]
) -> DecoderSpec | None:
    """The decoder of the samples: ``--decoder``, else the checkpoint's autoencoder; None for data that is not latent.

    A latent model (its datamodule records an ``autoencoder`` setting, or its samples are (C, h, w) with
    C not 1 or 3) without any decoder is a ConfigurationError; ``--decoder none`` asks for the latents.
    """
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ConfigurationError("--scale", scale, "a number > 0: the factor the latents were multiplied by")
    recorded = recorded_hyper_parameters(checkpoint)
    latent = "autoencoder" in recorded or (len(data_shape) == 3 and not is_image_shape(data_shape))
    if decoder is not None and decoder.strip().lower() == NO_DECODER:
        if not latent:  # 'none' asks for latents; this model's samples are the data itself
            raise ConfigurationError(
                "--decoder", decoder, f"unset: this model is not a latent model (its samples are {tuple(data_shape)})"
            )
        return None
    spec = decoder if decoder is not None else recorded.get("autoencoder")
    if spec is None:
        if latent:
            raise ConfigurationError(
                "--decoder",
                None,
                f"the autoencoder that decodes this model's latents {tuple(data_shape)} into images (a local "
                "AutoencoderKL folder or module:factory; the checkpoint records none), or 'none' to write the latents",
            )
        return None
    chosen_scale = scale if scale is not None else recorded.get("autoencoder_scale") or DEFAULT_SCALE
    return DecoderSpec(str(spec), float(chosen_scale))


def decoded_shape(decoder: DecoderSpec | None, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one written sample: the decoder's image (C, H, W) for a latent of ``data_shape``, checked once."""
    if decoder is None:
        return tuple(data_shape)
    autoencoder = decoder.build(torch.device("cpu"))
    with torch.no_grad():
        image = autoencoder.decode(torch.zeros(1, *data_shape))
    shape = tuple(int(size) for size in image.shape[1:])
    if image.shape[0] != 1 or not is_image_shape(shape):
        raise ConfigurationError(
            "--decoder",
            decoder.spec,
            f"a decoder of {tuple(data_shape)} latents into images (1 or 3, H, W); got {shape}",
        )
    return shape
