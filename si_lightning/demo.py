"""`make demo`: train on the embedded digits, then sample with the EMA weights and report.

    python -m si_lightning.demo [--trainer.max_steps 500] [--trainer.accelerator gpu]

Trains configs/experiments/digits.yaml (any extra CLI arguments are passed through; ``--seed_everything S``
also seeds the data), then writes into the run directory: the config (LightningCLI), the checkpoint,
``samples.png`` (real digits beside ODE and SDE samples, seeds 0..N-1), and ``demo_metrics.csv``. It
prints each sampler's digits FID beside the floor at the same N (N real digits disjoint from the
reference against the same reference: what a perfect model scores) and Gaussian noise's (what an
untrained one scores), the distance from each sample to its nearest training digit, and the wall time.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from torch import Tensor
from torchvision.utils import make_grid, save_image

from si_lightning.callbacks import FIDCallback
from si_lightning.callbacks.artifacts import run_directory
from si_lightning.cli import InterpolantCLI, build_cli
from si_lightning.files import write_atomically
from si_lightning.sampling import ODESampler, SDESampler, base_noise

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIG = REPOSITORY / "configs" / "experiments" / "digits.yaml"
SAMPLES = 100
EVALUATION_KEYS = ("fid", "kid", "bits-per-dim", "nats", "nfe/")


def digits_fid_callback(trainer: Trainer) -> FIDCallback | None:
    """The run's FID callback, once its real statistics are loaded."""
    callback = next((c for c in trainer.callbacks if isinstance(c, FIDCallback)), None)
    return callback if callback is not None and callback.real_statistics is not None else None


def fid_of_images(callback: FIDCallback, images: Tensor) -> float:
    """The FID callback's distance of ``images`` (N, C, H, W) in [-1, 1] to its real statistics."""
    metric, _ = callback.metrics_for(images.device)
    metric.update(images, real=False)
    return float(metric.compute())


def fid_floors(trainer: Trainer, data: object, shape: tuple[int, ...], device: torch.device) -> dict[str, float]:
    """The FID callback's distance for N real digits disjoint from its reference set (what a perfect model
    scores at this N) and for N Gaussian-noise images clamped to [-1, 1] (what an untrained one scores)."""
    callback = digits_fid_callback(trainer)
    if callback is None:
        return {}
    count = callback.num_samples
    generator = torch.Generator().manual_seed(callback.real_seed)  # the reference's permutation, shifted by N
    real = data.real_samples(count, generator, split=callback.split, skip=count).to(device)
    noise = base_noise(range(count), shape, device=device).clamp(-1, 1)
    return {
        f"fid-digits/real-vs-real/n{count}": fid_of_images(callback, real),
        f"fid-digits/gaussian-noise/n{count}": fid_of_images(callback, noise),
    }


def with_data_seed(arguments: list[str]) -> list[str]:
    """``--seed_everything S`` also seeds the data order and noise (``--data.init_args.seed``) unless that is given,
    so two demo seeds are two independent runs, not one data stream with two initialisations."""
    if any(argument.startswith("--data.init_args.seed") for argument in arguments):
        return arguments
    for index, argument in enumerate(arguments):
        if argument.startswith("--seed_everything="):
            return [*arguments, f"--data.init_args.seed={argument.split('=', 1)[1]}"]
        if argument == "--seed_everything" and index + 1 < len(arguments):
            return [*arguments, "--data.init_args.seed", arguments[index + 1]]
    return arguments


def nearest_distance(samples: Tensor, reference: Tensor) -> Tensor:
    """Root-mean-square pixel distance from each sample (N, ...) to its nearest reference image (M, ...)."""
    distances = torch.cdist(samples.flatten(1).double(), reference.flatten(1).double())
    return distances.min(dim=1).values / samples[0].numel() ** 0.5


def write_grid(path: Path, rows: dict[str, Tensor], scale: int = 4) -> None:
    """One block of 10 x 10 images per entry, side by side, images in [-1, 1] up-scaled ``scale`` times."""
    blocks = []
    for images in rows.values():
        images = torch.nn.functional.interpolate(images.clamp(-1, 1), scale_factor=scale, mode="nearest")
        blocks.append(make_grid((images + 1) / 2, nrow=10, padding=2, pad_value=1.0))
        blocks.append(torch.full((3, blocks[-1].shape[1], 8), 0.5))  # a grey gap between the blocks
    buffer = io.BytesIO()
    save_image(torch.cat(blocks[:-1], dim=-1), buffer, format="png")
    write_atomically(path, buffer.getvalue())


