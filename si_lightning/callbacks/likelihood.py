"""LikelihoodCallback: the model's log-likelihood of a fixed validation subset (docs/math.md section 5).

The subset is ``datamodule.real_samples(M, generator(seed), split)``, the same on every rank;
rank r evaluates the points r, r + W, ... with the probability-flow ODE (``log_likelihood``),
Hutchinson probes drawn from per-sample seeds (point i's probes from seed i), so each point's
value does not depend on the sharding. The per-point values are gathered in index order after
every rank has finished (no collective inside a solve) and averaged in float64. Under DDP the
solver must take fixed steps: the same NFE on every rank, so no rank waits for another.

Units (``LIKELIHOOD_UNITS``): ``bits-per-dim`` for 8-bit image data, reported as the uniform
dequantisation bound: each point is read as 8-bit pixels k = round((x + 1) 127.5) and evaluated at
x = 2 (k + u) / 256 - 1, u ~ U[0, 1)^D (seeded), bits/dim = -log p(x) / (D ln 2) + 7 (``bits_per_dim``);
``nats`` for continuous data (2-D toys): -log p(x) per point, the data as is.

Data-dependent couplings: the conditional likelihood log p(x1 | cond) of held-out points, the base
density being the coupling's ``base_log_prob`` (super-resolution: N(x0; U(D(x1)), sigma^2 I) over all
dimensions; in-painting: N(0, sigma^2 I) over the hidden dimensions only, so bits/dim count those).
Point i's condition (in-painting's mask) comes from seed i through the coupling, after dequantisation.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from si_lightning.callbacks.artifacts import publish_metrics, run_directory
from si_lightning.callbacks.generation import (
    HeldOutData,
    batched,
    evaluation_data,
    evaluation_mode,
    gather_in_order,
    local_indices,
)
from si_lightning.callbacks.schedule import PeriodicEvaluation
from si_lightning.checks import lookup, positive_count
from si_lightning.metrics import metric_name
from si_lightning.sampling import DIVERGENCES, PROBES, ODESampler, bits_per_dim, log_likelihood


def standard_normal_log_prob(x0: Tensor) -> Tensor:
    """log N(x0; 0, I) per sample: -|x0|^2 / 2 - D/2 log(2 pi); (B, ...) -> (B,)."""
    flat = x0.flatten(1)
    return -0.5 * flat.pow(2).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def dequantize(x: Tensor, generator: torch.Generator) -> Tensor:
    """8-bit pixels k = round((x + 1) 127.5) of x in [-1, 1], moved to 2 (k + u) / 256 - 1 with u ~ U[0, 1)."""
    pixels = torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return 2.0 * (pixels + noise) / 256.0 - 1.0


class LikelihoodUnits(ABC):
    """How points are prepared and how log p (nats, per point) is reported."""

    name: str = ""

    def prepare(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x

    @abstractmethod
    def report(self, log_prob: Tensor, dims: int) -> Tensor: ...


class BitsPerDim(LikelihoodUnits):
    """Uniformly dequantised 8-bit data: an upper bound on the discrete data's bits/dim."""

    name = "bits-per-dim"

    def prepare(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return dequantize(x, generator)

    def report(self, log_prob: Tensor, dims: int | Tensor) -> Tensor:
        if isinstance(dims, Tensor):  # per point (in-painting: the hidden dimensions)
            return -log_prob / (dims.to(log_prob.dtype) * math.log(2)) + 7.0
        return bits_per_dim(log_prob, dims)


class Nats(LikelihoodUnits):
    """-log p(x) in nats per point, for continuous data."""

    name = "nll-nats"

    def report(self, log_prob: Tensor, dims: int) -> Tensor:
        return -log_prob


LIKELIHOOD_UNITS: dict[str, type[LikelihoodUnits]] = {"bits-per-dim": BitsPerDim, "nats": Nats}


def units_for(units: str | None, data_shape: tuple[int, ...]) -> LikelihoodUnits:
    """The named units, or by default bits/dim for images (C, H, W) and nats otherwise."""
    if units is None:
        units = "bits-per-dim" if len(data_shape) == 3 else "nats"
    return lookup(LIKELIHOOD_UNITS, units, "likelihood units")()


def check_distributed_solver(solver: ODESampler, world_size: int) -> None:
    """Under DDP an adaptive solver would take a different number of steps on each rank."""
    if world_size > 1 and solver.adaptive:
        raise ValueError(
            f"LikelihoodCallback on {world_size} ranks needs a fixed-step method (euler, heun, rk4) so every rank "
            f"takes the same steps; got method={solver.method_name!r}"
        )


class LikelihoodCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` steps and at the end: mean bits/dim (or nats) of M validation points.

    Args:
        num_samples: M points of ``split``.
        every_n_steps: evaluate after every N-th optimiser step (None: only at the end).
        at_end: evaluate when fit ends.
        split: the data split of the points.
        method, steps, atol, rtol, grid: the ODE solver (see ``ODESampler``); fixed-step under DDP.
        divergence: ``hutchinson`` or ``exact`` (D backward passes per evaluation: small D only).
        probes: Hutchinson probes per point, drawn once per solve.
        probe: ``gaussian`` or ``rademacher``.
        batch_size: points per solve on each rank.
        units: ``bits-per-dim`` or ``nats``; None: bits/dim for images, nats otherwise.
        seed: chooses the M points and the dequantisation noise.
        ema: use the EMA weights (the raw weights if False).
    """

    def __init__(
        self,
        num_samples: int = 256,
        every_n_steps: int | None = 5000,
        at_end: bool = True,
        split: str = "val",
        method: str = "rk4",
        steps: int = 20,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        grid: str = "uniform",
        divergence: str = "hutchinson",
        probes: int = 1,
        probe: str = "gaussian",
        batch_size: int = 64,
        units: str | None = None,
        seed: int = 0,
        ema: bool = True,
    ) -> None:
        super().__init__(every_n_steps, at_end)
        self.num_samples = positive_count("num_samples", num_samples)
        self.split = split
        self.solver = ODESampler(method=method, steps=steps, atol=atol, rtol=rtol, grid=grid)
        lookup(DIVERGENCES, divergence, "divergence estimator")
        lookup(PROBES, probe, "probe")
        self.divergence, self.probe = divergence, probe
        self.probes = positive_count("probes", probes)
        self.batch_size = positive_count("batch_size", batch_size)
        if units is not None:
            lookup(LIKELIHOOD_UNITS, units, "likelihood units")
        self.units_name = units
        self.seed = positive_count("seed", seed, minimum=0)
        self.ema = bool(ema)
        self.points: Tensor | None = None
        self.units: LikelihoodUnits | None = None
        self.data: HeldOutData | None = None
        self.local_dims: Tensor | None = None

    @property
    def solver_label(self) -> str:
        """``ode-{method}-{steps}`` (fixed steps) or ``ode-{method}`` (adaptive): part of the metric name."""
        solver = self.solver
        return f"ode-{solver.method_name}" if solver.adaptive else f"ode-{solver.method_name}-{solver.steps}"

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the solver and the base; draw the M points (the same on every rank)."""
        check_distributed_solver(self.solver, trainer.world_size)
        interpolant = getattr(pl_module, "interpolant", None)
        datamodule = getattr(trainer, "datamodule", None)
        held_out = evaluation_data(trainer, self.num_samples, self.seed, self.split)
        if held_out is None and not getattr(interpolant, "gaussian_base", False):
            raise ValueError("LikelihoodCallback evaluates log rho_0 as N(0, I): it needs a Gaussian base")
        if datamodule is None or not hasattr(datamodule, "real_samples"):
            raise ValueError("LikelihoodCallback needs a datamodule with real_samples() for the evaluation points")
        generator = torch.Generator().manual_seed(self.seed)
        if held_out is not None:
            probe = held_out.inputs([0], torch.device("cpu"))
            held_out.coupling.base_log_prob(probe.x0, probe.cond)  # refused here if the base has no density
            points = held_out.x1
        else:
            points = datamodule.real_samples(self.num_samples, generator, split=self.split).float().cpu()
        self.units = units_for(self.units_name, tuple(points.shape[1:]))
        self.points = self.units.prepare(points, generator)
        if held_out is not None:
            self.num_samples = int(points.shape[0])
            self.data = HeldOutData(held_out.coupling, self.points, held_out.labels)

    def local_log_prob(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[Tensor, int]:
        """log p (nats) of this rank's points, in index order, and the NFE summed over its solves."""
        device = pl_module.device
        values, dims, evaluations = [], [], 0
        with evaluation_mode(pl_module, self.ema):
            fields = pl_module.fields(ema=self.ema)
            for batch in batched(local_indices(trainer, self.num_samples), self.batch_size, trainer):
                points, cond, base_log_prob = self.points[batch].to(device), None, standard_normal_log_prob
                if self.data is not None:
                    inputs = self.data.inputs(batch, device)
                    points, cond = inputs.x1, inputs.cond
                    base_log_prob = self._conditional_base(cond)
                    dims.append(self.data.coupling.base_log_prob(inputs.x0, cond)[1])
                result = log_likelihood(
                    fields,
                    points,
                    base_log_prob,
                    divergence=self.divergence,
                    probes=self.probes,
                    method=self.solver.method_name,
                    atol=self.solver.atol,
                    rtol=self.solver.rtol,
                    steps=self.solver.steps,
                    grid=self.solver.grid_name,
                    probe=self.probe,
                    seeds=batch,
                    cond=cond,
                )
                values.append(result.log_prob)
                evaluations += result.nfe * len(batch)
        local = torch.cat(values) if values else torch.zeros(0, device=device)
        self.local_dims = torch.cat(dims).double() if dims else torch.zeros(0, dtype=torch.float64, device=device)
        return local.double(), evaluations

    def _conditional_base(self, cond):
        """log rho_0(x0 | cond) of the coupling, for one batch's condition."""
        return lambda x0: self.data.coupling.base_log_prob(x0, cond)[0]

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        directory = run_directory(trainer)
        local, evaluations = self.local_log_prob(trainer, pl_module)
        log_prob = gather_in_order(trainer, local, self.num_samples)
        total = trainer.strategy.reduce(torch.tensor(float(evaluations), device=pl_module.device), reduce_op="sum")
        dims: int | Tensor = int(self.points[0].numel())
        if self.data is not None:
            dims = gather_in_order(trainer, self.local_dims, self.num_samples)
        per_point = self.units.report(log_prob, dims)
        mean = float(per_point.mean())
        error = float(per_point.std() / math.sqrt(self.num_samples)) if self.num_samples > 1 else float("nan")
        label, count, units = self.solver_label, self.num_samples, self.units.name
        metrics = {
            metric_name(f"{units}-{self.split}", label, count): mean,
            metric_name(f"{units}-{self.split}-stderr", label, count): error,
            metric_name("nfe-likelihood", label, count): float(total) / count,
        }
        details: dict[str, Any] = {
            "solver": repr(self.solver),
            "divergence": self.divergence,
            "probes": self.probes,
            "probe": self.probe,
            "units": units,
            "dequantization": "uniform 8-bit" if isinstance(self.units, BitsPerDim) else "none",
        }
        publish_metrics(trainer, directory, metrics, details)
