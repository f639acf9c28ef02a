"""Thermodynamic integration on the linear energy interpolant (docs/math.md section 10).

U_t = (1 - t) U_a + t U_b, rho_t = exp(-U_t) / Z_t, so d F_t / dt = E_{rho_t}[dU_t/dt] = E_{rho_t}[U_b - U_a] and

    Delta F = int_0^1 E_{rho_t}[U_b - U_a] dt  ~  sum_k w_k mean_k        (Gauss-Legendre nodes t_k, weights w_k).

The samples at t_k come from Metropolis-adjusted Langevin (MALA) chains targeting rho_{t_k}, annealed
node by node: chains start at x_a and move up through the nodes below t = 1/2; with x_b given, a second
set starts at x_b and moves down through the nodes at or above 1/2 (without x_b the chains from x_a
visit every node). At each node the chains take ``mcmc_steps`` steps and mean_k averages U_b - U_a
over every state after a step. The standard error sqrt(sum_k w_k^2 var_k / n) treats each chain's
time average as one independent draw; it contains neither the quadrature error nor the bias of chains
that have not mixed (a barrier at intermediate t), which is why this is a baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from si_lightning.free_energy.averages import Estimate
from si_lightning.free_energy.energies import CountedEnergy


@dataclass(frozen=True)
class _Chains:
    """MALA state: x (n, d), U_a and U_b at x (n,) and their gradients (n, d)."""

    x: Tensor
    energy_a: Tensor
    energy_b: Tensor
    gradient_a: Tensor
    gradient_b: Tensor

    def energy(self, t: float) -> Tensor:
        """U_t = (1 - t) U_a + t U_b at x: (n,)."""
        return (1 - t) * self.energy_a + t * self.energy_b

    def gradient(self, t: float) -> Tensor:
        """grad U_t at x: (n, d)."""
        return (1 - t) * self.gradient_a + t * self.gradient_b


def _evaluate(energy_a: CountedEnergy, energy_b: CountedEnergy, x: Tensor) -> _Chains:
    """U_a, U_b and their gradients at x (n, d), by autograd (the energies must be differentiable)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value_a, value_b = energy_a(x), energy_b(x)
        (gradient_a,) = torch.autograd.grad(value_a.sum(), x)
        (gradient_b,) = torch.autograd.grad(value_b.sum(), x)
    return _Chains(x.detach(), value_a.detach(), value_b.detach(), gradient_a.detach(), gradient_b.detach())


def _mala_step(
    chains: _Chains,
    t: float,
    step_size: float,
    energy_a: CountedEnergy,
    energy_b: CountedEnergy,
    generator: torch.Generator | None,
) -> _Chains:
    """One MALA step on rho_t: proposal y = x - h grad U_t(x) + sqrt(2h) xi, Metropolis-Hastings accepted."""
    x, h = chains.x, step_size
    drift = chains.gradient(t)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    proposed = _evaluate(energy_a, energy_b, x - h * drift + math.sqrt(2 * h) * noise)
    forward = (proposed.x - x + h * drift).pow(2).sum(1) / (4 * h)  # -log q(y | x) + const
    backward = (x - proposed.x + h * proposed.gradient(t)).pow(2).sum(1) / (4 * h)  # -log q(x | y) + const
    log_ratio = chains.energy(t) - proposed.energy(t) + forward - backward
    uniform = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
    accept = torch.log(uniform) < log_ratio
    rows = accept.unsqueeze(1)
    return _Chains(
        torch.where(rows, proposed.x, x),
        torch.where(accept, proposed.energy_a, chains.energy_a),
        torch.where(accept, proposed.energy_b, chains.energy_b),
        torch.where(rows, proposed.gradient_a, chains.gradient_a),
        torch.where(rows, proposed.gradient_b, chains.gradient_b),
    )


def _anneal(
    x: Tensor,
    times: list[float],
    mcmc_steps: int,
    step_size: float,
    energy_a: CountedEnergy,
    energy_b: CountedEnergy,
    generator: torch.Generator | None,
) -> list[tuple[float, float]]:
    """At each of ``times`` in order: (mean of U_b - U_a over chains and steps, its variance over chains / n)."""
    results = []
    chains = _evaluate(energy_a, energy_b, x)
    for t in times:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(mcmc_steps):
            chains = _mala_step(chains, t, step_size, energy_a, energy_b, generator)
            total = total + (chains.energy_b - chains.energy_a)
        per_chain = total / mcmc_steps
        variance = float(per_chain.var() / per_chain.numel()) if per_chain.numel() > 1 else math.nan
        results.append((float(per_chain.mean()), variance))
    return results


def thermodynamic_integration(
    energy_a: CountedEnergy,
    energy_b: CountedEnergy,
    x_a: Tensor,
    x_b: Tensor | None,
    nodes: int,
    mcmc_steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
) -> Estimate:
    """Delta F by Gauss-Legendre quadrature of E_t[U_b - U_a] over ``nodes`` nodes (module docstring)."""
    points, weights = np.polynomial.legendre.leggauss(nodes)
    times, weights = (points + 1) / 2, weights / 2  # from [-1, 1] to [0, 1]
    lower = [float(t) for t in times if t < 0.5 or x_b is None]
    upper = [float(t) for t in times if t >= 0.5 and x_b is not None]
    values = dict(zip(lower, _anneal(x_a, lower, mcmc_steps, step_size, energy_a, energy_b, generator), strict=True))
    if upper:
        descending = sorted(upper, reverse=True)
        annealed = _anneal(x_b, descending, mcmc_steps, step_size, energy_a, energy_b, generator)
        values.update(zip(descending, annealed, strict=True))
    delta_f = sum(float(w) * values[float(t)][0] for t, w in zip(times, weights, strict=True))
    variance = sum(float(w) ** 2 * values[float(t)][1] for t, w in zip(times, weights, strict=True))
    return Estimate(delta_f, math.sqrt(variance))
