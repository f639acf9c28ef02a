"""Autoencoders: diffusers' AutoencoderKL from a folder the test writes, module:factory specs, bad specs."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from si_lightning.autoencoders import DiffusersAutoencoder, load_autoencoder, move_to
from si_lightning.errors import ConfigurationError
from tests.experiments.test_sit_latents import SCRIPT, TinyAutoencoder, write_image_folder

STAND_IN = "tests.experiments.test_sit_latents:TinyAutoencoder"


@pytest.fixture
def vae_folder(tmp_path):
    """A tiny randomly initialised AutoencoderKL (2x downsampling, 4 latent channels) saved as a local folder."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
    )
    vae.save_pretrained(tmp_path / "vae")
    return tmp_path / "vae", vae.eval()


def test_diffusers_autoencoder_is_the_scaled_posterior_mean_and_its_decoder(vae_folder) -> None:
    folder, vae = vae_folder
    autoencoder = load_autoencoder(str(folder), scale=0.5)
    assert isinstance(autoencoder, DiffusersAutoencoder)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(images).latent_dist.mean
        latents = autoencoder.encode(images)
        assert latents.shape == (3, 4, 4, 4)
        torch.testing.assert_close(latents, 0.5 * mean, rtol=1e-6, atol=1e-6)
        # decode divides by the scale again: decode(encode(x)) is the decoder at the posterior mean.
        torch.testing.assert_close(autoencoder.decode(latents), vae.decode(mean).sample, rtol=1e-5, atol=1e-5)
    assert move_to(autoencoder, torch.device("cpu")) is autoencoder


def test_precompute_encodes_with_a_vae_folder_and_records_it(vae_folder, tmp_path) -> None:
    folder, _ = vae_folder
    write_image_folder(tmp_path / "images", per_class=1)
    specification = importlib.util.spec_from_file_location("precompute_latents", SCRIPT)
    script = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(script)
    out = tmp_path / "latents"
    arguments = ["--data", str(tmp_path / "images"), "--out", str(out), "--image-size", "8", "--vae", str(folder)]
    assert script.main([*arguments, "--scale", "0.25"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert (index["autoencoder"], index["scale"]) == (str(folder.resolve()), 0.25)
    shard = torch.load(out / "shard-000000.pt", weights_only=True, mmap=True)
    image = script.centre_crop(tmp_path / "images" / "cat" / "0.png", 8)[None]
    autoencoder = DiffusersAutoencoder(folder, 0.25)
    torch.testing.assert_close(shard["latents"][:1], autoencoder.encode(image), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shard["flipped"][:1], autoencoder.encode(image.flip(-1)), rtol=1e-5, atol=1e-6)


def test_a_factory_spec_builds_its_object() -> None:
    autoencoder = load_autoencoder(STAND_IN)
    assert isinstance(autoencoder, TinyAutoencoder)
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    assert autoencoder.decode(latents).shape == (2, 3, 8, 8)


def test_bad_specs_are_one_line_naming_the_key(tmp_path, monkeypatch) -> None:
    with pytest.raises(ConfigurationError, match=r"--decoder = '.*absent': an existing folder: a local Autoenc"):
        load_autoencoder(str(tmp_path / "absent"), key="--decoder")
    with pytest.raises(ConfigurationError, match=r"autoencoder = 'no_such_module:factory': .*ModuleNotFoundError"):
        load_autoencoder("no_such_module:factory")
    with pytest.raises(ConfigurationError, match=r"autoencoder = 'json:missing': .*AttributeError"):
        load_autoencoder("json:missing")
    with pytest.raises(ConfigurationError, match=r"'tests.test_autoencoders:EncoderOnly': .*it lacks decode"):
        load_autoencoder("tests.test_autoencoders:EncoderOnly")
    assert load_autoencoder("tests.test_autoencoders:EncoderOnly", operations=("encode",)).encode(1) == 2
    (tmp_path / "folder").mkdir()
    monkeypatch.setitem(sys.modules, "diffusers", None)  # the optional dependency is not installed
    monkeypatch.setitem(sys.modules, "diffusers.models", None)
    with pytest.raises(ConfigurationError, match=r"--vae = '.*folder': .*optional dependency diffusers"):
        load_autoencoder(str(tmp_path / "folder"), key="--vae")


class EncoderOnly:
    def encode(self, images):
        return 2 * images
