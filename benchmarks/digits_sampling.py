"""Digits FID of a trained model: EMA against raw weights, sampling through the conversion, and few-step solvers.

Loads a checkpoint of configs/experiments/digits.yaml (a velocity model on the linear path with gamma = 0; the
checkpoint holds the EMA weights in ``state_dict`` and the raw weights in ``current_model_state``) and reports
the digits FID (features of the shipped digits classifier, si_lightning/metrics/digits.py) of N generated
samples against N training digits: the protocol of the demo's FIDCallback (``split: train``, ``real_seed: 0``),
so the numbers compare with the demo's. Every table starts with the floor: N other training digits (disjoint
from the reference) against the same reference, as many disjoint draws as the split holds.

1. conversion: the native path (EMA and raw weights) and the same EMA network converted to other Gaussian-base
   paths, each with dopri5 (atol = rtol = ``--tolerance``), on disjoint seed blocks (the FID's seed spread);
2. few steps: FID versus NFE for Euler, Heun and dpm++2m on uniform, cosine, log-SNR, EDM and
   pilot-fitted grids, EMA and raw weights.

Usage: python benchmarks/digits_sampling.py CHECKPOINT [--samples 500] [--blocks 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from si_lightning.commands.checkpoints import load_model
from si_lightning.data import DigitsDataModule
from si_lightning.interpolants import Interpolant
from si_lightning.metrics import extract_features
from si_lightning.metrics.digits import DigitsFeatureExtractor
from si_lightning.metrics.frechet import frechet_distance
from si_lightning.metrics.quantize import quantize_to_uint8
from si_lightning.sampling import Fields, ODESampler, base_noise, convert_interpolant
from si_lightning.sampling.design import fit_local_error_grid

SHAPE = (1, 8, 8)
REAL_SEED = 0  # FIDCallback's default: the reference is the first N points of this permutation of the train split


class DigitsFID:
    """FID of N digits (N, 1, 8, 8) in [-1, 1] against N training digits, and the real-versus-real floor."""

    def __init__(self, count: int) -> None:
        self.extractor = DigitsFeatureExtractor().eval()
        self.data = DigitsDataModule()
        self.count = count
        self.real = self.features(self.real_draw(0))

    def real_draw(self, index: int) -> Tensor:
        """Draw ``index`` of N training digits (0: the reference; 1, 2, ...: disjoint from it and each other)."""
        generator = torch.Generator().manual_seed(REAL_SEED)
        return self.data.real_samples(self.count, generator, split="train", skip=index * self.count)

    def features(self, images: Tensor) -> Tensor:
        return extract_features(self.extractor, quantize_to_uint8(images.clamp(-1, 1)))

    def __call__(self, samples: Tensor) -> float:
        return frechet_distance(self.features(samples), self.real)

    def floors(self) -> list[float]:
        """The FID of every further disjoint draw of N real digits."""
        draws = len(self.data.dataset("train")) // self.count - 1
        return [self(self.real_draw(index)) for index in range(1, draws + 1)]


def sample(fields: Fields, sampler: ODESampler, seeds: range) -> tuple[Tensor, int]:
    with torch.no_grad():
        result = sampler.sample(fields, base_noise(seeds, SHAPE))
    return result.x, result.nfe


def spread(values: list[float]) -> str:
    tensor = torch.tensor(values, dtype=torch.float64)
    return f"{tensor.mean():.2f} +- {tensor.std():.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def conversion_table(fid: DigitsFID, weights: dict[str, Fields], blocks: list[range], tolerance: float) -> None:
    names = ", ".join(f"{block.start}..{block.stop - 1}" for block in blocks)
    print(f"Conversion: dopri5 (atol = rtol = {tolerance:g}), N = {fid.count}, seed blocks {names}\n")
    print("| path | weights | NFE (mean) | FID per seed block | mean +- std | seconds |")
    print("|---|---|---:|---|---:|---:|")
    floors = fid.floors()
    print(f"| real vs real (floor) | - | - | {', '.join(f'{v:.2f}' for v in floors)} | {spread(floors)} | - |")
    paths = {("native: linear, gamma = 0", name): fields for name, fields in weights.items()}
    for schedule, gamma in (("trig", "zero"), ("sbdm", "zero"), ("linear", "brownian")):
        target = Interpolant(schedule, gamma, 1.0, endpoint_eps=1e-4)
        paths[(f"converted to {schedule}, gamma = {gamma}", "ema")] = convert_interpolant(weights["ema"], target)
    for (name, weight), path in paths.items():
        start = time.perf_counter()
        values, evaluations = [], []
        for seeds in blocks:
            x, nfe = sample(path, ODESampler("dopri5", atol=tolerance, rtol=tolerance), seeds)
            values.append(fid(x))
            evaluations.append(nfe)
        print(
            f"| {name} | {weight} | {sum(evaluations) / len(evaluations):.0f} | "
            f"{', '.join(f'{v:.2f}' for v in values)} | {spread(values)} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )


def few_steps_table(fid: DigitsFID, weights: dict[str, Fields], seeds: range) -> None:
    pilot = base_noise(range(10_000, 10_064), SHAPE)
    with torch.no_grad():
        fitted = fit_local_error_grid(weights["ema"], pilot, order=2)
    rows = [
        ("heun cosine", lambda grid: ODESampler("heun", 50, grid="cosine")),
        ("euler uniform", lambda grid: ODESampler("euler", 10)),
        ("heun uniform", lambda grid: ODESampler("heun", 5)),
        ("heun uniform", lambda grid: ODESampler("heun", 20)),
        ("heun edm", lambda grid: ODESampler("heun", 5, grid="edm")),
        ("dpm++2m uniform", lambda grid: ODESampler("dpm++2m", 10)),
        ("dpm++2m cosine", lambda grid: ODESampler("dpm++2m", 10, grid="cosine")),
        ("dpm++2m logsnr", lambda grid: ODESampler("dpm++2m", 10, grid="logsnr")),
        ("dpm++2m edm", lambda grid: ODESampler("dpm++2m", 10, grid="edm")),
        ("dpm++2m fitted local-error", lambda grid: ODESampler("dpm++2m", 10, grid=grid)),
        ("dpm++2m logsnr", lambda grid: ODESampler("dpm++2m", 6, grid="logsnr")),
    ]
    print(f"\nFew steps: N = {fid.count}, seeds {seeds.start}..{seeds.stop - 1}; fitted grid: 64 pilot draws (EMA)\n")
    print("| sampler | NFE | FID, EMA weights | FID, raw weights | seconds |")
    print("|---|---:|---:|---:|---:|")
    print(f"| real vs real (floor) | - | {spread(fid.floors())} | - | - |")
    for name, build in rows:
        start = time.perf_counter()
        values = {}
        for weight, fields in weights.items():
            x, nfe = sample(fields, build(fitted), seeds)
            values[weight] = fid(x)
        print(
            f"| {name} | {nfe} | {values['ema']:.2f} | {values['raw']:.2f} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--part", choices=["all", "conversion", "few-steps"], default="all")
    arguments = parser.parse_args()
    fid = DigitsFID(arguments.samples)
    weights = {name: load_model(arguments.checkpoint, name).fields(ema=True) for name in ("ema", "raw")}
    count = arguments.samples
    blocks = [range(index * count, (index + 1) * count) for index in range(arguments.blocks)]
    if arguments.part in ("all", "conversion"):
        conversion_table(fid, weights, blocks, arguments.tolerance)
    if arguments.part in ("all", "few-steps"):
        few_steps_table(fid, weights, blocks[0])


if __name__ == "__main__":
    main()
