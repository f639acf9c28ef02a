"""PSNR of one trained bridge under several ODE solvers: is a short-budget gap the model or the 10 Heun steps?

Trains ``--bridge`` on ``--task`` exactly as run.py does (same seed, steps, UNet, optimiser, EMA), then restores
the 180 validation digits with Heun 10 steps on the uniform grid (run.py's sampler, NFE 19), Heun 10 on the
cosine grid (denser near both ends, where the bridges' gamma' diverges), Heun 50 and adaptive dopri5:

    python solvers.py --task superres --bridge rdbm --seed 0 --steps 300
"""

from __future__ import annotations

import argparse
import json

import torch
from run import BRIDGE_NAMES, PLAIN_SIGMA, TASKS, evaluation_inputs, scores, train

from si_lightning.sampling import ODESampler

SAMPLERS = {
    "heun-10-uniform": dict(method="heun", steps=10),
    "heun-10-cosine": dict(method="heun", steps=10, grid="cosine"),
    "heun-50-uniform": dict(method="heun", steps=50),
    "dopri5": dict(method="dopri5", atol=1e-4, rtol=1e-4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=TASKS, default="superres")
    parser.add_argument("--bridge", choices=BRIDGE_NAMES, default="rdbm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    options = parser.parse_args()
    torch.set_num_threads(1)
    module = train(options.task, options.bridge, options.seed, options.steps)
    inputs, _ = evaluation_inputs(options.task, PLAIN_SIGMA if options.bridge == "plain" else 0.0)
    reference, _ = evaluation_inputs(options.task, 0.0)
    for name, settings in SAMPLERS.items():
        with torch.no_grad():
            result = ODESampler(**settings).sample(module.fields(ema=True), inputs.x0, inputs.cond)
        row = scores(result.x, inputs.x1, reference.cond.keep)
        print(json.dumps({"sampler": name, "nfe": result.nfe, **vars(options), **row}), flush=True)


if __name__ == "__main__":
    main()
