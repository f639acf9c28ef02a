"""A tiny digits run with all three evaluation callbacks, for tests/integration/test_ddp.py.

    python tests/integration/ddp_evaluation_run.py fit ROOT --devices 2      # DDP (gloo, CPU): trains, evaluates
    python tests/integration/ddp_evaluation_run.py validate ROOT --checkpoint PATH   # evaluates a checkpoint

With ``strategy="ddp"`` Lightning starts the other ranks by running this script again. Every file
written through ``os.replace`` (the callbacks' PNGs and metric records, the statistics cache) is
recorded in ``ROOT/writes/rank{r}.txt``, so the test can tell which rank wrote what.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from si_lightning.callbacks import EMA, FIDCallback, LikelihoodCallback, SamplingCallback
from si_lightning.data import DigitsDataModule
from si_lightning.interpolants import Interpolant
from si_lightning.module import InterpolantModule
from si_lightning.nn import UNet
from si_lightning.sampling import ODESampler, SDESampler

MAX_STEPS = 4
EVERY_N_STEPS = 2
FID_SAMPLES = 64
LIKELIHOOD_SAMPLES = 24
GRID_SAMPLES = 8


def samplers() -> dict:
    return {"ode-heun": ODESampler(method="heun", steps=4), "sde-euler": SDESampler(steps=4)}


def evaluation_callbacks(root: Path) -> list[pl.Callback]:
    """Sampling, FID (digits features) and likelihood (fixed-step rk4), every 2 steps and at the end."""
    return [
        SamplingCallback(num_samples=GRID_SAMPLES, every_n_steps=EVERY_N_STEPS, samplers=samplers(), batch_size=3),
        FIDCallback(
            num_samples=FID_SAMPLES,
            every_n_steps=EVERY_N_STEPS,
            samplers=samplers(),
            batch_size=16,
            extractor="digits",
            cache_dir=str(root / "cache"),
        ),
        LikelihoodCallback(
            num_samples=LIKELIHOOD_SAMPLES, every_n_steps=EVERY_N_STEPS, method="rk4", steps=3, batch_size=8
        ),
    ]


def model() -> InterpolantModule:
    torch.manual_seed(0)
    backbone = UNet(
        data_shape=(1, 8, 8), model_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, norm_groups=8
    )
    return InterpolantModule(backbone=backbone, interpolant=Interpolant("linear"), loss_bins=0)


def record_writes(root: Path) -> None:
    """Append the destination of every ``os.replace`` in this process to ``root/writes/rank{r}.txt``."""
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    log = root / "writes" / f"rank{rank}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    replace = os.replace

    def recording_replace(source, destination, *args, **kwargs):
        replace(source, destination, *args, **kwargs)
        with open(log, "a") as file:
            file.write(f"{destination}\n")

    os.replace = recording_replace


def trainer(root: Path, devices: int, callbacks: list[pl.Callback], validation_batches: int) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=MAX_STEPS,
        limit_val_batches=validation_batches,
        num_sanity_val_steps=0,
        logger=CSVLogger(root / "run", name="digits"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root / "run",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["fit", "validate"])
    parser.add_argument("root", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--checkpoint", type=Path)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    record_writes(arguments.root)
    data = DigitsDataModule(batch_size=16)
    if arguments.command == "fit":
        checkpoint = ModelCheckpoint(dirpath=arguments.root / "checkpoints", save_last=True)
        callbacks = [EMA(decay=0.5), *evaluation_callbacks(arguments.root), checkpoint]
        trainer(arguments.root, arguments.devices, callbacks, 0).fit(model(), datamodule=data)
    else:
        callbacks = evaluation_callbacks(arguments.root)
        trainer(arguments.root, 1, callbacks, 1).validate(model(), datamodule=data, ckpt_path=arguments.checkpoint)


if __name__ == "__main__":
    main()
