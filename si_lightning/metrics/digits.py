"""A small digits classifier whose penultimate layer is the feature space for digits FID.

InceptionV3 features of 8 x 8 digits resized to 299 x 299 say little about digit quality, so the
embedded digits dataset gets its own extractor: a CNN trained on sklearn's digits
(`scripts/train_digits_classifier.py`, weights shipped in ``si_lightning/weights/``).

Image convention (as the digits data is stored): pixel values v in 0..16 scaled to [-1, 1] by
x = v / 8 - 1, possibly up-sampled, then quantised to uint8 by `quantize_to_uint8`. The extractor
maps uint8 back to [-1, 1] (u / 127.5 - 1), averages RGB to grayscale, and resizes to 8 x 8 by area
averaging (exact for nearest-neighbour up-sampling by an integer factor; bilinear when the input
is smaller than 8 x 8).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from si_lightning.metrics.feature_extractor import FeatureExtractor

DIGITS_SIZE = 8
DIGITS_CLASSES = 10
DIGITS_WEIGHTS_PATH = Path(__file__).resolve().parent.parent / "weights" / "digits_classifier.pt"


class DigitsClassifier(nn.Module):
    """CNN on (B, 1, 8, 8) digits in [-1, 1]: ``features`` -> (B, 64), ``forward`` -> logits (B, 10)."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8 x 8 -> 4 x 4
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4 x 4 -> 2 x 2
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, self.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, DIGITS_CLASSES)

    def features(self, images: Tensor) -> Tensor:
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images))


def digits_classifier_input(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W), C in {1, 3} -> float32 (B, 1, 8, 8) in [-1, 1], the classifier's input."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"digits images must be uint8 (B, 1 or 3, H, W); got {images.dtype} of shape {tuple(images.shape)}"
        )
    scaled = images.float() / 127.5 - 1.0
    grayscale = scaled.mean(dim=1, keepdim=True)
    height, width = grayscale.shape[-2:]
    if (height, width) == (DIGITS_SIZE, DIGITS_SIZE):
        return grayscale
    if height >= DIGITS_SIZE and width >= DIGITS_SIZE:
        return F.interpolate(grayscale, size=(DIGITS_SIZE, DIGITS_SIZE), mode="area")
    return F.interpolate(grayscale, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)


def load_digits_data() -> tuple[Tensor, Tensor]:
    """sklearn's embedded digits: images (1797, 1, 8, 8) float32 in [-1, 1] (v / 8 - 1) and labels (1797,) int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    return images, torch.as_tensor(digits.target, dtype=torch.int64)


def digits_holdout_split(num_samples: int, holdout_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Fixed (train indices, held-out indices) of a random permutation; the training script and tests share it."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must lie in (0, 1); got {holdout_fraction}")
    permutation = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))
    holdout = round(num_samples * holdout_fraction)
    return permutation[holdout:], permutation[:holdout]


def load_digits_classifier(weights_path: str | PathLike | None = None) -> DigitsClassifier:
    """The trained classifier, from ``weights_path`` or the file shipped in the package (float32, eval mode)."""
    path = Path(weights_path).expanduser() if weights_path is not None else DIGITS_WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"digits classifier weights not found at {str(path)!r}; "
            "create them with `python scripts/train_digits_classifier.py`"
        )
    classifier = DigitsClassifier()
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    # load_state_dict copies into the float32 parameters, so a float16 file comes back as float32.
    classifier.load_state_dict(state_dict)
    classifier.requires_grad_(False)
    return classifier.eval()


class DigitsFeatureExtractor(FeatureExtractor):
    """64-d penultimate-layer features of `DigitsClassifier` for uint8 digits (B, 1 or 3, H, W) of any size."""

    name = "digits"
    feature_dim = DigitsClassifier.feature_dim

    def __init__(self, weights_path: str | PathLike | None = None) -> None:
        super().__init__()
        self.classifier = load_digits_classifier(weights_path)
        self.eval()

    def extract(self, images: Tensor) -> Tensor:
        return self.classifier.features(digits_classifier_input(images))

    def classify(self, images: Tensor) -> Tensor:
        """Logits (B, 10) of uint8 digits (B, 1 or 3, H, W)."""
        with torch.no_grad():
            return self.classifier(digits_classifier_input(images))
