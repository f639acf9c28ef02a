"""The spread-skill ratio by lead with a bootstrap interval over the roll-out's inputs.

    python experiments/turbulence/spread_interval.py FORECAST_DIR [--leads 8] [--resamples 2000] [--seed 0]

FORECAST_DIR is a ``si-lightning forecast`` output whose trajectories.npz holds ``forecasts``
(N, M, T + 1, C, H, W) and ``truth`` (N, T + 1, C, H, W) (inputs given with their true continuation, e.g.
the 36 windows of ``evaluate.py --window``). The ratio at a lead is the mean over the N inputs of
sqrt((M + 1) / M) spread / RMSE (``si_lightning.forecasting.metrics.spread_skill_ratio``, as in
``evaluate.py``); the interval is the 2.5 and 97.5 percentiles of that mean over inputs drawn with
replacement, so it says how far the figure of N inputs may move with other inputs of the same flow.
Prints one line per lead: ``lead 5: 0.779 [0.741, 0.818]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from si_lightning.forecasting.metrics import spread_skill_ratio


def ratios_by_input(forecasts: torch.Tensor, truth: torch.Tensor, leads: int) -> torch.Tensor:
    """(N, leads) the ratio of each input at leads 1..leads; forecasts (N, M, T + 1, ...), truth (N, T + 1, ...)."""
    return torch.stack([spread_skill_ratio(forecasts[k], truth[k])[1 : leads + 1] for k in range(truth.shape[0])])


def bootstrap(ratios: torch.Tensor, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high), each (leads,): the mean over inputs and its 95 % percentile bootstrap interval."""
    values = ratios.double().numpy()
    generator = np.random.default_rng(seed)
    picks = generator.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    means = values[picks].mean(1)  # (resamples, leads)
    return values.mean(0), np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("forecast", help="a forecast output folder (trajectories.npz with forecasts and truth)")
    parser.add_argument("--leads", type=int, default=8, help="leads 1..LEADS")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    path = Path(options.forecast) / "trajectories.npz"
    if not path.is_file():
        parser.error(f"FORECAST_DIR = {options.forecast!r}: a forecast output folder with trajectories.npz")
    with np.load(path) as content:
        forecasts, truth = torch.from_numpy(content["forecasts"]), torch.from_numpy(content["truth"])
    leads = min(options.leads, truth.shape[1] - 1)
    mean, low, high = bootstrap(ratios_by_input(forecasts, truth, leads), options.resamples, options.seed)
    for lead in range(leads):
        print(f"lead {lead + 1}: {mean[lead]:.3f} [{low[lead]:.3f}, {high[lead]:.3f}]")


if __name__ == "__main__":
    main()
