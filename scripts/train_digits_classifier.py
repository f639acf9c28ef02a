"""Train the digits classifier behind the digits FID extractor and save its weights.

    python scripts/train_digits_classifier.py [--output si_lightning/weights/digits_classifier.pt]

Deterministic on the CPU (fixed seeds, one thread, deterministic kernels), well under a minute.
Each training batch is rendered as the extractor will see it: up-sampled by 1, 2 or 4 (nearest
or bilinear, as a data module may store the digits), quantised to uint8, then mapped back by
`digits_classifier_input` (area down-sampling to 8 x 8). Prints the held-out accuracy on the fixed
split `digits_holdout_split`; the weights are saved as a float32 state_dict (about 0.3 MB).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from si_lightning.metrics.digits import (
    DIGITS_WEIGHTS_PATH,
    DigitsClassifier,
    digits_classifier_input,
    digits_holdout_split,
    load_digits_data,
)
from si_lightning.metrics.quantize import quantize_to_uint8

RENDERINGS = [(1, "nearest"), (2, "nearest"), (4, "nearest"), (2, "bilinear"), (4, "bilinear")]


def render(images: Tensor, factor: int, mode: str) -> Tensor:
    """Digits in [-1, 1] (B, 1, 8, 8) -> uint8 (B, 1, 8 factor, 8 factor), as stored or generated."""
    if factor > 1:
        options = {"align_corners": False} if mode == "bilinear" else {}
        images = F.interpolate(images, scale_factor=factor, mode=mode, **options)
    return quantize_to_uint8(images)


def accuracy(classifier: DigitsClassifier, images: Tensor, labels: Tensor, factor: int, mode: str) -> float:
    """Held-out accuracy of the classifier on digits rendered at 8 factor x 8 factor."""
    with torch.no_grad():
        logits = classifier(digits_classifier_input(render(images, factor, mode)))
    return float((logits.argmax(dim=1) == labels).double().mean())


def train(epochs: int, batch_size: int, seed: int) -> tuple[DigitsClassifier, Tensor, Tensor]:
    torch.manual_seed(seed)
    images, labels = load_digits_data()
    train_index, holdout_index = digits_holdout_split(len(images))
    train_images, train_labels = images[train_index], labels[train_index]
    classifier = DigitsClassifier()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_images), generator=generator)
        for batch in order.split(batch_size):
            factor, mode = RENDERINGS[int(torch.randint(len(RENDERINGS), (), generator=generator))]
            inputs = digits_classifier_input(render(train_images[batch], factor, mode))
            loss = F.cross_entropy(classifier(inputs), train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    classifier.eval()
    return classifier, images[holdout_index], labels[holdout_index]


def save_atomically(state_dict: dict[str, Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state_dict, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DIGITS_WEIGHTS_PATH)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    classifier, holdout_images, holdout_labels = train(arguments.epochs, arguments.batch_size, arguments.seed)
    for factor, mode in RENDERINGS:
        print(
            f"held-out accuracy at {8 * factor}x{8 * factor} ({mode}): "
            f"{accuracy(classifier, holdout_images, holdout_labels, factor, mode):.4f}"
        )
    state_dict = {key: value.detach().to(torch.float32).contiguous() for key, value in classifier.state_dict().items()}
    save_atomically(state_dict, arguments.output)
    size = arguments.output.stat().st_size
    print(f"saved {arguments.output} ({size / 1024:.0f} KiB) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
