"""Digits FID of a trained model: sampling through the interpolant conversion, and few-step solvers.

Loads a checkpoint of configs/experiments/digits.yaml (a velocity model on the linear path with gamma = 0; the
checkpoint's state_dict holds the EMA weights) and reports the digits FID (features of the shipped digits
classifier, si_lightning/metrics/digits.py) of N generated samples against all 1797 embedded digits:

1. conversion: the native path and the same network converted to other Gaussian-base paths, each with
   dopri5 (atol = rtol = ``--tolerance``), on disjoint seed blocks (the FID's seed-to-seed spread);
2. few steps: FID versus NFE for Heun, RK4, dpm++2m on uniform, cosine, log-SNR, EDM and pilot-fitted grids.

Usage: python benchmarks/digits_sampling.py CHECKPOINT [--samples 500] [--blocks 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from si_lightning.interpolants import Interpolant
from si_lightning.metrics import extract_features
from si_lightning.metrics.digits import DigitsFeatureExtractor, load_digits_data
from si_lightning.metrics.frechet import frechet_distance
from si_lightning.metrics.quantize import quantize_to_uint8
from si_lightning.module import InterpolantModule
from si_lightning.sampling import Fields, ODESampler, base_noise, convert_interpolant
from si_lightning.sampling.design import fit_local_error_grid

SHAPE = (1, 8, 8)


class DigitsFID:
    """FID of generated digits (N, 1, 8, 8) in [-1, 1] against the features of all embedded digits."""

    def __init__(self) -> None:
        self.extractor = DigitsFeatureExtractor().eval()
        images, self.labels = load_digits_data()
        self.real = extract_features(self.extractor, quantize_to_uint8(images))

    def __call__(self, samples: Tensor) -> float:
        return frechet_distance(extract_features(self.extractor, quantize_to_uint8(samples.clamp(-1, 1))), self.real)


def load_fields(checkpoint: str) -> Fields:
    module = InterpolantModule.load_from_checkpoint(checkpoint, map_location="cpu")
    module.eval().requires_grad_(False)
    return module.fields(ema=True)


def sample(fields: Fields, sampler: ODESampler, seeds: range) -> tuple[Tensor, int]:
    with torch.no_grad():
        result = sampler.sample(fields, base_noise(seeds, SHAPE))
    return result.x, result.nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--part", choices=["all", "conversion", "few-steps"], default="all")
    arguments = parser.parse_args()
    fid = DigitsFID()
    fields = load_fields(arguments.checkpoint)
    count = arguments.samples
    blocks = [range(index * count, (index + 1) * count) for index in range(arguments.blocks)]

    if arguments.part in ("all", "conversion"):
        names = ", ".join(f"{block.start}..{block.stop - 1}" for block in blocks)
        tolerance = arguments.tolerance
        print(f"Conversion: dopri5 (atol = rtol = {tolerance:g}), N = {count}, seed blocks {names}\n")
        print("| path | NFE (mean) | FID per seed block | mean +- std | seconds |")
        print("|---|---:|---|---:|---:|")
        paths = {"native: linear, gamma = 0": fields}
        for schedule, gamma, scale in (("trig", "zero", 1.0), ("sbdm", "zero", 1.0), ("linear", "brownian", 1.0)):
            target = Interpolant(schedule, gamma, scale, endpoint_eps=1e-4)
            paths[f"converted to {schedule}, gamma = {gamma}"] = convert_interpolant(fields, target)
        for name, path in paths.items():
            start = time.perf_counter()
            values, evaluations = [], []
            for seeds in blocks:
                x, nfe = sample(path, ODESampler("dopri5", atol=tolerance, rtol=tolerance), seeds)
                values.append(fid(x))
                evaluations.append(nfe)
            tensor = torch.tensor(values)
            print(
                f"| {name} | {sum(evaluations) / len(evaluations):.0f} | {', '.join(f'{v:.3f}' for v in values)} "
                f"| {tensor.mean():.3f} +- {tensor.std():.3f} | {time.perf_counter() - start:.0f} |",
                flush=True,
            )

    if arguments.part in ("all", "few-steps"):
        pilot = base_noise(range(10_000, 10_064), SHAPE)
        with torch.no_grad():
            fitted = fit_local_error_grid(fields, pilot, order=2)
        rows = [
            ("heun cosine", ODESampler("heun", 50, grid="cosine")),
            ("dpm++2m logsnr", ODESampler("dpm++2m", 100, grid="logsnr")),
            ("euler uniform", ODESampler("euler", 10)),
            ("heun uniform", ODESampler("heun", 5)),
            ("heun cosine", ODESampler("heun", 5, grid="cosine")),
            ("heun edm", ODESampler("heun", 5, grid="edm")),
            ("dpm++2m uniform", ODESampler("dpm++2m", 10)),
            ("dpm++2m cosine", ODESampler("dpm++2m", 10, grid="cosine")),
            ("dpm++2m logsnr", ODESampler("dpm++2m", 10, grid="logsnr")),
            ("dpm++2m edm", ODESampler("dpm++2m", 10, grid="edm")),
            ("dpm++2m fitted local-error", ODESampler("dpm++2m", 10, grid=fitted)),
            ("heun fitted local-error", ODESampler("heun", 5, grid=fitted)),
            ("dpm++2m logsnr", ODESampler("dpm++2m", 6, grid="logsnr")),
            ("dpm++2m uniform", ODESampler("dpm++2m", 6)),
        ]
        print(f"\nFew steps: N = {count}, seeds {blocks[0].start}..{blocks[0].stop - 1}; fitted grid: 64 pilot draws\n")
        print("| sampler | NFE | FID | seconds |")
        print("|---|---:|---:|---:|")
        for name, sampler in rows:
            start = time.perf_counter()
            x, nfe = sample(fields, sampler, blocks[0])
            print(f"| {name} | {nfe} | {fid(x):.3f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
