"""The sampler pilot: how far each fixed-step ODE sampler is from the converged flow of the same trained model.

Loads the models run.py saved (``--models``; trains and saves any that are missing, as run.py would) and
restores the 180 validation digits with a reference, dopri5 at atol = rtol = 1e-5, and with Heun on the
uniform and on the cosine grid at several step counts. Per sampler and method it prints the NFE, the PSNR
over all pixels and its distance to the reference's PSNR; the README's rule picks the cheapest sampler whose
distance is at most 0.1 dB for every method of the pilot. Then, with ``--draws K``, the bridges' start:
the point x0 against the noised start (one draw, and the mean of K) under the chosen sampler.

    python solvers.py --tasks superres inpainting --seed 0 --steps 300 --draws 4 --chosen heun:cosine:20
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch
from run import BRIDGE_NAMES, HERE, TASKS, evaluation_inputs, restore, scores, trained_module

from si_lightning.sampling import ODESampler

GRIDS = ("uniform", "cosine")
STEP_COUNTS = (5, 10, 20, 32)  # preset step counts: ode-heun-{grid}-{steps} names each


def print_row(
    truth, task: str, bridge: str, name: str, restored: torch.Tensor, nfe: int, reference: float | None = None
) -> float:
    """Print one JSON line (PSNR over all pixels, and its distance to the reference's) and return the PSNR."""
    psnr_all = scores(restored, truth.x1, truth.cond.keep)["psnr_all"]
    line = {"task": task, "method": bridge, "sampler": name, "nfe": nfe, "psnr_all": psnr_all}
    if reference is not None:
        line["distance_db"] = psnr_all - reference
    print(json.dumps(line), flush=True)
    return psnr_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["superres", "inpainting"])
    parser.add_argument("--bridges", nargs="+", choices=BRIDGE_NAMES, default=list(BRIDGE_NAMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--models", type=Path)
    parser.add_argument("--draws", type=int, default=4, help="K of the start comparison (0: skip it)")
    parser.add_argument("--chosen", default="heun:cosine:20", help="METHOD:GRID:STEPS for the start comparison")
    options = parser.parse_args()
    torch.set_num_threads(1)
    models = options.models or HERE / "models" / f"{options.steps}-steps"
    for task in options.tasks:
        truth = evaluation_inputs(task, 0.0)[0]
        for bridge in options.bridges:
            module, _ = trained_module(task, bridge, options.seed, options.steps, models)
            report = partial(print_row, truth, task, bridge)
            reference_sampler = ODESampler(method="dopri5", atol=1e-5, rtol=1e-5)
            draws, nfe = restore(module, task, bridge, reference_sampler, 1, "point")
            reference = report("dopri5 1e-5", draws[0], nfe)
            for grid in GRIDS:
                for steps in STEP_COUNTS:
                    draws, nfe = restore(module, task, bridge, ODESampler("heun", steps, grid=grid), 1, "point")
                    report(f"heun {steps} {grid}", draws[0], nfe, reference)
            if options.draws > 0:
                method, grid, steps = options.chosen.split(":")
                sampler = ODESampler(method, int(steps), grid=grid)
                for start in ("point", "noised"):
                    draws, nfe = restore(module, task, bridge, sampler, options.draws, start)
                    report(f"{options.chosen} start {start}, 1 draw", draws[0], nfe)
                    report(
                        f"{options.chosen} start {start}, mean of {options.draws}", draws.mean(0), nfe * options.draws
                    )


if __name__ == "__main__":
    main()
