"""The markdown table of experiments/restoration-bridges/README.md from the JSON files of run.py.

    python experiments/restoration-bridges/table.py experiments/restoration-bridges/results/100-steps

Per task and method: the mean over seeds and, in brackets, each seed's value; then whether the target holds
(RDBM exact on untouched pixels and, over all pixels, at least the plain coupling's PSNR for every seed).
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


def main(folder: Path) -> None:
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        content = json.loads(path.read_text())
        for row in content if isinstance(content, list) else [content]:
            rows[(row["task"], row["method"])].append(row)
    print("| task | method | NFE | PSNR all (dB) | PSNR untouched (dB) | SSIM all | SSIM untouched |")
    print("|---|---|---|---|---|---|---|")
    for task in TASK_NAMES:
        methods = sorted(
            {method for key, method in rows if key == task},
            key=lambda m: (m not in ORDER, ORDER.index(m) if m in ORDER else 0, m),
        )
        for method in methods:
            entries = sorted(rows[(task, method)], key=lambda row: row["seed"])
            cells = [cell([entry.get(metric) for entry in entries], 2 if "psnr" in metric else 3) for metric in METRICS]
            print(f"| {TASK_NAMES[task]} | {method} | {entries[0]['nfe']} | " + " | ".join(cells) + " |")
    print()
    for task in TASK_NAMES:
        rdbm = {row["seed"]: row for row in rows.get((task, "rdbm"), [])}
        plain = {row["seed"]: row for row in rows.get((task, "plain"), [])}
        seeds = sorted(set(rdbm) & set(plain))
        if not seeds:
            continue
        exact = all(math.isinf(rdbm[seed].get("psnr_untouched", math.nan)) for seed in seeds)
        untouched = "no untouched pixels" if "psnr_untouched" not in rdbm[seeds[0]] else f"exact on untouched: {exact}"
        better = all(rdbm[seed]["psnr_all"] >= plain[seed]["psnr_all"] for seed in seeds)
        print(f"- {TASK_NAMES[task]}: {untouched}; PSNR all >= plain on every seed ({len(seeds)}): {better}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: table.py FOLDER (the --out folder of run.py)")
    main(Path(sys.argv[1]))
