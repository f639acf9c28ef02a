"""Pictures of a 2-D density model: data, samples, and the exact-divergence likelihood against the data density.

    python experiments/densities-2d/figures.py --ckpt runs/densities-2d/spirals/version_0/checkpoints/last.ckpt \
        --samples runs/densities-2d/spirals/samples/samples.npz --out runs/densities-2d/spirals/density.png

Panels: a histogram of the data (the true density, estimated from the run's data module), a
histogram of the model's samples, and exp(log rho_hat_1) on a grid from the probability-flow ODE
with the exact divergence (dopri5), all on one colour scale. Prints the total variation distance
between the model density (normalised on the grid) and the data histogram.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from si_lightning.callbacks.likelihood import standard_normal_log_prob
from si_lightning.commands.checkpoints import load_model
from si_lightning.commands.inputs import build_datamodule, run_config_path
from si_lightning.sampling import log_likelihood


def model_log_density(module, grid: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    fields = module.fields(ema=True)
    values = [
        log_likelihood(fields, chunk, standard_normal_log_prob, divergence="exact", method="dopri5").log_prob.detach()
        for chunk in grid.split(batch_size)
    ]
    return torch.cat(values)


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--samples", required=True, help="samples.npz of `si-lightning sample` (arr_0: (N, 2))")
    parser.add_argument("--out", required=True)
    parser.add_argument("--grid", type=int, default=200, help="grid points per axis")
    parser.add_argument("--limit", type=float, default=4.5, help="the square [-limit, limit]^2")
    parser.add_argument("--data-points", type=int, default=50000)
    options = parser.parse_args(arguments)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    module = load_model(options.ckpt)
    datamodule = build_datamodule(run_config_path(options.ckpt))
    count = min(options.data_points, len(datamodule.dataset("train")))
    data = datamodule.real_samples(count, torch.Generator().manual_seed(0)).double().numpy()
    with np.load(options.samples) as content:
        samples = content["arr_0"]
    edges = np.linspace(-options.limit, options.limit, options.grid + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    area = (edges[1] - edges[0]) ** 2
    data_density = np.histogram2d(data[:, 0], data[:, 1], bins=[edges, edges], density=True)[0].T
    sample_density = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges, edges], density=True)[0].T
    x, y = np.meshgrid(centres, centres)
    grid = torch.tensor(np.stack([x.ravel(), y.ravel()], axis=1), dtype=torch.float32)
    model_density = model_log_density(module, grid).exp().reshape(options.grid, options.grid).double().numpy()
    mass = model_density.sum() * area
    distance = 0.5 * np.abs(model_density / mass - data_density).sum() * area

    figure, axes = plt.subplots(1, 3, figsize=(12, 4), dpi=100)
    top = float(np.quantile(data_density, 0.995)) or None
    titles = ("data (histogram)", "samples, ODE heun 50 (histogram)", "model density exp(log rho_hat_1)")
    for axis, picture, title in zip(axes, (data_density, sample_density, model_density), titles, strict=True):
        axis.imshow(picture, origin="lower", extent=(edges[0], edges[-1], edges[0], edges[-1]), vmin=0, vmax=top)
        axis.set_title(title, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{Path(options.ckpt).parts[-4]}: mass on the grid {mass:.3f}, TV(model, data) {distance:.3f}")
    figure.tight_layout()
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(options.out)
    plt.close(figure)
    print(f"mass on grid {mass:.4f}; total variation to the data histogram {distance:.4f} -> {options.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
