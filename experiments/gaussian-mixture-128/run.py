"""[U] section 7.2: learn the d = 128 Gaussian mixture and measure KL divergences of ODE and SDE samplers.

    cd experiments/gaussian-mixture-128
    OMP_NUM_THREADS=1 python run.py --config config.yaml --out ../../runs/gaussian-mixture-128 --update-readme

Data: 5 modes with weights 0.1 ... 0.3, means ~ N(0, 7.5^2 I), covariances W^T W / d + I (seeded);
base N(0, I); the linear interpolant with gamma = sqrt(t (1 - t)). An MLP predicts the velocity and
the denoiser (``velocity+denoiser``), trained on batches of a pool of exact draws. Reported:

- KL(rho_1 || rho_hat_1) of the probability-flow ODE: E_{x ~ rho_1}[log rho_1(x) - log rho_hat_1(x)],
  log rho_hat_1 by the ODE likelihood with the exact divergence, rho_1 exact; the same estimate with
  the exact (oracle) fields shows the solver's own error (zero up to Monte-Carlo noise);
- KL on the first two coordinates of samples (a Gaussian KDE against the exact 2-D marginal) for the
  ODE and the SDEs with eps = c * (KL-optimal sbdm diffusion); the row "data" is exact samples (the
  floor of this estimator at this sample size).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import yaml
from torch import Tensor

from si_lightning.analytic import GaussianMixture
from si_lightning.interpolants import Interpolant, interpolant_loss
from si_lightning.nn import MLP
from si_lightning.sampling import NetworkFields, ODESampler, SDESampler, log_likelihood

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- results: written by run.py -->", "<!-- /results -->"


def mixture(dim: int, modes: int, seed: int) -> GaussianMixture:
    generator = torch.Generator().manual_seed(seed)
    means = 7.5 * torch.randn(modes, dim, generator=generator, dtype=torch.float64)
    factors = torch.randn(modes, dim, dim, generator=generator, dtype=torch.float64)
    covariances = factors.transpose(1, 2) @ factors / dim + torch.eye(dim, dtype=torch.float64)
    weights = torch.linspace(0.1, 0.3, modes, dtype=torch.float64)
    interpolant = Interpolant("linear", "brownian", 1.0)
    return GaussianMixture(weights.float(), means.float(), covariances.float(), interpolant)


def train(oracle: GaussianMixture, settings: dict, seed: int) -> MLP:
    torch.manual_seed(seed)
    network = MLP((oracle.dim,), out_channels=2 * oracle.dim, **settings["network"])
    optimizer = torch.optim.Adam(network.parameters(), lr=settings["training"]["lr"])
    steps = settings["training"]["steps"]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed + 1)
    low, high = oracle.interpolant.valid_interval(need_score=True)
    # Drawing is slower than a step, and in chunks: a draw holds one d x d factor per point.
    pool = torch.cat(
        [oracle.sample_data(4096, generator) for _ in range(-(-settings["training"]["pool_size"] // 4096))]
    )
    for step in range(steps):
        size = settings["training"]["batch_size"]
        x1 = pool[torch.randint(0, pool.shape[0], (size,), generator=generator)]
        x0 = torch.randn(x1.shape, generator=generator)
        t = low + (high - low) * torch.rand(size, generator=generator)
        loss = interpolant_loss(
            oracle.interpolant,
            "velocity+denoiser",
            lambda x, time: network(x, time),
            x0,
            x1,
            t,
            antithetic=settings["training"]["antithetic"],
        ).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    return network.eval().requires_grad_(False)


def likelihood_kl(fields, oracle: GaussianMixture, points: Tensor, steps: int) -> tuple[float, float]:
    """(mean, standard error) of log rho_1(x) - log rho_hat_1(x) over ``points`` drawn from rho_1."""
    estimate = log_likelihood(
        fields, points, oracle.base_log_prob, divergence="exact", method="rk4", steps=steps
    ).log_prob.detach()
    gaps = (oracle.log_prob(1.0, points) - estimate).double()
    return float(gaps.mean()), float(gaps.std() / math.sqrt(points.shape[0]))


def marginal_kl(oracle: GaussianMixture, samples: Tensor, reference: Tensor) -> float:
    """KL(rho_1 || KDE of the samples) on coordinates (0, 1), Scott's rule on the within-mode covariance."""
    weights, means = oracle.weights.double(), oracle.means[:, :2].double()
    covariances = oracle.covariances[:, :2, :2].double()
    normal = torch.distributions.MultivariateNormal(means, covariance_matrix=covariances)
    points = reference[:, :2].double()
    exact = torch.logsumexp(weights.log() + normal.log_prob(points[:, None, :]), dim=1)
    within = (weights[:, None, None] * covariances).sum(0) * samples.shape[0] ** (-1 / 3)
    kernel = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=within)
    estimate = torch.logsumexp(kernel.log_prob(points[:, None, :] - samples[None, :, :2].double()), dim=1)
    return float((exact - estimate + math.log(samples.shape[0])).mean())


