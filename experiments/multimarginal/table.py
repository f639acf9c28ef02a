"""Markdown tables of evaluate.py's results files (one column per model and seed).

python experiments/multimarginal/table.py results-seed0.json results-seed1.json
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    columns: list[tuple[str, dict[str, float]]] = []
    for path in sys.argv[1:]:
        results = json.loads(open(path).read())
        for model, row in results["models"].items():
            coupling = results.get("coupling", "independent")
            solver = f", {results['sampler']}" if "sampler" in results else ""  # files since the grid choice
            columns.append((f"{model}, {coupling}{solver} (seed {results['seed']})", row))
    keys = list(dict.fromkeys(key for _, row in columns for key in row))
    print("| | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for key in keys:
        cells = []
        for _, row in columns:
            value = row.get(key)
            cells.append("" if value is None else f"{100 * value:.1f} %" if key.startswith("class") else f"{value:.3g}")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
