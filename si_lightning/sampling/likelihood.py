"""Log-likelihood of data under the generative model (docs/math.md section 5), in nats per sample.

ODE ([U] Lemma 2.5): log rho_1(x) = log rho_0(X_0) - int_0^1 div b(t, X_t) dt, with X solved backwards
from X_1 = x; the divergence exact or by Hutchinson (probes drawn once per solve, K averaged, with the
standard error over the K per-probe estimates, which share one path).

SDE ([U] Thm 2.5): along the backward SDE dY = b_B dt + sqrt(2 eps) dW^B from Y_1 = x,

    log rho_1(x) = E[ log rho_0(Y_0) - int_0^1 (div b_F + eps |s|^2) dt ],   b_F = b + eps s, b_B = b - eps s,

estimated by the mean over independent paths, with its Monte-Carlo standard error. Both integrate
over the fields' valid interval [t_min, t_max] (the score interval for the SDE) and use rho_0 at t_min.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from si_lightning.checks import lookup, positive_int
from si_lightning.condition import Condition
from si_lightning.sampling.checks import (
    batch_time,
    check_condition,
    check_data,
    check_interval_argument,
    resolve_interval,
)
from si_lightning.sampling.diffusion import DIFFUSIONS
from si_lightning.sampling.divergence import DIVERGENCES, field_and_divergence
from si_lightning.sampling.fields import CountedFields, Fields, as_fields
from si_lightning.sampling.grids import GRIDS
from si_lightning.sampling.ode import ODESampler
from si_lightning.sampling.sde import check_score
from si_lightning.sampling.seeds import GeneratorArgument, NoiseSource, Seeds
from si_lightning.sampling.solvers import FiniteMonitor, State

BaseLogProb = Callable[[Tensor], Tensor]  # x0 (batch, ...) -> log rho_0(x0) (batch,)

# 8-bit data k in {0..255} mapped to x = 2 (k + u) / 256 - 1: the Jacobian (256 / 2)^D of the map from
# x to k + u adds log2(128) = 7 bits per dimension (docs/math.md section 5).
DEQUANTISATION_BITS = math.log2(128)


def bits_per_dim(log_prob: Tensor, dims: int) -> Tensor:
    """-log p(x) / (D ln 2) + 7: bits/dim of 8-bit data in [-1, 1] with uniform dequantisation.

    For x = 2 (k + u) / 256 - 1 with u ~ U[0, 1)^D this is an upper bound on the discrete data's
    bits/dim (the dequantisation bound). ``log_prob`` in nats (batch,), ``dims`` = D per sample.
    """
    positive_int("dims", dims)
    return -log_prob / (dims * math.log(2)) + DEQUANTISATION_BITS


@dataclass(frozen=True)
class LikelihoodResult:
    """log_prob (batch,) in nats; standard_error (batch,) of its Monte-Carlo estimate (None if exact).

    nfe counts forward network evaluations per sample (each followed by D backward passes for the
    exact divergence, K for Hutchinson); estimator says which estimator, probes and paths were used.
    """

    log_prob: Tensor
    nfe: int
    standard_error: Tensor | None
    dims: int
    estimator: str

    def bits_per_dim(self) -> Tensor:
        """Bits/dim under the uniform dequantisation of 8-bit data in [-1, 1] (see ``bits_per_dim``)."""
        return bits_per_dim(self.log_prob, self.dims)


def _standard_error(estimates: Tensor) -> Tensor | None:
    """std / sqrt(n) over the first dimension of (n, batch), or None for n = 1."""
    count = estimates.shape[0]
    return estimates.std(dim=0) / math.sqrt(count) if count > 1 else None


def _base_log_prob(base_log_prob: BaseLogProb, x0: Tensor) -> Tensor:
    value = base_log_prob(x0)
    if not isinstance(value, Tensor) or value.shape != (x0.shape[0],):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"base_log_prob must return a tensor of shape ({x0.shape[0]},), got {shape}")
    return value


def log_likelihood(
    fields: Fields,
    x1: Tensor,
    base_log_prob: BaseLogProb,
    divergence: str = "exact",
    probes: int = 1,
    method: str = "dopri5",
    atol: float = 1e-5,
    rtol: float = 1e-5,
    steps: int = 100,
    grid: str = "uniform",
    interval: tuple[float, float] | None = None,
    cond: Condition | None = None,
    probe: str = "gaussian",
    generator: GeneratorArgument = None,
    seeds: Seeds | None = None,
) -> LikelihoodResult:
    """log rho_1(x1) (batch,) by the probability-flow ODE solved from t_end down to t_start.

    Args:
        fields: the fields (only the velocity is used).
        x1: data (batch, ...).
        base_log_prob: log rho_0, (batch, ...) -> (batch,).
        divergence: one of ``DIVERGENCES`` (exact, hutchinson).
        probes: K Hutchinson probes per sample, drawn once per solve and averaged.
        method, atol, rtol, steps, grid: the ODE solver (see ``ODESampler``).
        interval: (t_start, t_end) inside the fields' valid interval; None takes the whole of it.
        probe: one of ``PROBES`` (gaussian, rademacher).
        generator, seeds: randomness of the probes (per-sample seeds: batch-size invariant).
    """
    x1 = check_data("x1", x1)
    counted = CountedFields(as_fields(fields))
    cond = check_condition(cond, x1.shape[0])
    estimator = lookup(DIVERGENCES, divergence, "divergence estimator")(probes, probe)
    solver = ODESampler(method=method, steps=steps, atol=atol, rtol=rtol, grid=grid)
    start, end = resolve_interval(counted, check_interval_argument(interval), False, "log_likelihood")
    noise = NoiseSource.create(x1.shape[0], x1.device, generator, seeds, stream="probe")
    drawn = estimator.draw(x1, noise)
    batch = x1.shape[0]

    def function(t: Tensor, state: State) -> State:
        (velocity,), divergence_value = field_and_divergence(
            lambda x: (counted.velocity(batch_time(t, batch), x, cond),), state[0], estimator, drawn
        )
        return velocity, divergence_value

    accumulated = torch.zeros(estimator.count, batch, dtype=x1.dtype, device=x1.device)
    x0, accumulated = solver.integrate(function, (x1, accumulated), end, start, f"log_likelihood with {solver!r}")
    # accumulated = int_{t_end}^{t_start} div b dt = -int_{t_start}^{t_end} div b dt, one row per probe.
    estimates = _base_log_prob(base_log_prob, x0) + accumulated
    description = f"ODE ({solver!r}) on [{start}, {end}], {estimator.describe()}"
    return LikelihoodResult(estimates.mean(0), counted.nfe, _standard_error(estimates), x1[0].numel(), description)


def sde_log_likelihood(
    fields: Fields,
    x1: Tensor,
    base_log_prob: BaseLogProb,
    paths: int = 64,
    steps: int = 250,
    diffusion: str = "constant",
    scale: float = 1.0,
    divergence: str = "exact",
    probes: int = 1,
    probe: str = "gaussian",
    grid: str = "uniform",
    interval: tuple[float, float] | None = None,
    cond: Condition | None = None,
    generator: GeneratorArgument = None,
    seeds: Seeds | None = None,
) -> LikelihoodResult:
    """log rho_1(x1) (batch,) by the backward-SDE estimator of [U] Thm 2.5, averaged over ``paths``.

    Euler-Maruyama from t_end down to t_start with the left-point rule for the time integral; the
    standard error is over the paths (each with its own Brownian motion and, for Hutchinson, probes).
    ``diffusion``/``scale`` choose eps(t) (``DIFFUSIONS``); the other arguments are as in ``log_likelihood``.
    """
    x1 = check_data("x1", x1)
    counted = CountedFields(as_fields(fields))
    paths = positive_int("paths", paths)
    steps = positive_int("steps", steps)
    eps_family = lookup(DIFFUSIONS, diffusion, "diffusion")(scale)
    time_grid_family = lookup(GRIDS, grid, "time grid")()
    check_score(counted, "sde_log_likelihood")
    estimator = lookup(DIVERGENCES, divergence, "divergence estimator")(probes, probe)
    batch = x1.shape[0]
    cond = check_condition(cond, batch)
    start, end = resolve_interval(counted, check_interval_argument(interval), True, "sde_log_likelihood")
    time_grid = time_grid_family(end, start, steps, device=x1.device, dtype=x1.dtype)
    eps = eps_family.on_grid(time_grid, counted.interpolant)

    # Path j of sample i is row i * paths + j; the noise of sample i comes from its own generator.
    noise = NoiseSource.create(batch, x1.device, generator, seeds, stream="sde")
    x = x1.repeat_interleave(paths, dim=0)
    index = torch.arange(batch, device=x1.device).repeat_interleave(paths)
    path_cond = None if cond is None else cond.select(index)

    drawn = estimator.draw(x1, noise, paths)
    accumulated = torch.zeros(batch * paths, dtype=x1.dtype, device=x1.device)
    monitor = FiniteMonitor(x1.device)
    for step_index in range(steps):
        t, step, eps_t = time_grid[step_index], time_grid[step_index + 1] - time_grid[step_index], eps[step_index]

        def output(state: Tensor, t: Tensor = t, eps_t: Tensor = eps_t) -> tuple[Tensor, Tensor, Tensor]:
            velocity, score = counted.velocity_and_score(batch_time(t, state.shape[0]), state, path_cond)
            return velocity + eps_t * score, velocity, score

        (_, velocity, score), divergence_value = field_and_divergence(output, x, estimator, drawn)
        integrand = divergence_value.mean(0) + eps_t * score.flatten(1).pow(2).sum(1)
        accumulated = accumulated + step * integrand  # step < 0: accumulates -int (div b_F + eps |s|^2) dt
        increment = noise.normal((batch, paths, *x1.shape[1:]), x1.device, x1.dtype).flatten(0, 1)
        x = x + step * (velocity - eps_t * score) + torch.sqrt(2 * eps_t * step.abs()) * increment
        monitor.update(step_index, (x, accumulated))
    monitor.check(time_grid, f"sde_log_likelihood (eps {eps_family.name} x {eps_family.scale}, {steps} steps)")
    estimates = (_base_log_prob(base_log_prob, x) + accumulated).reshape(batch, paths).T
    description = (
        f"backward SDE, Euler-Maruyama, {steps} steps on [{start}, {end}], eps {eps_family.name} "
        f"x {eps_family.scale}, {paths} paths, {estimator.describe()}"
    )
    return LikelihoodResult(estimates.mean(0), counted.nfe, _standard_error(estimates), x1[0].numel(), description)
