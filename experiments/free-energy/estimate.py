"""Delta F of a trained free-energy transport by every estimator, at equal energy evaluations.

    python experiments/free-energy/estimate.py --ckpt runs/free-energy-gaussians/checkpoints/last.ckpt \
        --samples 4096 --seed 0 [--steps 20] [--json results.json]

Reads the system (energies, exact samplers, reference Delta F) recorded by ``FreeEnergyDataModule`` in the
checkpoint, draws fresh samples of both densities from ``--seed`` and prints one row per method: the
estimate, its standard error, its error against the reference, the Jensen bounds, the energy evaluations
and the velocity evaluations per path. Every method gets 4 n energy evaluations (n = ``--samples``):

- escorted-jarzynski: forward works of 2 n samples of rho_a (U_a and U_b of each: 4 n);
- controlled-crooks: forward works of n samples of rho_a and reverse works of n of rho_b;
- fep: Zwanzig on 2 n samples of rho_a; bar: n samples of each;
- ti: MALA chains on the linear energy interpolant, n / (1 + nodes steps / 2) from each end (``--ti-nodes``,
  ``--ti-steps``, ``--ti-step-size``); for a model with an energy-interpolant head (``velocity+score`` with
  ``EnergyInterpolantBackbone``), on its learned U_t with 2 n / nodes interpolant samples a node.

The transports follow the ODE (``--transport ode``: RK4, ``--steps`` steps, 4 velocity evaluations each) or
the SDE (``--transport sde``: ``--steps`` Euler-Maruyama steps with constant eps = ``--diffusion-scale``, for a
model with a score).

The last line is ``reference Delta F = <value> kT``. Bad arguments end in one ``error:`` line, status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from si_lightning.errors import ConfigurationError, run_reporting_errors, split_debug_flag

METHODS = ("escorted-jarzynski", "controlled-crooks", "fep", "bar", "ti")


def parse(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint of si-lightning fit with FreeEnergyDataModule")
    parser.add_argument("--samples", type=int, default=4096, help="n: samples of each density (4 n evaluations)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20, help="RK4 (ode) or Euler-Maruyama (sde) steps")
    parser.add_argument("--transport", default="ode", choices=("ode", "sde"))
    parser.add_argument("--diffusion-scale", type=float, default=0.5, help="constant eps of the SDE")
    parser.add_argument("--divergence", default="exact", choices=("exact", "hutchinson"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--bar-solver", default="own", choices=("own", "pymbar"))
    parser.add_argument("--ti-nodes", type=int, default=8)
    parser.add_argument("--ti-steps", type=int, default=10)
    parser.add_argument("--ti-step-size", type=float, default=0.01)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser.parse_args(arguments)


def check(options: argparse.Namespace) -> None:
    for key, value in (("--samples", options.samples), ("--steps", options.steps), ("--ti-nodes", options.ti_nodes)):
        if value < 2:
            raise ConfigurationError(key, value, "an integer >= 2")
    if options.ti_steps < 1:
        raise ConfigurationError("--ti-steps", options.ti_steps, "an integer >= 1")
    for key, value in (("--ti-step-size", options.ti_step_size), ("--diffusion-scale", options.diffusion_scale)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigurationError(key, value, "a number > 0")


def run(arguments: list[str]) -> int:
    options = parse(arguments)
    check(options)
    # Imported once the arguments are known to be good: a bad one is refused without loading torch and Lightning.
    import torch

    from si_lightning.commands.checkpoints import load_model
    from si_lightning.commands.decoding import recorded_hyper_parameters
    from si_lightning.free_energy import estimate
    from si_lightning.free_energy.systems import build_system
    from si_lightning.seeding import derived_seed

    model = load_model(options.ckpt)
    recorded = recorded_hyper_parameters(options.ckpt)
    if "system" not in recorded:
        expected = "a checkpoint trained with si_lightning.data.FreeEnergyDataModule"
        raise ConfigurationError("--ckpt", options.ckpt, expected)
    pair = build_system(recorded["system"], recorded.get("dims"))
    fields = model.double().fields()
    if options.transport == "sde" and not fields.has_score:
        raise ConfigurationError("--transport", "sde", f"a model with a score ({fields.missing_score_reason})")
    n = options.samples
    generator = torch.Generator().manual_seed(derived_seed(options.seed, "free-energy-estimate", recorded["system"]))
    x_a, x_b = pair.sample_a(2 * n, generator), pair.sample_b(n, generator)
    reference = pair.delta_f()
    chains = max(2, round(n / (1 + options.ti_nodes * options.ti_steps / 2)))
    learned = getattr(fields, "energy_correction", None) is not None
    pairs = max(2, round(2 * n / options.ti_nodes))  # 2 energies a pair and node: 4 n in all
    inputs = {
        "escorted-jarzynski": (fields, x_a, None),
        "controlled-crooks": (fields, x_a[:n], x_b),
        "fep": (None, x_a, None),
        "bar": (None, x_a[:n], x_b),
        "ti": (fields, x_a[:pairs], x_b[:pairs]) if learned else (None, x_a[:chains], x_b[:chains]),
    }
    rows = []
    print("| method | Delta F | stderr | error | lower | upper | energy evaluations | NFE | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in options.methods:
        method_fields, samples_a, samples_b = inputs[method]
        start = time.perf_counter()
        result = estimate(
            method_fields, pair.energy_a, pair.energy_b, samples_a, samples_b, method=method, steps=options.steps,
            generator=torch.Generator().manual_seed(options.seed), divergence=options.divergence,
            bar_solver=options.bar_solver, nodes=options.ti_nodes, mcmc_steps=options.ti_steps,
            step_size=options.ti_step_size, transport=options.transport, diffusion_scale=options.diffusion_scale,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        row = {
            "method": method, "delta_f": result.delta_f, "stderr": result.stderr, "error": result.delta_f - reference,
            "lower": result.lower, "upper": result.upper, "energy_evaluations": result.energy_evaluations,
            "nfe": result.nfe, "seconds": seconds,
        }  # fmt: skip
        rows.append(row)
        bound = lambda value: "" if value is None else f"{value:.4f}"  # noqa: E731
        print(
            f"| {method} | {result.delta_f:.4f} | {result.stderr:.4f} | {row['error']:+.4f} | {bound(result.lower)} "
            f"| {bound(result.upper)} | {result.energy_evaluations} | {result.nfe} | {seconds:.1f} |",
            flush=True,
        )
    if options.json is not None:
        content = {
            "system": recorded, "seed": options.seed, "reference": reference, "rows": rows,
            "transport": options.transport, "steps": options.steps, "learned_ti": learned,
        }  # fmt: skip
        Path(options.json).write_text(json.dumps(content, indent=1))
    print(f"reference Delta F = {reference:.6f} kT")
    return 0


def main() -> int:
    arguments, debug = split_debug_flag(sys.argv[1:])
    return run_reporting_errors(lambda: run(arguments), debug)


if __name__ == "__main__":
    sys.exit(main())
