"""Share of the requested digit and diversity of ``sample`` outputs, with the real digits as the floor.

    python experiments/conditional/requested_digit.py --digit 3 OUT_DIR [OUT_DIR ...]

For each directory (a ``si-lightning sample`` output): the share of its samples that the shipped digits
classifier reads as ``--digit``, the diversity (mean pairwise L2 distance of the classifier's 64-d
features among the samples), and the NFE per sample of its record.json. The last row is the real
digits of that class (all of sklearn's embedded digits with that label): the diversity to aim for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from si_lightning.metrics import quantize_to_uint8
from si_lightning.metrics.digits import DigitsFeatureExtractor, load_digits_data


def measure(extractor: DigitsFeatureExtractor, images: torch.Tensor, digit: int) -> tuple[float, float]:
    """(share read as ``digit``, mean pairwise feature distance) of uint8 images (N, 1, H, W)."""
    with torch.no_grad():
        share = float((extractor.classify(images).argmax(1) == digit).double().mean())
        features = extractor.extract(images).double()
    distances = torch.cdist(features, features)
    count = features.shape[0]
    return share, float(distances.sum() / (count * (count - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--digit", type=int, required=True)
    parser.add_argument("outputs", nargs="+")
    arguments = parser.parse_args()
    extractor = DigitsFeatureExtractor().eval()
    print("| samples | NFE per sample | requested digit drawn | diversity (feature distance) |")
    print("|---|---|---|---|")
    for output in arguments.outputs:
        with np.load(Path(output) / "samples.npz") as loaded:
            images = torch.from_numpy(loaded["arr_0"]).permute(0, 3, 1, 2).contiguous()
        record = json.loads((Path(output) / "record.json").read_text())
        share, diversity = measure(extractor, images, arguments.digit)
        print(f"| {Path(output).name} | {record['nfe_per_sample']:.0f} | {100 * share:.1f} % | {diversity:.2f} |")
    real, labels = load_digits_data()
    share, diversity = measure(extractor, quantize_to_uint8(real[labels == arguments.digit]), arguments.digit)
    print(f"| real digits {arguments.digit} ({int((labels == arguments.digit).sum())}) | | {100 * share:.1f} % "
          f"| {diversity:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
