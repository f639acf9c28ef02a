"""RDBM, GOUB, BBDM and the plain coupling on digit restoration, with kNN-5 and the classical baselines.

For each task (in-painting, x2 super-resolution, denoising, de-raining) and bridge, trains the UNet of
configs/experiments/digits-rdbm-*.yaml for ``--steps`` steps per seed (or loads the EMA weights it saved
before under ``--models``), restores the 180 validation digits (image i degraded with the randomness of
seed i, as the RestorationCallback does) with one ODE sampler for every method (``--method``,
``--sampler-steps``, ``--grid``), and measures PSNR and SSIM over all pixels and over the untouched pixels
(those the degradation provably left as they were: ``cond.keep`` of the sigma = 0 coupling).

With ``--draws K`` every method restores each input K times, draw k with the coupling noise of (seed i,
draw k) as ``si-lightning sample --inputs --samples-per-input K`` does, and two rows are written: draw 0
alone (what a run with one sample per input returns) and the per-pixel mean of the K draws (the ``mean/``
of that command), at K times the NFE. ``--start noised`` starts each bridge draw from its own marginal at
t_start (x0 + gamma(t_start) m z) instead of the point x0, as DDBM-style samplers' first stochastic step.

    python experiments/restoration-bridges/run.py --steps 300 --seeds 0 1 --baselines --out results/x
    python experiments/restoration-bridges/table.py results/x

Each (task, bridge, seed) writes one JSON file, so runs can be split over processes and resumed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from si_lightning.callbacks import EMA
from si_lightning.callbacks.generation import held_out_data
from si_lightning.couplings import Coupling, Denoising, Inpainting, Rain, SuperResolution, gaussian_filter
from si_lightning.data import DigitsDataModule
from si_lightning.interpolants import Bridge
from si_lightning.module import InterpolantModule
from si_lightning.nn import UNet
from si_lightning.sampling import ODESampler

TASKS = ("inpainting", "superres", "denoising", "deraining")
BRIDGE_NAMES = ("rdbm", "goub", "bbdm", "plain")
PLAIN_SIGMA = 0.1  # the plain coupling's own base noise (digits-rdbm-bridge-plain.yaml)
COUNT = 180  # the validation digits
DATA_RANGE = 2.0
QUANTISATION_MSE = (DATA_RANGE / 255) ** 2 / 12  # uniform rounding to 256 levels
HERE = Path(__file__).resolve().parent


def coupling(task: str, sigma: float) -> Coupling:
    """The degradation of configs/experiments/digits-rdbm-{task}.yaml with base noise sigma."""
    if task == "inpainting":
        return Inpainting(tiles=64, hide_probability=0.3, sigma=sigma)
    if task == "superres":
        return SuperResolution(factor=2, sigma=sigma, mode="bilinear", keep_floor=True)
    if task == "denoising":
        return Denoising(noise_std=0.3, sigma=sigma)
    return Rain(streaks=3, intensity=1.0, sigma=sigma)


def build_module(task: str, bridge: str, cond_channels: int) -> InterpolantModule:
    """The UNet, bridge and optimiser of configs/experiments/digits-rdbm-{task}.yaml (untrained)."""
    backbone = UNet(
        data_shape=(1, 8, 8),
        cond_channels=cond_channels,
        model_channels=32,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        norm_groups=8,
    )
    return InterpolantModule(
        backbone,
        Bridge(bridge, noise_scale=0.25),
        prediction="velocity",
        optimizer=lambda parameters: torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.0),
        antithetic=bridge != "plain",
    )


def train(task: str, bridge: str, seed: int, steps: int) -> InterpolantModule:
    pl.seed_everything(seed, verbose=False)
    sigma = PLAIN_SIGMA if bridge == "plain" else 0.0
    data = DigitsDataModule(image_size=8, batch_size=64, seed=seed, coupling=coupling(task, sigma))
    module = build_module(task, bridge, data.cond_channels)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=[EMA(decay=0.995)],
    )
    trainer.fit(module, datamodule=data)
    return module.eval()


def trained_module(task: str, bridge: str, seed: int, steps: int, models: Path) -> tuple[InterpolantModule, float]:
    """(the module with the EMA weights as its backbone, training CPU seconds): loaded from
    ``models/{task}-{bridge}-seed{seed}.pt`` if a run saved it before, else trained and saved there."""
    path = models / f"{task}-{bridge}-seed{seed}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved["steps"] != steps:
            raise SystemExit(f"{path} holds a model of {saved['steps']} steps, expected {steps} (--steps)")
        cond_channels = DigitsDataModule(image_size=8, coupling=coupling(task, 0.0)).cond_channels
        module = build_module(task, bridge, cond_channels)
        module.backbone.load_state_dict(saved["ema_backbone"])
        return module.eval(), saved["training_cpu_seconds"]
    start = time.process_time()
    module = train(task, bridge, seed, steps)
    training_cpu = time.process_time() - start
    ema_backbone = module.weights_backbone(ema=True).state_dict()
    models.mkdir(parents=True, exist_ok=True)
    torch.save({"steps": steps, "training_cpu_seconds": training_cpu, "ema_backbone": ema_backbone}, path)
    module.backbone.load_state_dict(ema_backbone)  # the module alone (no trainer) samples with its backbone
    module.trainer = None
    return module, training_cpu


def psnr(prediction: torch.Tensor, truth: torch.Tensor, floor: float = 0.0) -> float:
    """10 log10(range^2 / max(MSE, floor)) over the given pixels (inf when they are equal and floor is 0)."""
    error = float((prediction - truth).double().pow(2).mean()) if prediction.numel() else float("nan")
    error = max(error, floor)
    return math.inf if error == 0 else 10 * math.log10(DATA_RANGE**2 / error)


def scores(restored: torch.Tensor, truth: torch.Tensor, untouched: torch.Tensor | None) -> dict[str, float]:
    """PSNR (mean over images) and SSIM (mean map) over all pixels; over the untouched pixels the PSNR of the
    pooled squared error (inf only if every untouched pixel of every image is exact) and the SSIM map's mean."""
    restored = restored.clamp(-1, 1).double()
    truth = truth.double()
    # An image restored exactly (de-raining: streaks on the background, clamped to -1) would make the mean over
    # images infinite: its MSE is floored at the 8-bit quantisation noise, (2 / 255)^2 / 12 (PSNR 58.9 dB).
    per_image = [psnr(restored[i], truth[i], QUANTISATION_MSE) for i in range(truth.shape[0])]
    _, ssim_map = structural_similarity_index_measure(
        restored, truth, data_range=DATA_RANGE, kernel_size=7, return_full_image=True
    )
    result = {"psnr_all": sum(per_image) / len(per_image), "ssim_all": float(ssim_map.mean())}
    result["images_at_floor"] = sum(value == psnr(truth[:1], truth[:1], QUANTISATION_MSE) for value in per_image)
    if untouched is not None:
        inside = untouched.bool().expand_as(truth)
        result["psnr_untouched"] = psnr(restored[inside], truth[inside])
        result["ssim_untouched"] = float(ssim_map[inside].mean())
        result["max_error_untouched"] = float((restored[inside] - truth[inside]).abs().max())
    return result


