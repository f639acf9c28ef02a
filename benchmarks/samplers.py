"""Error versus NFE for every sampler, driven by the Gaussian-mixture oracle (no training).

The setting of [U] section 7.2 (docs/math.md section 7): d = 128, 5 modes with means ~ N(0, 7.5^2 I) and
covariances W^T W / d + I, the linear interpolant with gamma = sqrt(t (1 - t)), base N(0, I). For each
sampler (ODE fixed-step on uniform, cosine, log-SNR, EDM and pilot-fitted grids, the exponential integrator
dpm++2m, ODE adaptive, SDE for several eps scales, and sampling through the conversion to the linear path
with gamma = 0) it draws
N samples from the same base noise and reports

- SW2: the sliced 2-Wasserstein distance to N fresh data samples (P random directions, the same for all);
- KL12: KL(rho_1 || KDE of the samples) of the first two coordinates, by Monte Carlo over fresh data
  with the exact marginal density of rho_1 (a Gaussian KDE with Scott's bandwidth);

with the same metrics between two independent data draws as the floor. Prints a Markdown table and
saves a log-log plot. Usage: python benchmarks/samplers.py [--samples 2000] [--output benchmarks/samplers.png]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from si_lightning.analytic import GaussianMixture  # noqa: E402
from si_lightning.interpolants import Interpolant  # noqa: E402
from si_lightning.sampling import ODESampler, SDESampler, TimeGrid, convert_interpolant  # noqa: E402
from si_lightning.sampling.design import fit_lipschitz_grid, fit_local_error_grid  # noqa: E402

DIM, MODES = 128, 5


def benchmark_mixture(dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """[U] section 7.2: means ~ N(0, 7.5^2 I), covariances W^T W / d + I, linear interpolant, Brownian gamma."""
    generator = torch.Generator().manual_seed(0)
    means = 7.5 * torch.randn(MODES, DIM, generator=generator, dtype=torch.float64)
    factors = torch.randn(MODES, DIM, DIM, generator=generator, dtype=torch.float64)
    covariances = factors.transpose(1, 2) @ factors / DIM + torch.eye(DIM, dtype=torch.float64)
    weights = torch.tensor([0.1, 0.15, 0.2, 0.25, 0.3], dtype=torch.float64)
    interpolant = Interpolant("linear", "brownian", 1.0)
    return GaussianMixture(weights.to(dtype), means.to(dtype), covariances.to(dtype), interpolant)


def sliced_wasserstein(first: Tensor, second: Tensor, directions: Tensor) -> float:
    """SW2 = sqrt(mean over unit directions of W2^2 of the 1-D projections), equal sample counts."""
    projected_first = (first.double() @ directions).sort(dim=0).values
    projected_second = (second.double() @ directions).sort(dim=0).values
    return float((projected_first - projected_second).pow(2).mean().sqrt())


def marginal_log_density(oracle: GaussianMixture, points: Tensor) -> Tensor:
    """log rho_1 of the first two coordinates: a 2-D Gaussian mixture, exactly."""
    means, covariances = oracle.means[:, :2].double(), oracle.covariances[:, :2, :2].double()
    normal = torch.distributions.MultivariateNormal(means, covariance_matrix=covariances)
    return torch.logsumexp(oracle.weights.double().log() + normal.log_prob(points.double()[:, None, :]), dim=1)


def kde_log_density(samples: Tensor, points: Tensor, covariance: Tensor) -> Tensor:
    """Gaussian KDE in 2-D with kernel covariance ``covariance`` (2, 2)."""
    samples, points = samples.double(), points.double()
    kernel = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=covariance)
    log_kernel = kernel.log_prob(points[:, None, :] - samples[None, :, :])
    return torch.logsumexp(log_kernel, dim=1) - math.log(samples.shape[0])


def kl_first_two(oracle: GaussianMixture, samples: Tensor, reference: Tensor) -> float:
    """KL(rho_1 || KDE(samples)) on coordinates (0, 1), averaged over ``reference`` drawn from rho_1.

    The modes are far apart, so Scott's rule (bandwidth^2 = n^(-1/3) times the covariance) uses the mean
    within-mode covariance of the two coordinates, not the sample covariance that the spread of the modes
    would inflate.
    """
    within = (oracle.weights[:, None, None] * oracle.covariances[:, :2, :2]).sum(0).double()
    covariance = within * samples.shape[0] ** (-1 / 3)
    points = reference[:, :2]
    return float((marginal_log_density(oracle, points) - kde_log_density(samples[:, :2], points, covariance)).mean())


def samplers(fitted: dict[str, TimeGrid]) -> list[tuple[str, str, Callable[[], object]]]:
    """(family, setting, sampler) for every row of the table; ``fitted`` holds the grids fitted on a pilot."""
    rows: list[tuple[str, str, Callable[[], object]]] = []
    for steps in (10, 20, 50, 100):
        rows.append(("ODE euler", f"{steps} steps", lambda steps=steps: ODESampler("euler", steps=steps)))
    for grid in ("uniform", "cosine"):
        for steps in (5, 10, 25, 50):
            rows.append((f"ODE heun {grid}", f"{steps} steps", lambda s=steps, g=grid: ODESampler("heun", s, grid=g)))
    for steps in (3, 5, 10, 25):
        rows.append(("ODE rk4", f"{steps} steps", lambda steps=steps: ODESampler("rk4", steps=steps)))
    for grid in ("logsnr", "edm"):
        for steps in (6, 8, 10, 12, 16, 25):
            rows.append(
                (f"ODE dpm++2m {grid}", f"{steps} steps", lambda s=steps, g=grid: ODESampler("dpm++2m", s, grid=g))
            )
    for name in ("local-error-2", "lipschitz"):
        for steps in (6, 8, 10, 12):
            rows.append(
                (
                    f"ODE dpm++2m {name}",
                    f"{steps} steps",
                    lambda s=steps, g=fitted[name]: ODESampler("dpm++2m", s, grid=g),
                )
            )
        for steps in (4, 5, 6, 10):
            rows.append(
                (f"ODE heun {name}", f"{steps} steps", lambda s=steps, g=fitted[name]: ODESampler("heun", s, grid=g))
            )
    for grid in ("logsnr", "edm"):
        for steps in (4, 5, 6, 10):
            rows.append((f"ODE heun {grid}", f"{steps} steps", lambda s=steps, g=grid: ODESampler("heun", s, grid=g)))
    for steps in (12, 20, 50):
        rows.append(
            (
                "ODE euler local-error-1",
                f"{steps} steps",
                lambda s=steps: ODESampler("euler", s, grid=fitted["local-error-1"]),
            )
        )
    for steps in (8, 12):
        rows.append(
            (
                "converted to linear, gamma = 0: dpm++2m logsnr",
                f"{steps} steps",
                lambda s=steps: ODESampler("dpm++2m", s, grid="logsnr"),
            )
        )
    for tolerance in (1e-2, 1e-3, 1e-4, 1e-5):
        rows.append(
            ("ODE dopri5", f"tol {tolerance:g}", lambda tol=tolerance: ODESampler("dopri5", atol=tol, rtol=tol))
        )
    for scale in (0.2, 1.0, 3.0):
        for steps in (20, 50, 100, 250):
            rows.append(
                (
                    f"SDE EM eps={scale:g}",
                    f"{steps} steps",
                    lambda s=steps, c=scale: SDESampler(
                        s, diffusion="constant", scale=c, last_step="tweedie", last_step_size=0.01
                    ),
                )
            )
    for steps in (20, 50, 100, 250):
        rows.append(
            (
                "SDE EM sbdm x1",
                f"{steps} steps",
                lambda s=steps: SDESampler(s, diffusion="sbdm", scale=1.0, last_step="mean", last_step_size=0.04),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--directions", type=int, default=256)
    parser.add_argument("--output", default="benchmarks/samplers.png")
    arguments = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    oracle = benchmark_mixture()
    generator = torch.Generator().manual_seed(1)
    count = arguments.samples
    x0 = oracle.sample_base(count, generator)
    reference = oracle.sample_data(count, generator)
    directions = torch.randn(DIM, arguments.directions, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    # The metrics of exact samples: independent data draws against the same reference (mean and spread).
    floors = [oracle.sample_data(count, generator) for _ in range(10)]
    floor_sw = torch.tensor([sliced_wasserstein(floor, reference, directions) for floor in floors], dtype=torch.float64)
    floor_kl = torch.tensor([kl_first_two(oracle, floor, reference) for floor in floors], dtype=torch.float64)

    print(f"d = {DIM}, {MODES} modes, N = {count} samples, SW2 over {arguments.directions} directions\n")
    print("| sampler | setting | NFE | SW2 | KL12 (nats) | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    print(
        f"| data vs data (floor, 10 draws) | - | - | {floor_sw.mean():.4f} +- {floor_sw.std():.4f} "
        f"| {floor_kl.mean():.4f} +- {floor_kl.std():.4f} | - |"
    )
    # Grids fitted on a pilot batch of 64 base draws (seed 5), independent of the evaluated samples.
    pilot = oracle.sample_base(64, torch.Generator().manual_seed(5))
    fitted = {
        "local-error-1": fit_local_error_grid(oracle, pilot, order=1),
        "local-error-2": fit_local_error_grid(oracle, pilot, order=2),
        "lipschitz": fit_lipschitz_grid(oracle, pilot),
    }
    # The same mixture's fields sampled along the linear path with gamma = 0 through the exact conversion.
    converted = convert_interpolant(oracle, Interpolant("linear", "zero"))
    results: dict[str, list[tuple[int, float, float]]] = {}
    for family, setting, build in samplers(fitted):
        sampler = build()
        fields = converted if family.startswith("converted") else oracle
        start = time.perf_counter()
        try:
            if isinstance(sampler, SDESampler):
                result = sampler.sample(fields, x0, seeds=range(count))
            else:
                result = sampler.sample(fields, x0)
        except FloatingPointError as error:
            print(f"| {family} | {setting} | - | diverged | - | - |  <!-- {error} -->")
            continue
        seconds = time.perf_counter() - start
        sw, kl = sliced_wasserstein(result.x, reference, directions), kl_first_two(oracle, result.x, reference)
        results.setdefault(family, []).append((result.nfe, sw, kl))
        print(f"| {family} | {setting} | {result.nfe} | {sw:.4f} | {kl:.4f} | {seconds:.1f} |", flush=True)

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for family, points in results.items():
        nfe, sw, kl = zip(*points, strict=True)
        style = "--" if family.startswith("SDE") else ":" if "dpm" in family or "fitted" in family else "-"
        axes[0].plot(nfe, sw, style, marker="o", label=family)
        axes[1].plot(nfe, [max(value, 1e-4) for value in kl], style, marker="o", label=family)
    for axis, name, value in ((axes[0], "SW2", floor_sw), (axes[1], "KL of coordinates (0, 1)", floor_kl)):
        axis.axhline(max(float(value.mean()), 1e-4), color="gray", linestyle=":", label="data vs data")
        axis.set(xscale="log", yscale="log", xlabel="NFE", ylabel=name)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Oracle-driven samplers, d = {DIM}, {MODES}-mode mixture, N = {count}")
    figure.tight_layout()
    figure.savefig(arguments.output, dpi=120)
    print(f"\nplot: {arguments.output}")


if __name__ == "__main__":
    main()