def run(settings: dict) -> list[dict]:
    oracle = mixture(settings["dim"], settings["modes"], settings["seed"])
    started = time.time()
    network = train(oracle, settings, settings["seed"])
    training_seconds = time.time() - started
    fields = NetworkFields(lambda x, t, cond=None: network(x, t), oracle.interpolant, "velocity+denoiser")
    evaluation = settings["evaluation"]
    generator = torch.Generator().manual_seed(10_000)
    points = oracle.sample_data(evaluation["likelihood_points"], generator)
    reference = oracle.sample_data(evaluation["num_samples"], generator)
    count = evaluation["num_samples"]
    seeds = list(range(count))
    x0 = torch.randn((count, oracle.dim), generator=torch.Generator().manual_seed(20_000))
    rows = []
    for name, driven in (("learned", fields), ("exact (oracle)", oracle)):
        mean, error = likelihood_kl(driven, oracle, points, evaluation["likelihood_steps"])
        rows.append(
            {
                "model": name,
                "sampler": f"ODE likelihood, rk4 {evaluation['likelihood_steps']} steps",
                "nfe": None,
                "kl": mean,
                "kl_stderr": error,
                "kl_2d": None,
            }
        )
    rows.append(
        {
            "model": "data",
            "sampler": "exact samples",
            "nfe": None,
            "kl": None,
            "kl_stderr": None,
            "kl_2d": marginal_kl(oracle, oracle.sample_data(count, generator), reference),
        }
    )
    samplers = {"ODE heun": ODESampler("heun", steps=evaluation["ode_steps"])}
    for scale in evaluation["sde_scales"]:
        samplers[f"SDE eps = {scale:g} sbdm"] = SDESampler(evaluation["sde_steps"], diffusion="sbdm", scale=scale)
    for name, sampler in samplers.items():
        with torch.no_grad():
            if isinstance(sampler, SDESampler):
                result = sampler.sample(fields, x0, seeds=seeds)
            else:
                result = sampler.sample(fields, x0)
        rows.append(
            {
                "model": "learned",
                "sampler": name,
                "nfe": result.nfe,
                "kl": None,
                "kl_stderr": None,
                "kl_2d": marginal_kl(oracle, result.x, reference),
            }
        )
    for row in rows:
        row["training_seconds"] = round(training_seconds, 1)
    return rows


def table(rows: list[dict], settings: dict) -> str:
    def number(value, digits=4):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"d = {settings['dim']}, {settings['training']['steps']} training steps of batch "
        f"{settings['training']['batch_size']} ({rows[0]['training_seconds']} s), "
        f"{settings['evaluation']['num_samples']} samples per sampler, "
        f"{settings['evaluation']['likelihood_points']} likelihood points.",
        "",
        "| model | sampler | NFE | KL(rho_1 \\|\\| rho_hat_1) (nats) | KL, first two coordinates (nats) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        kl = "-" if row["kl"] is None else f"{row['kl']:.3f} +- {row['kl_stderr']:.3f}"
        nfe = "-" if row["nfe"] is None else str(row["nfe"])
        lines.append(f"| {row['model']} | {row['sampler']} | {nfe} | {kl} | {number(row['kl_2d'])} |")
    return "\n".join(lines)


def update_readme(text: str) -> None:
    content = README.read_text()
    start, stop = content.index(BEGIN) + len(BEGIN), content.index(END)
    README.write_text(content[:start] + "\n" + text + "\n" + content[stop:])


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--update-readme", action="store_true", help="write the table into this folder's README")
    options = parser.parse_args(arguments)
    settings = yaml.safe_load(Path(options.config).read_text())
    rows = run(settings)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = table(rows, settings)
    (out / "results.md").write_text(text + "\n")
    print(text)
    if options.update_readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
