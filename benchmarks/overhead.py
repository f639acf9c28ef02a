"""Framework overhead: ``InterpolantModule`` under ``Trainer.fit`` against a plain PyTorch loop.

Both sides train the same backbone (same initial weights) on the same digits batches with the same
loss: t ~ U(valid interval), z ~ N(0, I), the velocity loss of the linear interpolant, AdamW. The plain
loop is written out below (``plain_run``); with ``features`` it does by hand what the shipped digits
config turns on in Lightning:

- EMA of the parameters and buffers (decay 0.999) with one ``torch._foreach_lerp_`` per step;
- the loss in 4 equal t-bins, summed on the device and read once per epoch;
- a CSV row (step, loss) every 50 steps;
- a progress bar (tqdm) updated every step with the loss;
- gradient clipping to norm 1.

Variants run interleaved (A B A B ...) so that the load of a shared machine hits all alike; the
figure is the median steady-state step time (the first ``--warmup`` steps of every run are dropped),
measured as CPU time of the process on a CPU (see ``StepClock``), and only ratios are printed. On
CUDA the steps are timed as a block (one synchronisation at each end) and the figure per run is the
mean step time.

    python benchmarks/overhead.py --model unet --rounds 5 --steps 60
    python benchmarks/overhead.py --model dit-s --rounds 3 --steps 10 --variants plain-bare,lightning-bare
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import io
import logging
import pstats
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from throughput import unet_digits  # the digits UNet, built once for both scripts
from tqdm import tqdm

from si_lightning.callbacks import EMA
from si_lightning.data import DigitsDataModule
from si_lightning.data.base import to_model_input
from si_lightning.interpolants import Interpolant, UniformTime, interpolant_loss
from si_lightning.module import InterpolantModule
from si_lightning.nn import DiT

FEATURES = ("ema", "bins", "logger", "bar", "clip")
EMA_DECAY, LOSS_BINS, LOG_EVERY, CLIP = 0.999, 4, 50, 1.0


# ------------------------------------------------------------------------------------------- models
def build_backbone(name: str, image_size: int) -> torch.nn.Module:
    """The digits config's UNet (704 K parameters at 8x8) or DiT-S (patch 4 at 8x8, patch 2 at 32x32)."""
    shape = (1, image_size, image_size)
    if name == "unet":
        return unet_digits(shape)
    if name == "dit-s":
        return DiT(data_shape=shape, preset="S", patch_size=4 if image_size <= 8 else 2)
    raise ValueError(f"unknown model {name!r}; expected unet or dit-s")


@dataclass
class Setting:
    model: str
    image_size: int
    batch_size: int
    steps: int
    warmup: int
    device: torch.device
    features: frozenset[str] = field(default_factory=frozenset)


# ------------------------------------------------------------------------------------ step timing
class StepClock:
    """Time stamps after every training step; on CUDA only at the ends of the timed block (synchronised).

    On a CPU the clock is the CPU time of this process (``time.process_time``): on a shared machine
    the wall time of a step mostly measures how long it waited for a core, its CPU time the work done.
    With one intra-op thread and no loader workers all the work of a step is this process's.
    """

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.stamps: list[float] = []
        self.cuda = setting.device.type == "cuda"
        self.clock = time.perf_counter if self.cuda else time.process_time

    def tick(self, step: int) -> None:
        """Call after step ``step`` (0-based) has finished its work."""
        if self.cuda:
            if step in (self.setting.warmup - 1, self.setting.warmup + self.setting.steps - 1):
                torch.cuda.synchronize(self.setting.device)
                self.stamps.append(self.clock())
            return
        if step >= self.setting.warmup - 1:
            self.stamps.append(self.clock())

    def step_time(self) -> float:
        """The median step time (CPU) or the mean over the timed block (CUDA), seconds."""
        intervals = [later - earlier for earlier, later in zip(self.stamps, self.stamps[1:], strict=False)]
        if self.cuda:
            return intervals[0] / self.setting.steps
        return statistics.median(intervals)


