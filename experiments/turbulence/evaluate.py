"""Score ensemble forecasts of Kolmogorov flow against held-out solver trajectories; write the table and spectra.

    python experiments/turbulence/evaluate.py --data-root data/kolmogorov --out results \\
        --forecasts energy=forecasts/energy plain=forecasts/plain regression=forecasts/regression
    # 500-step roll-outs: the test trajectories run on by the solver to 501 snapshots, 16 independent
    # solver trajectories as the spectrum's floor, the spectrum averaged over leads 100-500
    python experiments/turbulence/evaluate.py --write-inputs held-out-500.npz --snapshots 501 --floor-trajectories 16
    python experiments/turbulence/evaluate.py --truth held-out-500.npz --spectrum-from 100 --out results-500 \\
        --forecasts energy=long/energy plain=long/plain regression=long/regression

Each forecast folder is the output of ``si-lightning forecast`` run on ``held-out.npz`` (written by
``--write-inputs``: the data module's test trajectories, with ``--snapshots`` run on by the same solver from
the same initial conditions). The truth is the data module's test split, or ``--truth`` (an .npz with
``trajectories``, e.g. windows cut from them). Persistence (the initial state held fixed) is scored from the
same trajectories. Scores: RMSE of the ensemble mean and the spread-skill ratio by lead time (mean over
leads 1..decorrelation), fair CRPS, Wasserstein-1 of kinetic energy and enstrophy against the solver's (all
leads, all members), mean relative error of the energy spectrum over shells 1..N/3 averaged over leads >=
``--spectrum-from``, members blown up (energy non-finite or above 10x the largest true energy) and the
range of the kinetic energy. The spectrum's floor is the same error between the solver's own trajectories:
the truth file's ``floor`` (independent trajectories, ``--floor-trajectories``) against the truth, or else
one half of the truth against the other.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from si_lightning.data import KolmogorovFlowDataModule
from si_lightning.forecasting.metrics import energy_spectrum, spectrum_relative_error
from si_lightning.forecasting.scores import decorrelation_lead
from si_lightning.forecasting.scores import forecast_scores as scores
from si_lightning.physics import kinetic_energy
from si_lightning.seeding import derived_seed

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "kolmogorov-forecast.yaml"


def data_module(root: str) -> KolmogorovFlowDataModule:
    settings = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]
    return KolmogorovFlowDataModule(**{**settings, "root": root})


def write_inputs(
    data: KolmogorovFlowDataModule, path: str, snapshots: int | None, floor_count: int, window: int | None
) -> None:
    """The test trajectories as an .npz: run to ``snapshots``, or cut into windows of ``window`` leads (every
    window + 1 frames: more inputs, each with its truth), plus ``floor_count`` independent solver trajectories."""
    test = data.generate_split("test", snapshots) if snapshots else data.trajectories("test")
    cached = data.trajectories("test")
    if not torch.equal(test[:, : cached.shape[1]], cached[:, : test.shape[1]]):
        raise RuntimeError("the regenerated test trajectories differ from the cached ones")  # the solver changed
    if window:
        starts = range(0, test.shape[1] - window, window + 1)
        test = torch.stack([trajectory[start : start + window + 1] for trajectory in test for start in starts])
    arrays = {"trajectories": test.numpy()}
    if floor_count:
        seed = derived_seed(data.seed, "kolmogorov", "spectrum-floor")
        floor = data.solver.trajectories(floor_count, seed, data.spin_up, test.shape[1], data.interval)
        arrays["floor"] = floor.float().numpy()
    np.savez(path, **arrays)


def energy_range(trajectories: torch.Tensor, window_from: int) -> dict:
    """Kinetic energy of (..., T, 2, N, N) over leads >= 1 (minimum, maximum), its mean over leads >= window_from
    and, by lead, its mean, minimum and maximum over the trajectories (those with a non-finite energy left out)."""
    energy = kinetic_energy(trajectories).flatten(0, -2)  # (trajectories, T)
    finite = energy[torch.isfinite(energy).all(1)]
    if not len(finite):
        return {"energy_min": float("nan"), "energy_max": float("nan"), "energy_mean_window": float("nan")}
    return {
        "energy_min": float(finite[:, 1:].min()),
        "energy_max": float(finite[:, 1:].max()),
        "energy_mean_window": float(finite[:, window_from:].mean()),
        "energy_mean_by_lead": finite.mean(0).tolist(),
        "energy_min_by_lead": finite.min(0).values.tolist(),
        "energy_max_by_lead": finite.max(0).values.tolist(),
    }


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
    parse.add_argument("--snapshots", type=int, help="with --write-inputs: run the test trajectories to this length")
    parse.add_argument("--floor-trajectories", type=int, default=0, help="with --write-inputs: independent ones")
    parse.add_argument("--window", type=int, help="with --write-inputs: cut the trajectories into windows of N leads")
    parse.add_argument("--truth", help=".npz with the true trajectories (and floor); default: the test split")
    parse.add_argument("--forecasts", nargs="*", default=[], help="name=folder of si-lightning forecast outputs")
    parse.add_argument("--spectrum-from", type=int, default=10, help="first lead of the spectrum average")
    parse.add_argument("--checkpoints", nargs="*", default=[], help="name=checkpoint: report schedules and energy")
    options = parse.parse_args(arguments)
    if options.write_inputs:
        write_inputs(
            data_module(options.data_root),
            options.write_inputs,
            options.snapshots,
            options.floor_trajectories,
            options.window,
        )
        return 0
    floor = None
    if options.truth:
        with np.load(options.truth) as content:
            truth = torch.from_numpy(content["trajectories"]).double()
            if "floor" in content.files:
                floor = torch.from_numpy(content["floor"]).double()
    else:
        truth = data_module(options.data_root).trajectories("test").double()
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
        table[name].update(energy_range(forecasts[:, :, :leads], options.spectrum_from))
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"decorrelation_lead": decorrelation, "leads": leads - 1, "inputs": truth.shape[0], "models": table}
    summary["solver"] = energy_range(truth, options.spectrum_from)
    # real-versus-real floor: independent solver trajectories against the truth, or one half of it against the other
    half = truth.shape[0] // 2
    shells = slice(1, truth.shape[-1] // 3 + 1)
    first, second = (truth[:half], truth[half:]) if floor is None else (floor[:, :leads], truth)
    first, second = (
        energy_spectrum(part[:, options.spectrum_from :]).flatten(0, -2).mean(0) for part in (first, second)
    )
    summary["spectrum_floor"] = spectrum_relative_error(first, second, shells)
    summary["spectrum_floor_trajectories"] = (
        [half, truth.shape[0] - half] if floor is None else [len(floor), len(truth)]
    )
    if floor is not None:
        summary["floor_solver"] = energy_range(floor[:, :leads], options.spectrum_from)
    summary["energy_consistency"] = {
        name: energy_consistency(path, truth) for name, path in (entry.split("=", 1) for entry in options.checkpoints)
    }
    (out / "results.json").write_text(compact_json(summary))
    lines = [
        f"leads 1..{leads - 1}, decorrelation lead {decorrelation}, {truth.shape[0]} held-out trajectories",
        "",
        "| model | members | RMSE (to decorr.) | CRPS (to decorr.) | CRPS (all) | spread-skill (to decorr.) "
        f"| energy W1 | enstrophy W1 | spectrum rel. error (leads >= {options.spectrum_from}) | blown up "
        f"| energy min-max (mean, leads >= {options.spectrum_from}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        ratio = row.get("spread_skill_to_decorrelation")
        lines.append(
            f"| {name} | {row['members']} | {row['rmse_to_decorrelation']:.3f} | {row['crps_to_decorrelation']:.3f} "
            f"| {row['crps_all_leads']:.3f} | {'-' if ratio is None else f'{ratio:.2f}'} | {row['energy_w1']:.4f} "
            f"| {row['enstrophy_w1']:.3f} | {100 * row['spectrum_relative_error']:.1f} % | {row['blown_up']} "
            f"| {energy_cell(row) if 'energy_min' in row else '-'} |"
        )
    lines.append(f"| solver | - | - | - | - | - | - | - | - | - | {energy_cell(summary['solver'])} |")
    floor_sizes = summary["spectrum_floor_trajectories"]
    lines.append(
        f"\nspectrum relative error of the solver's own trajectories, {floor_sizes[0]} against {floor_sizes[1]} "
        f"(the floor at this sample size): {100 * summary['spectrum_floor']:.1f} %"
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
    plot_energy(table, summary["solver"], out / "energy.png")
    return 0


def compact_json(value: object) -> str:
    """JSON with floats to 6 significant digits and each list of numbers on one line (the per-lead curves)."""

    def rounded(item: object) -> object:
        if isinstance(item, float):
            return float(f"{item:.6g}")
        if isinstance(item, dict):
            return {key: rounded(entry) for key, entry in item.items()}
        if isinstance(item, list):
            return [rounded(entry) for entry in item]
        return item

    text = json.dumps(rounded(value), indent=1)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda match: "[" + " ".join(match.group(1).split()) + "]", text)


def energy_cell(row: dict) -> str:
    return f"{row['energy_min']:.2f}-{row['energy_max']:.2f} ({row['energy_mean_window']:.2f})"


def plot_energy(table: dict, solver: dict, path: Path) -> None:
    """Kinetic energy by lead: each model's mean and range over its members and inputs, the solver's band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    leads = np.arange(len(solver["energy_mean_by_lead"]))
    axes.fill_between(leads, solver["energy_min_by_lead"], solver["energy_max_by_lead"], color="0.85", label="solver")
    axes.plot(leads, solver["energy_mean_by_lead"], "k-", linewidth=1.5)
    for name, row in table.items():
        if "energy_mean_by_lead" not in row:
            continue
        line = axes.plot(leads, row["energy_mean_by_lead"], "-", linewidth=1, label=f"{name} (mean, range)")
        axes.plot(leads, row["energy_max_by_lead"], ":", linewidth=0.8, color=line[0].get_color())
        axes.plot(leads, row["energy_min_by_lead"], ":", linewidth=0.8, color=line[0].get_color())
    axes.set_xlabel("lead (forecast steps)")
    axes.set_ylabel("kinetic energy")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


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