def evaluation_inputs(task: str, sigma: float, draw: int = 0):
    """Batch(x0, x1, cond) of the 180 validation digits (image i with the degradation of seed i and the coupling
    noise of (seed i, draw)) and the data module."""
    data = DigitsDataModule(image_size=8, batch_size=64, coupling=coupling(task, sigma))
    data.setup("fit")
    held = held_out_data(data, COUNT, seed=0)
    return held.inputs(list(range(held.x1.shape[0])), torch.device("cpu"), draw=draw), data


def noised_start(module: InterpolantModule, x0: torch.Tensor, keep: torch.Tensor | None, t_start: float, draw: int):
    """x0 + gamma(t_start) m z (``Interpolant.spread_start``), z from (draw): m = 1 - keep for rdbm, 1 otherwise,
    x0 itself for plain (gamma = 0). Its mean differs from the bridge's at t_start by beta(t_start) (x1 - x0)."""
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1000 + draw), dtype=x0.dtype)
    return module.interpolant.spread_start(x0, t_start, z, keep)


def restore(module: InterpolantModule, task: str, bridge: str, sampler: ODESampler, draws: int, start: str):
    """(every draw (K, 180, 1, 8, 8), NFE per draw)."""
    sigma = PLAIN_SIGMA if bridge == "plain" else 0.0
    fields = module.fields(ema=True)
    results, nfe = [], 0
    for draw in range(draws):
        inputs, _ = evaluation_inputs(task, sigma, draw)
        x0 = inputs.x0
        if start == "noised":
            t_start = module.interpolant.valid_interval()[0]
            x0 = noised_start(module, x0, inputs.cond.keep, t_start, draw)
        with torch.no_grad():
            result = sampler.sample(fields, x0, inputs.cond)
        results.append(result.x)
        nfe = result.nfe
    return torch.stack(results), nfe


def run_bridge(task: str, bridge: str, seed: int, steps: int, models: Path, options: argparse.Namespace) -> list[dict]:
    """Rows of one trained model: draw 0 from the start ``options.start`` and, with K > 1 draws, their mean;
    with the noised start also draw 0 from the point x0 (what ``sample --inputs`` writes for a bridge)."""
    module, training_cpu = trained_module(task, bridge, seed, steps, models)
    sampler = ODESampler(method=options.method, steps=options.sampler_steps, grid=options.grid)
    draws, nfe = restore(module, task, bridge, sampler, options.draws, options.start)
    inputs, _ = evaluation_inputs(task, 0.0)  # x1 and the untouched pixels: cond.keep of the sigma = 0 coupling
    common = {"task": task, "method": bridge, "seed": seed, "steps": steps, "training_cpu_seconds": training_cpu}
    common["sampler"] = repr(sampler)

    def row(estimate: str, restored: torch.Tensor, cost: int) -> dict:
        # Untouched pixels: None for denoising, which touches every pixel.
        return {**common, "estimate": estimate, "nfe": cost, **scores(restored, inputs.x1, inputs.cond.keep)}

    rows = []
    if options.start == "noised":  # gamma = 0 (plain): the noised start is x0 itself, draw 0 is the same
        point = (
            draws if module.interpolant.gamma_family.is_zero else restore(module, task, bridge, sampler, 1, "point")[0]
        )
        rows.append(row("x0 start, 1 draw", point[0], nfe))
    start = "x0 start" if options.start == "point" else "noised start"
    rows.append(row(f"{start}, 1 draw", draws[0], nfe))
    if options.draws > 1:
        rows.append(row(f"{start}, mean of {options.draws}", draws.mean(0), nfe * options.draws))
    return rows


