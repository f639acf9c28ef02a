"""Which decoder ``sample`` uses: --decoder, the autoencoder a checkpoint records, or none; checked before sampling."""

from __future__ import annotations

import pytest
import torch

from si_lightning.commands.decoding import DecoderSpec, choose_decoder, decoded_shape
from si_lightning.errors import ConfigurationError

STAND_IN = "tests.experiments.test_sit_latents:TinyAutoencoder"
LATENT = (4, 4, 4)


def checkpoint_with(tmp_path, recorded: dict | None) -> str:
    """A file holding what Lightning writes for a datamodule's hyper-parameters (or none)."""
    content = {"state_dict": {"weight": torch.zeros(2)}, "hyper_parameters": {}}
    if recorded is not None:
        content["datamodule_hyper_parameters"] = recorded
    path = tmp_path / "model.ckpt"
    torch.save(content, path)
    return str(path)


def test_the_recorded_autoencoder_and_scale_are_the_defaults(tmp_path) -> None:
    checkpoint = checkpoint_with(tmp_path, {"root": "x", "autoencoder": STAND_IN, "autoencoder_scale": 0.5})
    assert choose_decoder(None, None, checkpoint, LATENT) == DecoderSpec(STAND_IN, 0.5)
    assert choose_decoder("other:factory", 2.0, checkpoint, LATENT) == DecoderSpec("other:factory", 2.0)
    assert choose_decoder("none", None, checkpoint, LATENT) is None  # the latents themselves
    recorded_without_scale = checkpoint_with(tmp_path, {"autoencoder": STAND_IN, "autoencoder_scale": None})
    assert choose_decoder(None, None, recorded_without_scale, LATENT) == DecoderSpec(STAND_IN, 0.18215)
    # Image and point models record nothing and need no decoder.
    plain = checkpoint_with(tmp_path, None)
    assert choose_decoder(None, None, plain, (3, 8, 8)) is None
    assert choose_decoder(None, None, plain, (2,)) is None
    assert choose_decoder(STAND_IN, None, plain, LATENT) == DecoderSpec(STAND_IN, 0.18215)


def test_a_latent_model_without_a_decoder_is_refused(tmp_path) -> None:
    expected = r"--decoder = None: the autoencoder that decodes this model's latents \(4, 4, 4\) into images"
    with pytest.raises(ConfigurationError, match=expected):
        choose_decoder(None, None, checkpoint_with(tmp_path, None), LATENT)  # (C, h, w) with C = 4
    with pytest.raises(ConfigurationError, match=r"latents \(3, 4, 4\).*or 'none' to write the latents"):
        choose_decoder(None, None, checkpoint_with(tmp_path, {"autoencoder": None}), (3, 4, 4))
    with pytest.raises(ConfigurationError, match=r"--scale = 0.0: a number > 0"):
        choose_decoder(STAND_IN, 0.0, checkpoint_with(tmp_path, None), LATENT)


def test_the_decoded_shape_is_checked_once_before_sampling() -> None:
    assert decoded_shape(DecoderSpec(STAND_IN, 1.0), LATENT) == (3, 8, 8)
    assert decoded_shape(None, LATENT) == LATENT
    with pytest.raises(ConfigurationError, match=r"--decoder = 'tests.commands.test_decoding:Identity': a decoder of"):
        decoded_shape(DecoderSpec("tests.commands.test_decoding:Identity", 1.0), LATENT)
    with pytest.raises(ConfigurationError, match=r"--decoder = 'no_such_module:factory'"):
        decoded_shape(DecoderSpec("no_such_module:factory", 1.0), LATENT)


class Identity:
    """A 'decoder' that returns the latents: not images."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents
