"""The README's table from the JSON files of estimate.py (one per system and seed).

    python experiments/free-energy/table.py experiments/free-energy/results/*.json

One row per system, method and seed: estimate, standard error, error against the reference, bounds,
energy evaluations and NFE. Transports along the SDE are marked ``(sde, N steps)``, TI on a learned energy
interpolant ``(learned U_t)``; files written before those options existed are ODE transports and MALA TI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TRANSPORTED = ("escorted-jarzynski", "controlled-crooks")


def method_label(content: dict, row: dict) -> str:
    """A row's method, with the transport and step count of the SDE estimators and TI's kind named."""
    method = row["method"]
    if content.get("transport") == "sde" and method in TRANSPORTED:
        return f"{method} (sde, {content['steps']} steps)"
    if content.get("learned_ti") and method == "ti":
        return "ti (learned U_t)"
    return method


def main(paths: list[str]) -> int:
    print("| system | seed | method | Delta F | stderr | error | lower | upper | energy evaluations | NFE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted(paths):
        content = json.loads(Path(path).read_text())
        system, seed = content["system"]["system"], content.get("seed", Path(path).stem.rsplit("-", 1)[-1])
        for row in content["rows"]:
            method = method_label(content, row)
            bounds = ["" if row[key] is None else f"{row[key]:.3f}" for key in ("lower", "upper")]
            print(
                f"| {system} (d = {content['system']['dims']}, Delta F = {content['reference']:.4f}) | {seed} "
                f"| {method} | {row['delta_f']:.4f} | {row['stderr']:.4f} | {row['error']:+.4f} "
                f"| {bounds[0]} | {bounds[1]} | {row['energy_evaluations']} | {row['nfe']} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