def knn_restoration(task: str, inputs, train_images: torch.Tensor, neighbours: int = 5) -> torch.Tensor:
    """The mean of the k training images whose degraded version is nearest the input (on known pixels)."""
    degraded = inputs.cond.channels[:, -1:]  # the degraded image (in-painting: the masked image)
    if task == "superres":  # compare in the degraded space: U(D(x)) of every training image, all pixels
        candidates, weight = coupling(task, 0.0).low_resolution(train_images), torch.ones_like(degraded)
    else:  # in-painting and de-raining: on the known pixels only; denoising: on all
        candidates = train_images
        weight = torch.ones_like(degraded) if inputs.cond.keep is None else inputs.cond.keep
    distance = ((degraded[:, None] - candidates[None]) ** 2 * weight[:, None]).flatten(2).sum(-1)
    nearest = distance.topk(neighbours, largest=False).indices
    return train_images[nearest].mean(1)


def classical_restoration(
    task: str, inputs, mean_image: torch.Tensor, train_images: torch.Tensor
) -> tuple[str, torch.Tensor]:
    degraded = inputs.cond.channels[:, -1:]
    if task == "superres":
        return "bicubic", coupling(task, 0.0).bicubic(inputs.x1)
    if task in ("inpainting", "deraining"):
        keep = inputs.cond.keep.bool()
        return "mean fill", torch.where(keep, degraded, mean_image.expand_as(degraded))
    # Denoising: the Gaussian filter whose width restores the training digits best (0.3 to 1.5 pixels).
    noisy = train_images + 0.3 * torch.randn(train_images.shape, generator=torch.Generator().manual_seed(0))
    widths = [0.3, 0.5, 0.7, 1.0, 1.5]
    errors = [float((gaussian_filter(noisy, width) - train_images).pow(2).mean()) for width in widths]
    best = widths[errors.index(min(errors))]
    return f"Gaussian filter (width {best})", gaussian_filter(degraded, best)


def run_baselines(task: str) -> list[dict]:
    inputs, data = evaluation_inputs(task, 0.0)
    train_images = data.real_samples(len(data.dataset("train")), torch.Generator().manual_seed(0), split="train")
    mean_image = train_images.double().mean(0).float()
    rows = []
    restored = knn_restoration(task, inputs, train_images)
    rows.append({"task": task, "method": "kNN-5", "seed": 0, "nfe": 0, **scores(restored, inputs.x1, inputs.cond.keep)})
    name, restored = classical_restoration(task, inputs, mean_image, train_images)
    rows.append({"task": task, "method": name, "seed": 0, "nfe": 0, **scores(restored, inputs.x1, inputs.cond.keep)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--bridges", nargs="+", default=list(BRIDGE_NAMES), choices=BRIDGE_NAMES)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON files")
    parser.add_argument("--baselines", action="store_true", help="also the kNN-5 and classical rows")
    parser.add_argument("--models", type=Path, help="folder of the saved EMA weights (default models/STEPS-steps)")
    parser.add_argument("--method", default="heun", help="fixed-step ODE method (euler, heun, rk4)")
    parser.add_argument("--sampler-steps", type=int, default=10, help="steps of the ODE method")
    parser.add_argument("--grid", default="uniform", help="time grid (uniform, cosine)")
    parser.add_argument("--draws", type=int, default=1, help="K draws per input: also the row of their mean")
    parser.add_argument("--start", choices=("point", "noised"), default="point", help="bridges' start at t_start")
    options = parser.parse_args()
    models = options.models or HERE / "models" / f"{options.steps}-steps"
    options.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for task in options.tasks:
        if options.baselines:
            path = options.out / f"{task}-baselines.json"
            path.write_text(json.dumps(run_baselines(task), indent=1))
            print(path, flush=True)
        for seed in options.seeds:
            for bridge in options.bridges:
                path = options.out / f"{task}-{bridge}-seed{seed}.json"
                if path.exists():
                    continue
                rows = run_bridge(task, bridge, seed, options.steps, models, options)
                path.write_text(json.dumps(rows, indent=1))
                print(path, [round(row["psnr_all"], 2) for row in rows], flush=True)


if __name__ == "__main__":
    main()