def run(arguments: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    cli: InterpolantCLI = build_cli(["fit", "-c", str(CONFIG), *with_data_seed(arguments)])
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    directory = run_directory(trainer)
    if trainer.global_rank != 0:
        return {}
    model.eval()
    device = model.device
    fields = model.fields()  # EMA weights
    shape = data.data_shape
    x0 = base_noise(range(SAMPLES), shape, device=device)
    with torch.no_grad():
        ode = ODESampler(method="heun", steps=50).sample(fields, x0)
        sde = SDESampler(steps=100, diffusion="sigma", scale=1.0, last_step="mean").sample(
            fields, x0, seeds=range(SAMPLES)
        )
    training = data.real_samples(len(data.dataset("train")), split="train").to(device)
    held_out = data.real_samples(SAMPLES, torch.Generator().manual_seed(0), split="val").to(device)
    noise = base_noise(range(SAMPLES, 2 * SAMPLES), shape, device=device).clamp(-1, 1)
    figures = {
        "nearest_distance/ode": nearest_distance(ode.x.clamp(-1, 1), training).mean().item(),
        "nearest_distance/sde": nearest_distance(sde.x.clamp(-1, 1), training).mean().item(),
        "nearest_distance/held_out_real": nearest_distance(held_out, training).mean().item(),
        "nearest_distance/noise": nearest_distance(noise, training).mean().item(),
        "nfe/ode": float(ode.nfe),
        "nfe/sde": float(sde.nfe),
        "train/loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
    }
    figures.update(
        {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith(EVALUATION_KEYS)}
    )
    figures.update(fid_floors(trainer, data, shape, device))
    grid = directory / "samples.png"
    write_grid(grid, {"real": held_out.cpu(), "ode": ode.x.cpu(), "sde": sde.x.cpu()})
    table = directory / "demo_metrics.csv"
    print(f"\nRun directory: {directory}")
    print(f"  config:      {directory / 'config.yaml'}")
    print(f"  checkpoint:  {directory / 'checkpoints' / 'last.ckpt'}")
    print(f"  samples:     {grid}  (left: held-out real digits, middle: ODE heun-50, right: SDE 100 steps)")
    print(f"  metrics:     {table}")
    print("\nNearest-training-digit RMS distance (lower is closer to real digits):")
    for key in ("held_out_real", "ode", "sde", "noise"):
        print(f"  {key:>14}: {figures[f'nearest_distance/{key}']:.3f}")
    figures["wall_seconds"] = time.perf_counter() - started
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["metric", "value"])
    writer.writerows(sorted(figures.items()))
    write_atomically(table, rows.getvalue().encode())
    print_evaluation(figures)
    print(f"\nWall time: {figures['wall_seconds']:.0f} s (training, evaluation and this report)")
    return figures


def print_evaluation(figures: dict[str, float]) -> None:
    """The digits FID of each sampler beside the real-versus-real floor at the same N, then bits/dim."""
    fids = {key: value for key, value in figures.items() if key.startswith("fid-digits/")}
    floors = {key: value for key, value in fids.items() if key.split("/")[1] in ("real-vs-real", "gaussian-noise")}
    print("\nDigits FID (features of the shipped digits classifier, against N training digits; lower is better):")
    for key, value in sorted(fids.items()):
        if key in floors:
            continue
        _, sampler, count = key.split("/")
        floor = floors.get(f"fid-digits/real-vs-real/{count}")
        nfe = figures.get(f"nfe/{sampler}/{count}")
        beside = "" if floor is None else f"   (floor: real vs real {floor:.1f})"
        print(f"  {sampler} ({'' if nfe is None else f'NFE {nfe:.0f}, '}N = {count[1:]}): {value:.1f}{beside}")
    for key, value in sorted(floors.items()):
        _, kind, count = key.split("/")
        print(f"  {kind} (N = {count[1:]}): {value:.1f}")
    for key, value in sorted(figures.items()):
        if key.startswith(("bits-per-dim", "nats", "kid")):
            print(f"  {key}: {value:.3f}")


def main() -> None:
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
