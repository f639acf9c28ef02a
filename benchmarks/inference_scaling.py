"""Inference-time search on digits: reward and diversity versus total NFE for each search method.

An unconditional digits model (a checkpoint of configs/experiments/digits.yaml) is asked for one digit: the
reward of an image is log p(digit | image) under the shipped digits classifier (si_lightning/metrics/digits.py),
evaluated on the predicted data E[x1 | x_t] along the way and on the final sample. For each method (best-of-N
as the baseline, SMC with temperature 1, i.e. targeting p(x | digit), and 5, beam search, rollover budget forcing)
and each budget (total NFE per sample), it reports the mean reward, the accuracy (classifier's argmax equals
the digit) and the diversity (mean pairwise Euclidean distance between the samples, in pixels of [-1, 1]),
prints a Markdown table and saves a plot.

Usage: python benchmarks/inference_scaling.py CHECKPOINT [--digit 3] [--samples 24] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from si_lightning.metrics.digits import load_digits_classifier  # noqa: E402
from si_lightning.module import InterpolantModule  # noqa: E402
from si_lightning.sampling import BeamSearch, BestOfN, RolloverBudgetForcing, SequentialMonteCarlo  # noqa: E402


class ClassifierReward:
    """log p(label | image) of the digits classifier: images (n, 1, 8, 8) in [-1, 1], labels (n,) -> (n,)."""

    def __init__(self) -> None:
        self.classifier = load_digits_classifier()

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            logits = self.classifier(images.clamp(-1, 1).float())
        return torch.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).double()

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        with torch.no_grad():
            return float((self.classifier(images.clamp(-1, 1).float()).argmax(1) == labels).float().mean())


def diversity(images: Tensor) -> float:
    """Mean pairwise Euclidean distance between the images (n, ...)."""
    flat = images.flatten(1).double()
    distances = torch.cdist(flat, flat)
    count = flat.shape[0]
    return float(distances.sum() / (count * (count - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--digit", type=int, default=3)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--output", default="benchmarks/inference_scaling.png")
    arguments = parser.parse_args()
    module = InterpolantModule.load_from_checkpoint(arguments.checkpoint, map_location="cpu")
    module.eval().requires_grad_(False)
    fields = module.fields(ema=True)
    reward = ClassifierReward()
    labels = torch.full((arguments.samples,), arguments.digit, dtype=torch.long)
    seeds = range(arguments.samples)
    common = dict(steps=arguments.steps, diffusion="sigma", scale=1.0, last_step_size=0.02)
    methods = {
        "best-of-N": lambda: BestOfN(**common),
        "SMC (temperature 1)": lambda: SequentialMonteCarlo(**common, temperature=1.0, ess_threshold=0.5),
        "SMC (temperature 5)": lambda: SequentialMonteCarlo(**common, temperature=5.0, ess_threshold=0.5),
        "beam (2 beams x 2)": lambda: BeamSearch(**common, beams=2, width=2),
        "rollover budget forcing": lambda: RolloverBudgetForcing(**common),
    }
    path = arguments.steps + 1
    print(
        f"digit {arguments.digit}, {arguments.samples} samples (seeds 0..{arguments.samples - 1}), SDE with "
        f"eps = alpha_bar, {arguments.steps} steps (one path: {path} NFE)\n"
    )
    print("| method | budget (NFE / sample) | NFE spent | mean log p(digit) | accuracy | diversity | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    curves: dict[str, list[tuple[float, float, float, float]]] = {}
    for name, build in methods.items():
        for multiple in arguments.multiples:
            budget = multiple * path
            if name.startswith("beam") and budget < 2 * path:
                continue
            start = time.perf_counter()
            with torch.no_grad():
                result = build().search(fields, reward, seeds, (1, 8, 8), budget, labels=labels)
            seconds = time.perf_counter() - start
            final = reward(result.x, labels)
            accuracy, spread = reward.accuracy(result.x, labels), diversity(result.x)
            curves.setdefault(name, []).append((result.nfe, float(final.mean()), accuracy, spread))
            print(
                f"| {name} | {budget} | {result.nfe:.1f} | {float(final.mean()):.3f} | {accuracy:.3f} | {spread:.3f} "
                f"| {seconds:.0f} |",
                flush=True,
            )
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, points in curves.items():
        nfe, value, accuracy, spread = zip(*points, strict=True)
        for axis, series in zip(axes, (value, accuracy, spread), strict=True):
            axis.plot(nfe, series, marker="o", label=name, linestyle="--" if name == "best-of-N" else "-")
    for axis, label in zip(axes, ("mean log p(digit | x)", "accuracy", "diversity (mean pairwise L2)"), strict=True):
        axis.set(xscale="log", xlabel="NFE per sample", ylabel=label)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Search on an unconditional digits model for the digit {arguments.digit}")
    figure.tight_layout()
    figure.savefig(arguments.output, dpi=110)
    print(f"\nplot: {arguments.output}")


if __name__ == "__main__":
    main()
