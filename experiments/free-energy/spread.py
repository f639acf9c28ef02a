"""Errors over sample seeds, per system and method, from the JSON files of estimate.py.

    python experiments/free-energy/spread.py experiments/free-energy/results/est-*-energy-sde-*.json

One row per system and method: the number of seeds, the mean error (the bias, if the seeds are many), the root
mean square error over the seeds and the mean reported standard error. One seed's error is one draw; the root
mean square over seeds is what compares estimators at equal energy evaluations.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

from table import method_label  # noqa: E402 - the script's own folder is on the path when run as a script


def main(paths: list[str]) -> int:
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for path in sorted(paths):
        content = json.loads(Path(path).read_text())
        system = f"{content['system']['system']} (d = {content['system']['dims']})"
        for row in content["rows"]:
            method = method_label(content, row)
            groups[(system, method)].append((row["error"], row["stderr"]))
    print("| system | method | seeds | mean error | RMS error | mean stderr |")
    print("|---|---|---|---|---|---|")
    for (system, method), values in groups.items():
        errors = [error for error, _ in values]
        rms = math.sqrt(sum(error**2 for error in errors) / len(errors))
        stderr = sum(value for _, value in values) / len(values)
        print(f"| {system} | {method} | {len(values)} | {sum(errors) / len(errors):+.4f} | {rms:.4f} | {stderr:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
