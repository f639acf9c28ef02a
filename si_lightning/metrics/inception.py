"""torch-fidelity's InceptionV3 (the TF-ported FID network) as a FeatureExtractor, loaded offline.

The weights are never downloaded here. They are read from, in order:
1. the ``weights_path`` given to the extractor (a config value);
2. the file torch-fidelity's own download would create: ``torch.hub.get_dir()/checkpoints/`` +
   the file name of torch-fidelity's URL (``$TORCH_HOME/hub/checkpoints/...``, by default
   ``~/.cache/torch/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``).
A missing file is a FileNotFoundError that names both paths and the URL to fetch it from.
"""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path
from unittest import mock
from urllib.parse import urlparse

import torch
import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
from torch import Tensor
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

from si_lightning.metrics.feature_extractor import FeatureExtractor

INCEPTION_WEIGHTS_URL = URL_INCEPTION_V3
INCEPTION_WEIGHTS_FILENAME = Path(urlparse(URL_INCEPTION_V3).path).name


def inception_cache_path() -> Path:
    """Where torch-fidelity's ``load_state_dict_from_url`` stores (and looks for) the InceptionV3 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def resolve_inception_weights(weights_path: str | PathLike | None = None) -> Path:
    """The InceptionV3 weights file: ``weights_path`` if it exists, else the torch hub cache file, else an error."""
    cache_path = inception_cache_path()
    configured = Path(weights_path).expanduser() if weights_path is not None else None
    if configured is not None and configured.is_file():
        return configured
    if cache_path.is_file():
        if configured is not None:
            warnings.warn(
                f"InceptionV3 weights_path {str(configured)!r} does not exist; "
                f"using the cached file {str(cache_path)!r}",
                stacklevel=2,
            )
        return cache_path
    looked = f"weights_path={str(configured)!r} (missing)" if configured is not None else "weights_path not set"
    raise FileNotFoundError(
        f"InceptionV3 weights not found: {looked}, and no file at the cache path {str(cache_path)!r}. "
        f"Nothing is downloaded. Fetch {INCEPTION_WEIGHTS_URL} on a machine with network access and either "
        f"place it at {str(cache_path)!r} (or under $TORCH_HOME/hub/checkpoints/) or pass its location as weights_path."
    )


class InceptionFeatureExtractor(FeatureExtractor):
    """2048-d pool features of torch-fidelity's InceptionV3, as used by FID-50k in the literature.

    Input: uint8 (B, 1 or 3, H, W), any size; grayscale is repeated to three channels and
    torch-fidelity resizes to 299 x 299 with its TensorFlow-compatible bilinear interpolation.
    """

    name = "inception"
    feature_dim = 2048

    def __init__(self, weights_path: str | PathLike | None = None) -> None:
        super().__init__()
        path = resolve_inception_weights(weights_path)
        # torch-fidelity unpickles the file with weights_only=False; reading it with weights_only=True first
        # guarantees it holds nothing but tensors before that happens.
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"InceptionV3 weights file {str(path)!r} is not a readable state_dict: {error}") from error
        if not isinstance(state_dict, dict) or "fc.weight" not in state_dict:
            raise ValueError(f"InceptionV3 weights file {str(path)!r} is not a torch-fidelity InceptionV3 state_dict")
        del state_dict
        self.weights_path = path
        self.network = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
        )
        self.eval()

    def extract(self, images: Tensor) -> Tensor:
        channels = images.shape[1]
        if channels == 1:
            images = images.expand(-1, 3, -1, -1)
        elif channels != 3:
            raise ValueError(f"InceptionV3 expects 1 or 3 channels; got {channels} (shape {tuple(images.shape)})")
        return self.network(images)[0]


def write_random_inception_weights(path: str | PathLike) -> None:
    """Save a randomly initialised torch-fidelity InceptionV3 state_dict at ``path``, with no download.

    The file has exactly the format torch-fidelity downloads (``torch.save`` of the state_dict of
    ``FeatureExtractorInceptionV3``), so the loading code and the feature plumbing can be tested and
    benchmarked offline; the features are not Inception's real ones. The constructor's own download
    and load are bypassed; the convolutions get He initialisation from a fixed seed (the same file
    every time), which keeps the activations O(1) through the 90 layers.
    """
    with (
        mock.patch.object(fidelity_inception, "load_state_dict_from_url", lambda *args, **kwargs: {}),
        mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    torch.save(network.state_dict(), path)
