"""Whether a grid resolves Kolmogorov flow at a viscosity: one solver trajectory's energy and mean spectrum.

    python experiments/turbulence/resolution.py --size 128 --viscosity 0.001 --time-step 0.005

Runs ``si_lightning.physics.KolmogorovFlow`` (drag 0.1, forcing sin(4 y)) from one random state through
``--spin-up`` time units, then ``--snapshots`` snapshots ``--interval`` apart, and prints the kinetic energy's
range and the shell spectrum E(k) averaged over the snapshots at a few k up to the de-aliasing cut-off
N/3: a resolved flow's spectrum keeps falling there; an under-resolved one flattens or turns up (energy
piles up at the cut-off). Also the solver's CPU time per step and trajectory, for the data's cost.
"""

from __future__ import annotations

import argparse
import sys
import time

from si_lightning.forecasting.metrics import energy_spectrum
from si_lightning.physics import KolmogorovFlow, kinetic_energy


def main(arguments: list[str]) -> int:
    parse = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parse.add_argument("--size", type=int, default=128)
    parse.add_argument("--viscosity", type=float, default=0.001)
    parse.add_argument("--time-step", type=float, default=0.005)
    parse.add_argument("--spin-up", type=float, default=30.0)
    parse.add_argument("--snapshots", type=int, default=41)
    parse.add_argument("--interval", type=float, default=0.5)
    options = parse.parse_args(arguments)
    solver = KolmogorovFlow(options.size, options.viscosity, 0.1, 4, 1.0, options.time_step)
    started = time.process_time()
    velocity = solver.trajectories(1, 0, options.spin_up, options.snapshots, options.interval)[0]  # (T, 2, N, N)
    steps = solver.steps_for(options.spin_up) + (options.snapshots - 1) * solver.steps_for(options.interval)
    seconds = (time.process_time() - started) / steps
    energy = kinetic_energy(velocity)
    spectrum = energy_spectrum(velocity).mean(0)
    cut_off = options.size // 3
    shells = sorted({1, 2, 4, 8, 16, cut_off // 2, 3 * cut_off // 4, cut_off - 4, cut_off} - {0})
    print(f"N = {options.size}, nu = {options.viscosity}, h = {options.time_step}: {seconds * 1e3:.1f} ms CPU per step")
    print(f"kinetic energy over the snapshots: {energy.min():.3f} .. {energy.max():.3f} (mean {energy.mean():.3f})")
    print("E(k): " + ", ".join(f"k = {k}: {spectrum[k]:.2e}" for k in shells if k < len(spectrum)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
