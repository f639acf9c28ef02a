"""Digits FID of the digits experiment with three backbones: the UNet, DiT and ZigMa, at equal training steps.

Each (backbone, seed) trains configs/experiments/digits.yaml through the executable, with the backbone overlay
(none for the UNet, configs/backbone/dit-digits.yaml, configs/backbone/zigma-digits.yaml), EMA and checkpoints
only (benchmarks/digits-backbones-callbacks.yaml), then ``si-lightning evaluate`` gives the digits FID of the
EMA weights: N samples from seeds 0..N-1 with ``--sampler`` (the demo's ODE sampler, Heun with 20 steps)
against N training digits (the demo's FID protocol: ``split: train``, ``real_seed: 0``). The table starts
with the floor: N other training digits, disjoint from the reference, against the same reference.

    python benchmarks/digits_backbones.py --steps 500 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
EXECUTABLE = Path(sys.executable).with_name("si-lightning")
OVERLAYS = {
    "UNet": [],
    "DiT": ["-c", str(REPOSITORY / "configs" / "backbone" / "dit-digits.yaml")],
    "ZigMa": ["-c", str(REPOSITORY / "configs" / "backbone" / "zigma-digits.yaml")],
}


def environment(threads: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": str(threads)}


def train_and_evaluate(backbone: str, seed: int, arguments: argparse.Namespace) -> dict[str, float]:
    """Fit, then evaluate the last checkpoint; {"fid": ..., "parameters": ..., "train_s": ..., "evaluate_s": ...}."""
    directory = arguments.out / f"{backbone.lower()}-seed{seed}"
    command = [
        str(EXECUTABLE), "fit", "-c", str(REPOSITORY / "configs" / "experiments" / "digits.yaml"),
        *OVERLAYS[backbone],
        "--trainer.callbacks", str(REPOSITORY / "benchmarks" / "digits-backbones-callbacks.yaml"),
        "--trainer.max_steps", str(arguments.steps),
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(directory),
        "--trainer.logger.init_args.save_dir", str(directory),
        "--seed_everything", str(seed), "--data.init_args.seed", str(seed),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment(arguments.threads), capture_output=True)
    trained = time.perf_counter() - started
    (checkpoint,) = directory.glob("digits/version_*/checkpoints/last.ckpt")
    evaluation = directory / "evaluation"
    command = [
        str(EXECUTABLE), "evaluate", "--ckpt", str(checkpoint), "--extractor", "digits", "--metrics", "fid",
        "--num-samples", str(arguments.samples), "--sampler", arguments.sampler, "--out", str(evaluation),
        "--accelerator", "cpu",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment(arguments.threads), capture_output=True)
    values = json.loads((evaluation / "evaluation.json").read_text())["values"]
    fid = next(value for key, value in values.items() if key.startswith("fid"))
    return {"fid": fid, "train_s": trained, "evaluate_s": time.perf_counter() - started}


def floor(count: int) -> float:
    """N training digits disjoint from the reference against the reference (the first further draw)."""
    sys.path.insert(0, str(REPOSITORY / "benchmarks"))
    from digits_sampling import DigitsFID

    fid = DigitsFID(count)
    return fid(fid.real_draw(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="training steps (the demo's: 2000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--backbones", nargs="+", default=list(OVERLAYS), choices=list(OVERLAYS))
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--sampler", default="ode-heun-20")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/digits-backbones"))
    arguments = parser.parse_args()
    print(f"| backbone | seed | digits FID (N = {arguments.samples}) | train s | evaluate s |", flush=True)
    print("|---|---:|---:|---:|---:|", flush=True)
    print(f"| real vs real (floor) | - | {floor(arguments.samples):.2f} | - | - |", flush=True)
    results: dict[str, list[float]] = {}
    for backbone in arguments.backbones:
        for seed in arguments.seeds:
            figures = train_and_evaluate(backbone, seed, arguments)
            results.setdefault(backbone, []).append(figures["fid"])
            print(
                f"| {backbone} | {seed} | {figures['fid']:.2f} | {figures['train_s']:.0f} | "
                f"{figures['evaluate_s']:.0f} |",
                flush=True,
            )
    for backbone, values in results.items():
        spread = f" +- {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        print(f"{backbone}: mean digits FID {statistics.fmean(values):.2f}{spread} over {len(values)} seed(s)")


if __name__ == "__main__":
    main()