class ClockCallback(pl.Callback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.clock.tick(trainer.global_step - 1)


# ------------------------------------------------------------------------------- Lightning side
def lightning_run(setting: Setting, initial: dict[str, torch.Tensor], workdir: Path) -> float:
    features = setting.features
    backbone = build_backbone(setting.model, setting.image_size)
    backbone.load_state_dict(initial)
    model = InterpolantModule(
        backbone=backbone,
        interpolant=Interpolant("linear"),
        optimizer=lambda parameters: torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.0),
        loss_bins=LOSS_BINS if "bins" in features else 0,
    )
    clock = StepClock(setting)
    callbacks: list[pl.Callback] = [EMA(decay=EMA_DECAY)] if "ema" in features else []
    logger = CSVLogger(workdir, name="lightning") if "logger" in features else False
    trainer = pl.Trainer(
        accelerator=setting.device.type,
        devices=1,
        max_steps=setting.warmup + setting.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=logger,
        log_every_n_steps=LOG_EVERY,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar="bar" in features,
        gradient_clip_val=CLIP if "clip" in features else None,
        callbacks=[*callbacks, ClockCallback(clock)],
        default_root_dir=workdir,
    )
    data = DigitsDataModule(image_size=setting.image_size, batch_size=setting.batch_size, seed=0)
    trainer.fit(model, datamodule=data)
    return clock.step_time()


# ----------------------------------------------------------------------------------- plain side
def plain_run(setting: Setting, initial: dict[str, torch.Tensor], workdir: Path) -> float:
    """The same training written as a loop over the data loader, without Lightning."""
    features, device = setting.features, setting.device
    backbone = build_backbone(setting.model, setting.image_size).to(device)
    backbone.load_state_dict(initial)
    interpolant = Interpolant("linear")
    interval = interpolant.valid_interval(need_score=False)
    time_sampler = UniformTime()
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-3, weight_decay=0.0)
    data = DigitsDataModule(image_size=setting.image_size, batch_size=setting.batch_size, seed=0)
    data.setup("fit")
    generator = torch.Generator(device=device).manual_seed(0)
    coupling_generator = torch.Generator(device=device).manual_seed(1)

    ema_state = [tensor.detach().clone() for tensor in (*backbone.parameters(), *backbone.buffers())]
    live_state = [tensor.detach() for tensor in (*backbone.parameters(), *backbone.buffers())]
    floating = [index for index, tensor in enumerate(live_state) if tensor.is_floating_point()]
    ema_state, live_state = [ema_state[i] for i in floating], [live_state[i] for i in floating]
    bins = torch.zeros(LOSS_BINS, 2, device=device)
    csv_file = open(workdir / "plain.csv", "w", newline="")  # noqa: SIM115 (closed below)
    writer = csv.writer(csv_file)
    bar = tqdm(total=setting.warmup + setting.steps, file=io.StringIO()) if "bar" in features else None
    clock = StepClock(setting)

    step = 0
    total = setting.warmup + setting.steps
    while step < total:
        for x1, _labels, _index in data.train_dataloader():
            x1 = to_model_input(x1.to(device, non_blocking=True))
            batch = data.coupling(x1, None, coupling_generator)
            t = time_sampler(x1.shape[0], interval, device, x1.dtype, generator)
            z = torch.randn(x1.shape, generator=generator, device=device, dtype=x1.dtype)
            network: Callable = lambda x, s: backbone(x, s, None)  # noqa: E731
            loss = interpolant_loss(interpolant, "velocity", network, batch.x0, batch.x1, t, z, check_time=False)
            mean = loss.mean()
            optimizer.zero_grad(set_to_none=True)
            mean.backward()
            if "clip" in features:
                torch.nn.utils.clip_grad_norm_(backbone.parameters(), CLIP)
            optimizer.step()
            if "ema" in features:
                torch._foreach_lerp_(ema_state, live_state, 1 - EMA_DECAY)
            if "bins" in features:
                index = ((t - interval[0]) / (interval[1] - interval[0]) * LOSS_BINS).long().clamp(0, LOSS_BINS - 1)
                detached = loss.detach()
                bins.index_add_(0, index, torch.stack((detached, torch.ones_like(detached)), dim=1))
            if "logger" in features and (step + 1) % LOG_EVERY == 0:
                writer.writerow([step, float(mean)])
            if bar is not None:
                bar.set_postfix(loss=float(mean), refresh=False)
                bar.update(1)
            clock.tick(step)
            step += 1
            if step == total:
                break
        if "bins" in features:  # once per epoch, as the module does
            writer.writerow([step, *(bins[:, 0] / bins[:, 1]).tolist()])
            bins.zero_()
    csv_file.close()
    if bar is not None:
        bar.close()
    return clock.step_time()


