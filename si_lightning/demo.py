"""`make demo`: train on the embedded digits, then sample with the EMA weights and report.

    python -m si_lightning.demo [--trainer.max_steps 500] [--trainer.accelerator gpu]

Trains configs/experiments/digits.yaml (any extra CLI arguments are passed through), then writes into
the run directory: the config (LightningCLI), the checkpoint, ``samples.png`` (real digits beside ODE
and SDE samples, seeds 0..N-1), and ``demo_metrics.csv``. The figure it reports is the distance from
each sample to its nearest training digit, next to the same distance for held-out real digits (what
a perfect model scores) and for Gaussian noise (what an untrained one scores).
"""

from __future__ import annotations

import csv
import io
import sys
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
EVALUATION_KEYS = ("fid", "kid", "bits-per-dim", "nats")


def fid_of_noise(trainer: Trainer, shape: tuple[int, ...], device: torch.device) -> float | None:
    """The FID callback's distance for Gaussian noise clamped to [-1, 1]: what an untrained model scores."""
    callback = next((c for c in trainer.callbacks if isinstance(c, FIDCallback)), None)
    if callback is None or callback.real_statistics is None:
        return None
    metric, _ = callback.metrics_for(device)
    metric.update(base_noise(range(callback.num_samples), shape, device=device).clamp(-1, 1), real=False)
    return float(metric.compute())


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
    cli: InterpolantCLI = build_cli(["fit", "-c", str(CONFIG), *arguments])
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
    noise_fid = fid_of_noise(trainer, shape, device)
    if noise_fid is not None:
        figures["fid-digits/gaussian-noise"] = noise_fid
    grid = directory / "samples.png"
    write_grid(grid, {"real": held_out.cpu(), "ode": ode.x.cpu(), "sde": sde.x.cpu()})
    table = directory / "demo_metrics.csv"
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["metric", "value"])
    writer.writerows(sorted(figures.items()))
    write_atomically(table, rows.getvalue().encode())
    print(f"\nRun directory: {directory}")
    print(f"  config:      {directory / 'config.yaml'}")
    print(f"  checkpoint:  {directory / 'checkpoints' / 'last.ckpt'}")
    print(f"  samples:     {grid}  (left: held-out real digits, middle: ODE heun-50, right: SDE 100 steps)")
    print(f"  metrics:     {table}")
    print("\nNearest-training-digit RMS distance (lower is closer to real digits):")
    for key in ("held_out_real", "ode", "sde", "noise"):
        print(f"  {key:>14}: {figures[f'nearest_distance/{key}']:.3f}")
    print("\nEvaluation (digits-classifier FID against 500 training digits; bits/dim of validation digits):")
    for key, value in sorted(figures.items()):
        if key.startswith(EVALUATION_KEYS):
            print(f"  {key}: {value:.3f}")
    return figures


def main() -> None:
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
