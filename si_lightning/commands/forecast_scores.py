"""``si-lightning evaluate --forecasts DIR``: the scores of a ``forecast`` output against its truth.

DIR is a folder ``si-lightning forecast`` wrote: ``trajectories.npz`` holds the ensembles (K, M, T, 2, N, N) and
the inputs' true trajectories (K, T, 2, N, N) where the inputs had them. The scores are those of
``ForecastCallback`` and experiments/turbulence (``si_lightning.forecasting.forecast_scores``); the scalars go
into ``{out}/evaluation.json`` under ``values``, the per-lead curves and spectra beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from jsonargparse import Namespace

from si_lightning.commands.checks import check_output_path
from si_lightning.errors import EXIT_SUCCESS, ConfigurationError
from si_lightning.files import write_atomically
from si_lightning.forecasting import SCALAR_SCORES, decorrelation_lead, forecast_scores

EXPECTED = "a folder written by si-lightning forecast (trajectories.npz with forecasts and truth)"


def read_forecasts(folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(forecasts (K, M, T, ...), truth (K, T, ...)) float64 of a forecast folder; refused in one line."""
    path = Path(folder) / "trajectories.npz"
    if not path.is_file():
        raise ConfigurationError("--forecasts", folder, EXPECTED)
    try:
        with np.load(path) as content:
            forecasts, truth = content["forecasts"], content["truth"]
    except (OSError, ValueError, KeyError):
        raise ConfigurationError("--forecasts", folder, EXPECTED) from None
    if forecasts.ndim != 6 or truth.shape != (forecasts.shape[0], *forecasts.shape[2:]):
        raise ConfigurationError(
            "--forecasts", folder, f"{EXPECTED}: its truth covers every lead of the forecasts (inputs with "
            f"trajectories at least as long as the roll-out); forecasts {forecasts.shape}, truth {truth.shape}"
        )  # fmt: skip
    return torch.from_numpy(forecasts).double(), torch.from_numpy(truth).double()


def run(options: Namespace) -> int:
    """Score ``options.forecasts``; write evaluation.json under ``options.out`` and print one line."""
    if options.ckpt is not None or options.samples is not None:
        raise ConfigurationError("--forecasts", options.forecasts, "alone: not with --ckpt or --samples")
    check_output_path(options.out)
    forecasts, truth = read_forecasts(options.forecasts)
    leads = truth.shape[1] - 1
    if options.spectrum_from > leads:
        raise ConfigurationError("--spectrum-from", options.spectrum_from, f"a lead in 1..{leads} (the forecast's)")
    decorrelation = decorrelation_lead(truth)
    scores = forecast_scores(forecasts, truth, decorrelation, options.spectrum_from)
    values = {name: float(scores[name]) for name in SCALAR_SCORES if name in scores}
    curves = {name: value for name, value in scores.items() if name not in values}
    record = {
        "values": values,
        "source": f"forecasts {options.forecasts}",
        "inputs": int(truth.shape[0]),
        "leads": leads,
        "decorrelation_lead": decorrelation,
        "spectrum_from": options.spectrum_from,
        "curves": curves,
    }
    out = Path(options.out)
    write_atomically(out / "evaluation.json", (json.dumps(record, indent=2) + "\n").encode())
    shown = ", ".join(f"{name}={value:.6g}" for name, value in values.items())
    print(
        f"{shown} ({truth.shape[0]} inputs x {forecasts.shape[1]} members x {leads} leads) -> {out / 'evaluation.json'}"
    )
    return EXIT_SUCCESS
