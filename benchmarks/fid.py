"""Our FID path against torch-fidelity's ``calculate_metrics`` on the same images and the same weights file.

Both sides compute FID from scratch for two sets of uint8 images: build the InceptionV3 from the weights
file, extract the 2048-d pool features batch by batch, take the Fréchet distance of the two Gaussians.
Ours: ``FrechetDistance(InceptionFeatureExtractor(weights_path))`` with ``update`` and ``compute``;
theirs: ``torch_fidelity.calculate_metrics(fid=True, feature_extractor_weights_path=...)`` without cache.

No download: the weights file is written here with random weights in exactly the format torch-fidelity
downloads (a ``torch.save`` of ``FeatureExtractorInceptionV3``'s state_dict). The values are then not
those of the real Inception, but both paths read the same file, so their difference is the path's own.
The two run interleaved; the figures are the ratio of images/s (ours / theirs, from median wall times,
or CPU times of the process with ``--clock cpu``) and the relative difference of the values.

    python benchmarks/fid.py --images 32 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch_fidelity
from torch import Tensor
from torch.utils.data import Dataset

from si_lightning.metrics import FrechetDistance, InceptionFeatureExtractor
from si_lightning.metrics.inception import write_random_inception_weights


class Images(Dataset):
    """uint8 (3, H, W) images, the input torch-fidelity takes from a Dataset."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def ours(real: Tensor, fake: Tensor, weights: Path, batch_size: int, device: torch.device) -> float:
    metric = FrechetDistance(InceptionFeatureExtractor(weights)).to(device)
    for images, is_real in ((real, True), (fake, False)):
        for first in range(0, images.shape[0], batch_size):
            metric.update(images[first : first + batch_size].to(device), real=is_real)
    return float(metric.compute())


def theirs(real: Tensor, fake: Tensor, weights: Path, batch_size: int, device: torch.device) -> float:
    metrics = torch_fidelity.calculate_metrics(
        input1=Images(real),
        input2=Images(fake),
        fid=True,
        feature_extractor_weights_path=str(weights),
        cuda=device.type == "cuda",
        batch_size=batch_size,
        cache=False,
        verbose=False,
        samples_shuffle=False,
    )
    return float(metrics[torch_fidelity.KEY_METRIC_FID])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=64, help="images per set (two sets)")
    parser.add_argument("--size", type=int, default=32, help="side of the (3, size, size) images")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time (CPU only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    shape = (args.images, 3, args.size, args.size)
    real = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    fake = (torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8) // 2) + 32  # a shifted set
    # --clock cpu: CPU time of this process (a shared machine's wall time measures the wait for a core; the
    # Inception forward passes run here on both paths, torch-fidelity's loader workers only index a tensor).
    clock = time.process_time if args.clock == "cpu" and device.type != "cuda" else time.perf_counter
    times: dict[str, list[float]] = {"ours": [], "torch-fidelity": []}
    values: dict[str, list[float]] = {"ours": [], "torch-fidelity": []}
    paths = {"ours": ours, "torch-fidelity": theirs}
    with tempfile.TemporaryDirectory() as directory:
        weights = Path(directory) / "random-inception.pth"
        write_random_inception_weights(weights)
        for round_index in range(args.rounds):
            order = list(paths) if round_index % 2 == 0 else list(reversed(paths))
            for name in order:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = clock()
                values[name].append(paths[name](real, fake, weights, args.batch_size, device))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[name].append(clock() - start)
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    ours_time, theirs_time = statistics.median(times["ours"]), statistics.median(times["torch-fidelity"])
    per_round = [b / a for a, b in zip(times["ours"], times["torch-fidelity"], strict=True)]
    value, reference = values["ours"][0], values["torch-fidelity"][0]
    print(
        f"\n{args.images} + {args.images} images of {args.size}x{args.size}, batch {args.batch_size}, "
        f"device {device}, {torch.get_num_threads()} threads, {args.rounds} rounds\n"
    )
    print("| path | FID | median seconds | images/s |")
    print("|---|---:|---:|---:|")
    for name, seconds in (("ours", ours_time), ("torch-fidelity", theirs_time)):
        print(f"| {name} | {values[name][0]:.8g} | {seconds:.2f} | {2 * args.images / seconds:.2f} |")
    print(
        f"\nimages/s ours / torch-fidelity: {theirs_time / ours_time:.3f} "
        f"(rounds {min(per_round):.3f} to {max(per_round):.3f})"
    )
    print(f"relative difference of the values: {abs(value - reference) / abs(reference):.2e}")
    repeat_spread = max(values["ours"]) - min(values["ours"])
    print(f"spread of our value over the rounds: {repeat_spread:.2e}")


if __name__ == "__main__":
    main()