# ------------------------------------------------------------------------------------------ driver
RUNNERS = {"lightning": lightning_run, "plain": plain_run}

# name -> (runner, features); the Lightning variants without one feature are the ablation.
VARIANTS: dict[str, tuple[str, frozenset[str]]] = {
    "plain-bare": ("plain", frozenset()),
    "lightning-bare": ("lightning", frozenset()),
    "plain-features": ("plain", frozenset(FEATURES)),
    "lightning-features": ("lightning", frozenset(FEATURES)),
    **{f"lightning-no-{name}": ("lightning", frozenset(FEATURES) - {name}) for name in FEATURES},
}


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    initial = {key: value.clone() for key, value in build_backbone(args.model, args.image_size).state_dict().items()}
    names = args.variants.split(",")
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"error: --variants {name}: expected one of {', '.join(VARIANTS)}")
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as directory:
        for round_index in range(args.rounds):
            for name in names if round_index % 2 == 0 else reversed(names):
                runner, features = VARIANTS[name]
                setting = Setting(
                    args.model, args.image_size, args.batch_size, args.steps, args.warmup, device, features
                )
                workdir = Path(directory) / f"{name}-{round_index}"
                workdir.mkdir()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    times[name].append(RUNNERS[runner](setting, initial, workdir))
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
            if round_index + 1 < args.rounds:
                report({name: values for name, values in times.items()}, args, round_index + 1)
    return times


def report(times: dict[str, list[float]], args: argparse.Namespace, rounds: int | None = None) -> None:
    print(
        f"\n{args.model}, {args.image_size}x{args.image_size}, batch {args.batch_size}, device {args.device}, "
        f"{torch.get_num_threads()} threads, {rounds or args.rounds} rounds x {args.steps} timed steps "
        f"(after {args.warmup} warm-up steps)\n"
    )
    medians = {name: statistics.median(values) for name, values in times.items()}

    def ratio(name: str, reference: str) -> str:
        if name not in times or reference not in times:
            return "-"
        pooled = medians[name] / medians[reference]
        per_round = [a / b for a, b in zip(times[name], times[reference], strict=True)]
        return f"{pooled:.3f} (rounds {min(per_round):.3f} to {max(per_round):.3f})"

    print("| variant | time / plain-bare | time / plain-features |")
    print("|---|---|---|")
    for name in times:
        print(f"| {name} | {ratio(name, 'plain-bare')} | {ratio(name, 'plain-features')} |")


def profile(args: argparse.Namespace, name: str) -> None:
    """torch.profiler's operator table and cProfile's Python functions for one run of variant ``name``."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    initial = {key: value.clone() for key, value in build_backbone(args.model, args.image_size).state_dict().items()}
    runner, features = VARIANTS[name]
    setting = Setting(args.model, args.image_size, args.batch_size, args.steps, args.warmup, device, features)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    python_profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as directory, torch.profiler.profile(activities=activities) as operators:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            python_profile.runcall(RUNNERS[runner], setting, initial, Path(directory))
    print(f"\n{name}: torch.profiler, {args.warmup + args.steps} steps, by self CPU time\n")
    print(operators.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(f"\n{name}: cProfile, by cumulative time\n")
    pstats.Stats(python_profile).sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet", choices=["unet", "dit-s"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=None, help="8 on CPU, 32 on CUDA by default")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--profile", default=None, help="profile one run of this variant instead of comparing")
    args = parser.parse_args()
    if args.image_size is None:
        args.image_size = 32 if args.device.startswith("cuda") else 8
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.profile:
        profile(args, args.profile)
        return
    report(measure(args), args)


if __name__ == "__main__":
    main()
