"""Score ensemble forecasts of Kolmogorov flow against held-out solver trajectories; write the table and spectra.

    python experiments/turbulence/evaluate.py --data-root data/kolmogorov --out results \\
        --forecasts energy=forecasts/energy plain=forecasts/plain regression=forecasts/regression

Each forecast folder is the output of ``si-lightning forecast`` run on ``held-out.npz`` (written by
``--write-inputs``). Persistence (the initial state held fixed) is scored from the same trajectories. Scores:
RMSE of the ensemble mean and the spread-skill ratio by lead time (mean over leads 1..decorrelation), fair
CRPS, Wasserstein-1 of kinetic energy and enstrophy against the solver's (all leads, all members), mean
relative error of the energy spectrum over shells 1..N/3 averaged over leads >= ``--spectrum-from``, and
members blown up (energy non-finite or above 10x the largest true energy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from si_lightning.data import KolmogorovFlowDataModule
from si_lightning.forecasting.metrics import energy_spectrum, spectrum_relative_error
from si_lightning.forecasting.scores import decorrelation_lead
from si_lightning.forecasting.scores import forecast_scores as scores

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "kolmogorov-forecast.yaml"


def data_module(root: str) -> KolmogorovFlowDataModule:
    settings = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]
    return KolmogorovFlowDataModule(**{**settings, "root": root})


def energy_consistency(checkpoint: str, truth: torch.Tensor) -> dict:
    """The schedules of a checkpoint and the largest relative error of its mean energy path on the held-out pairs."""
    from si_lightning.commands.checkpoints import load_model
    from si_lightning.forecasting import EnergyConsistentInterpolant

    interpolant = load_model(checkpoint).interpolant.double()
    if not isinstance(interpolant, EnergyConsistentInterpolant):
        return {}
    x0, x1 = truth[:, :-1].flatten(0, 1), truth[:, 1:].flatten(0, 1)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    linear = EnergyConsistentInterpolant(noise=interpolant.noise, learnable=False, project=interpolant.project).double()
    with torch.no_grad():
        alpha, beta, _, _ = interpolant.schedules(t[::25])
        return {
            "alpha_at_0_25_50_75_100": alpha.tolist(),
            "beta_at_0_25_50_75_100": beta.tolist(),
            "energy_error_max": float(interpolant.energy_residual(x0, x1, t).abs().max()),
            "energy_error_max_linear": float(linear.energy_residual(x0, x1, t).abs().max()),
        }


def main(arguments: list[str]) -> int:
    parse = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parse.add_argument("--data-root", default="data/kolmogorov")
    parse.add_argument("--out", default="results")
    parse.add_argument("--write-inputs", help="write the test trajectories to this .npz and stop")
    parse.add_argument("--forecasts", nargs="*", default=[], help="name=folder of si-lightning forecast outputs")
    parse.add_argument("--spectrum-from", type=int, default=10, help="first lead of the spectrum average")
    parse.add_argument("--checkpoints", nargs="*", default=[], help="name=checkpoint: report schedules and energy")
    options = parse.parse_args(arguments)
    truth = data_module(options.data_root).trajectories("test").double()
    if options.write_inputs:
        np.savez(options.write_inputs, trajectories=truth.float().numpy())
        return 0
    decorrelation = decorrelation_lead(truth)
    loaded = {}
    for entry in options.forecasts:
        name, folder = entry.split("=", 1)
        with np.load(Path(folder) / "trajectories.npz") as content:
            loaded[name] = torch.from_numpy(content["forecasts"]).double()
    leads = min([truth.shape[1], *(forecasts.shape[2] for forecasts in loaded.values())])  # every model alike
    truth = truth[:, :leads]
    persistence = truth[:, None, :1].expand(-1, 1, leads, -1, -1, -1)
    table = {"persistence": scores(persistence, truth, decorrelation, options.spectrum_from)}
    for name, forecasts in loaded.items():
        table[name] = scores(forecasts[:, :, :leads], truth, decorrelation, options.spectrum_from)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"decorrelation_lead": decorrelation, "leads": leads - 1, "inputs": truth.shape[0], "models": table}
    half = truth.shape[0] // 2  # real-versus-real floor: one half of the held-out trajectories against the other
    shells = slice(1, truth.shape[-1] // 3 + 1)
    first, second = (energy_spectrum(part[:, options.spectrum_from :]).flatten(0, -2).mean(0)
                     for part in (truth[:half], truth[half:]))  # fmt: skip
    summary["spectrum_floor"] = spectrum_relative_error(first, second, shells)
    summary["energy_consistency"] = {
        name: energy_consistency(path, truth) for name, path in (entry.split("=", 1) for entry in options.checkpoints)
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    lines = [
        f"leads 1..{leads - 1}, decorrelation lead {decorrelation}, {truth.shape[0]} held-out trajectories",
        "",
        "| model | members | RMSE (to decorr.) | CRPS (to decorr.) | CRPS (all) | spread-skill (to decorr.) "
        "| energy W1 | enstrophy W1 | spectrum rel. error | blown up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        ratio = row.get("spread_skill_to_decorrelation")
        lines.append(
            f"| {name} | {row['members']} | {row['rmse_to_decorrelation']:.3f} | {row['crps_to_decorrelation']:.3f} "
            f"| {row['crps_all_leads']:.3f} | {'-' if ratio is None else f'{ratio:.2f}'} | {row['energy_w1']:.4f} "
            f"| {row['enstrophy_w1']:.3f} | {100 * row['spectrum_relative_error']:.1f} % | {row['blown_up']} |"
        )
    lines.append(
        f"\nspectrum relative error of the solver's own trajectories, half against half (the floor at this sample "
        f"size): {100 * summary['spectrum_floor']:.1f} %"
    )
    for name, row in summary["energy_consistency"].items():
        if row:
            lines.append(
                f"\n{name}: max relative error of the mean energy path {100 * row['energy_error_max']:.2f} % "
                f"(linear schedule: {100 * row['energy_error_max_linear']:.2f} %); alpha at tau = 0, .25, .5, .75, 1: "
                f"{', '.join(f'{value:.3f}' for value in row['alpha_at_0_25_50_75_100'])}; beta: "
                f"{', '.join(f'{value:.3f}' for value in row['beta_at_0_25_50_75_100'])}"
            )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_spectra(table, out / "spectra.png", options.spectrum_from)
    return 0


def plot_spectra(table: dict, path: Path, spectrum_from: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4))
    truth = np.array(next(iter(table.values()))["truth_spectrum"])
    shells = np.arange(1, len(truth))
    axes.loglog(shells, truth[1:], "k-", linewidth=2, label="solver")
    for name, row in table.items():
        axes.loglog(shells, np.array(row["spectrum"])[1:], "--", label=name)
    axes.axvline(len(truth) * 2 / 3 - 2 / 3, color="grey", linewidth=0.5)  # the solver's 2/3 de-aliasing band ends here
    axes.set_ylim(bottom=1e-6)
    axes.set_xlabel("wavenumber k")
    axes.set_ylabel(f"E(k), mean over leads >= {spectrum_from}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
