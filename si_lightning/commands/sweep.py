"""The sampler grid of ``evaluate --sweep``: one FID per (sampler, guidance scale), a CSV and a plot.

Grid: every ODE method at every step count, every SDE diffusion family at every scale and step
count (Euler-Maruyama, mean last step), each at every guidance scale; or, with ``--sweep-samplers``,
the named presets (``ode-dpm++2m-logsnr-10,ode-heun-edm-10,...``: one line per method and grid). The
same seeds for every point, so the differences are the samplers', not the noise's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from si_lightning.commands.samplers import SamplerSpec
from si_lightning.files import write_atomically

CSV_COLUMNS = ("sampler", "family", "method", "steps", "diffusion", "scale", "guidance_scale", "nfe", "fid")


@dataclass(frozen=True)
class SweepPoint:
    family: str  # the line of the plot: "ode-heun", "sde-sbdm-1.0"
    spec: SamplerSpec
    guidance_scale: float | None
    preset: str | None = None  # the preset name the point was given by

    @property
    def name(self) -> str:
        arguments = self.spec.init_args
        if self.preset is not None:
            name = self.preset
        elif self.spec.class_path.endswith("ODESampler"):
            name = f"ode-{arguments['method']}-{arguments['steps']}"
        else:
            name = f"sde-{arguments['diffusion']}-{arguments['scale']:g}-{arguments['steps']}"
        return name if self.guidance_scale is None else f"{name}-w{self.guidance_scale:g}"


def sweep_grid(
    ode_methods: list[str],
    ode_steps: list[int],
    sde_diffusions: list[str],
    sde_scales: list[float],
    sde_steps: list[int],
    guidance_scales: list[float | None],
) -> list[SweepPoint]:
    points = []
    for guidance in guidance_scales:
        suffix = "" if guidance is None else f"-w{guidance:g}"
        for method in ode_methods:
            for steps in ode_steps:
                spec = SamplerSpec("si_lightning.sampling.ODESampler", {"method": method, "steps": steps})
                points.append(SweepPoint(f"ode-{method}{suffix}", spec, guidance))
        for diffusion in sde_diffusions:
            for scale in sde_scales:
                for steps in sde_steps:
                    arguments = {"steps": steps, "method": "euler-maruyama", "diffusion": diffusion, "scale": scale}
                    spec = SamplerSpec("si_lightning.sampling.SDESampler", arguments)
                    points.append(SweepPoint(f"sde-{diffusion}-{scale:g}{suffix}", spec, guidance))
    return points


def preset_points(names: list[str], guidance_scales: list[float | None]) -> list[SweepPoint]:
    """One point per preset and guidance scale; the family is the name without its step count."""
    from si_lightning.commands.samplers import sampler_spec

    points = []
    for guidance in guidance_scales:
        suffix = "" if guidance is None else f"-w{guidance:g}"
        for name in names:
            spec = sampler_spec(name, "--sweep-samplers")
            family = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
            points.append(SweepPoint(f"{family}{suffix}", spec, guidance, preset=name))
    return points


def run_sweep(points: list[SweepPoint], evaluate: Callable[[SweepPoint], tuple[float, float]]) -> list[dict[str, Any]]:
    """One row per point: ``evaluate(point)`` gives (FID, NFE per sample)."""
    rows = []
    for point in points:
        fid, nfe = evaluate(point)
        arguments = point.spec.init_args
        rows.append(
            {
                "sampler": point.name,
                "family": point.family,
                "method": arguments.get("method"),
                "steps": arguments.get("steps"),
                "diffusion": arguments.get("diffusion", ""),
                "scale": arguments.get("scale", ""),
                "guidance_scale": "" if point.guidance_scale is None else point.guidance_scale,
                "nfe": nfe,
                "fid": fid,
            }
        )
        print(f"{point.name}: fid {fid:.4f} at {nfe:.1f} NFE", flush=True)
    return rows


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, buffer.getvalue().encode())


def write_plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """FID versus NFE, one line per family, NFE on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for family in dict.fromkeys(row["family"] for row in rows):
        chosen = sorted((row["nfe"], row["fid"]) for row in rows if row["family"] == family)
        axes.plot([nfe for nfe, _ in chosen], [fid for _, fid in chosen], marker="o", label=family)
    axes.set_xscale("log")
    axes.set_xlabel("NFE per sample")
    axes.set_ylabel("FID")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_atomically(path, buffer.getvalue())
