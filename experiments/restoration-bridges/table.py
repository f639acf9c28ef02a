"""The markdown table of experiments/restoration-bridges/README.md from the JSON files of run.py.

    python experiments/restoration-bridges/table.py experiments/restoration-bridges/results/300-steps-heun-20-cosine

Per task, method and estimate (one draw, or the mean of K draws): the mean over seeds and, in brackets, each
seed's value; then, per estimate and task, whether the target holds (RDBM exact on untouched pixels and, over
all pixels, at least the plain coupling's PSNR on every seed, each seed's margin shown), and over all tasks.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

TASK_NAMES = {
    "inpainting": "in-painting",
    "superres": "super-resolution x2",
    "denoising": "denoising",
    "deraining": "de-raining",
}
ORDER = ["rdbm", "goub", "bbdm", "plain", "kNN-5"]
METRICS = ["psnr_all", "psnr_untouched", "ssim_all", "ssim_untouched"]


def number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def cell(values: list[float | None], digits: int) -> str:
    if not values or values[0] is None:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return number(mean, digits)
    return f"{number(mean, digits)} ({' / '.join(number(value, digits) for value in values)})"


def estimate_of(row: dict) -> str:
    """'x0 start, 1 draw', 'noised start, mean of K', ... for a bridge row (files written before run.py had K draws
    hold draw 0 from x0), '-' for a baseline."""
    return row.get("estimate", "x0 start, 1 draw") if row["method"] in ORDER[:4] else "-"


def estimate_order(estimate: str) -> tuple[bool, str]:
    """The x0-start row (what ``sample --inputs`` returns) first."""
    return (not estimate.startswith("x0"), estimate)


def main(folder: Path) -> None:
    rows: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        content = json.loads(path.read_text())
        for row in content if isinstance(content, list) else [content]:
            rows[(row["task"], row["method"], estimate_of(row))].append(row)
    estimates = sorted({estimate for _, _, estimate in rows if estimate != "-"}, key=estimate_order)
    print("| task | method | estimate | NFE | PSNR all (dB) | PSNR untouched (dB) | SSIM all | SSIM untouched |")
    print("|---|---|---|---|---|---|---|---|")
    for task in TASK_NAMES:
        keys = sorted(
            {(method, estimate) for key, method, estimate in rows if key == task},
            key=lambda k: (k[0] not in ORDER, ORDER.index(k[0]) if k[0] in ORDER else 0, k[0], estimate_order(k[1])),
        )
        for method, estimate in keys:
            entries = sorted(rows[(task, method, estimate)], key=lambda row: row["seed"])
            cells = [cell([entry.get(metric) for entry in entries], 2 if "psnr" in metric else 3) for metric in METRICS]
            line = f"| {TASK_NAMES[task]} | {method} | {estimate} | {entries[0]['nfe']} | " + " | ".join(cells) + " |"
            print(line)
    print()
    for estimate in estimates:
        verdicts = []
        for task in TASK_NAMES:
            rdbm = {row["seed"]: row for row in rows.get((task, "rdbm", estimate), [])}
            plain = {row["seed"]: row for row in rows.get((task, "plain", estimate), [])}
            seeds = sorted(set(rdbm) & set(plain))
            if not seeds:
                continue
            if "psnr_untouched" in rdbm[seeds[0]]:
                exact = all(math.isinf(rdbm[seed]["psnr_untouched"]) for seed in seeds)
                untouched = f"exact on untouched: {exact}"
            else:
                exact, untouched = True, "no untouched pixels"
            margins = [rdbm[seed]["psnr_all"] - plain[seed]["psnr_all"] for seed in seeds]
            better = all(margin >= 0 for margin in margins)
            per_seed = ", ".join(
                f"seed {seed}: {rdbm[seed]['psnr_all']:.2f} vs {plain[seed]['psnr_all']:.2f} ({margin:+.2f})"
                for seed, margin in zip(seeds, margins, strict=True)
            )
            verdicts.append(exact and better and len(seeds) >= 2)
            print(f"- {estimate}, {TASK_NAMES[task]}: {untouched}; RDBM PSNR all >= plain ({per_seed}): {better}")
        print(f"- {estimate}: target holds on every task and seed: {bool(verdicts) and all(verdicts)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: table.py FOLDER (the --out folder of run.py)")
    main(Path(sys.argv[1]))
