"""RDBM, GOUB, BBDM and the plain coupling on digit restoration, with kNN-5 and the classical baselines.

For each task (in-painting, x2 super-resolution, denoising, de-raining) and bridge, trains the UNet of
configs/experiments/digits-rdbm-*.yaml for ``--steps`` steps per seed, restores the 180 validation digits
(image i degraded with the randomness of seed i, as the RestorationCallback does) with Heun, 10 steps
(NFE 19) for every bridge, and measures PSNR and SSIM over all pixels and over the untouched pixels
(those the degradation provably left as they were: ``cond.keep`` of the sigma = 0 coupling).

    python experiments/restoration-bridges/run.py --steps 100 --seeds 0 1 --baselines --out results
    python experiments/restoration-bridges/table.py results

(The measured files are in experiments/restoration-bridges/results/, one folder per step count.)

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


def coupling(task: str, sigma: float) -> Coupling:
    """The degradation of configs/experiments/digits-rdbm-{task}.yaml with base noise sigma."""
    if task == "inpainting":
        return Inpainting(tiles=64, hide_probability=0.3, sigma=sigma)
    if task == "superres":
        return SuperResolution(factor=2, sigma=sigma, mode="bilinear", keep_floor=True)
    if task == "denoising":
        return Denoising(noise_std=0.3, sigma=sigma)
    return Rain(streaks=3, intensity=1.0, sigma=sigma)


def train(task: str, bridge: str, seed: int, steps: int) -> InterpolantModule:
    pl.seed_everything(seed, verbose=False)
    sigma = PLAIN_SIGMA if bridge == "plain" else 0.0
    data = DigitsDataModule(image_size=8, batch_size=64, seed=seed, coupling=coupling(task, sigma))
    backbone = UNet(
        data_shape=(1, 8, 8),
        cond_channels=data.cond_channels,
        model_channels=32,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        norm_groups=8,
    )
    module = InterpolantModule(
        backbone,
        Bridge(bridge, noise_scale=0.25),
        prediction="velocity",
        optimizer=lambda parameters: torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.0),
        antithetic=bridge != "plain",
    )
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


def psnr(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    """10 log10(range^2 / MSE) over the given pixels (inf when they are equal)."""
    error = float((prediction - truth).double().pow(2).mean()) if prediction.numel() else float("nan")
    return math.inf if error == 0 else 10 * math.log10(DATA_RANGE**2 / error)


def scores(restored: torch.Tensor, truth: torch.Tensor, untouched: torch.Tensor | None) -> dict[str, float]:
    """PSNR (mean over images) and SSIM (mean map) over all pixels; over the untouched pixels the PSNR of the
    pooled squared error (inf only if every untouched pixel of every image is exact) and the SSIM map's mean."""
    restored = restored.clamp(-1, 1).double()
    truth = truth.double()
    per_image = [psnr(restored[i], truth[i]) for i in range(truth.shape[0])]
    _, ssim_map = structural_similarity_index_measure(
        restored, truth, data_range=DATA_RANGE, kernel_size=7, return_full_image=True
    )
    result = {"psnr_all": sum(per_image) / len(per_image), "ssim_all": float(ssim_map.mean())}
    if untouched is not None:
        inside = untouched.bool().expand_as(truth)
        result["psnr_untouched"] = psnr(restored[inside], truth[inside])
        result["ssim_untouched"] = float(ssim_map[inside].mean())
        result["max_error_untouched"] = float((restored[inside] - truth[inside]).abs().max())
    return result


def evaluation_inputs(task: str, sigma: float):
    data = DigitsDataModule(image_size=8, batch_size=64, coupling=coupling(task, sigma))
    data.setup("fit")
    held = held_out_data(data, COUNT, seed=0)
    return held.inputs(list(range(held.x1.shape[0])), torch.device("cpu")), data


def run_bridge(task: str, bridge: str, seed: int, steps: int) -> dict:
    start = time.process_time()
    module = train(task, bridge, seed, steps)
    training_cpu = time.process_time() - start
    sigma = PLAIN_SIGMA if bridge == "plain" else 0.0
    inputs, _ = evaluation_inputs(task, sigma)
    reference, _ = evaluation_inputs(task, 0.0)
    sampler = ODESampler(method="heun", steps=10)
    with torch.no_grad():
        result = sampler.sample(module.fields(ema=True), inputs.x0, inputs.cond)
    return {
        "task": task,
        "method": bridge,
        "seed": seed,
        "steps": steps,
        "nfe": result.nfe,
        "training_cpu_seconds": training_cpu,
        # Untouched pixels: cond.keep of the sigma = 0 coupling (None for denoising, which touches every pixel).
        **scores(result.x, inputs.x1, reference.cond.keep),
    }


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
    options = parser.parse_args()
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
                path.write_text(json.dumps(run_bridge(task, bridge, seed, options.steps), indent=1))
                print(path, json.loads(path.read_text())["psnr_all"], flush=True)


if __name__ == "__main__":
    main()
