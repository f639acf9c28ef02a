"""Thermodynamic integration on a learned energy interpolant (docs/math.md section 10).

With U_t = (1 - t) U_a + t U_b + t (1 - t) N(t, x) (``head.py``) and rho_t = e^{-U_t} / Z_t, F_t = -log Z_t has
dF_t / dt = E_{rho_t}[d_t U_t], and U_0 = U_a, U_1 = U_b, so

    Delta F = int_0^1 E_{rho_t}[U_b - U_a + d_t (t (1 - t) N)] dt  ~  sum_k w_k mean_k   (Gauss-Legendre).

The samples at t_k are the interpolant's own, x_t = alpha x0 + beta x1 + gamma z with x0 from x_a, x1 from
x_b and fresh z: no Markov chain. They follow e^{-U_t} / Z_t exactly when the learned score -grad U_t is the
interpolant's score; the bias of the estimate is the head's error, which the standard error does not
contain (nor the quadrature error).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from si_lightning.free_energy.averages import Estimate
from si_lightning.free_energy.energies import CountedEnergy
from si_lightning.interpolants import Interpolant

Correction = Callable[[Tensor, Tensor], Tensor]  # N(t (m,), x (m, d)) -> (m,)


def time_derivative(
    correction: Correction, energy_a: CountedEnergy, energy_b: CountedEnergy, t: Tensor, x: Tensor
) -> Tensor:
    """d_t U_t(x) = U_b - U_a + (1 - 2t) N + t (1 - t) d_t N at t (m,), x (m, d): (m,), by autograd in t."""
    with torch.enable_grad():
        time = t.detach().requires_grad_(True)
        bridge = time * (1 - time) * correction(time, x.detach())
        (rate,) = torch.autograd.grad(bridge.sum(), time)
    with torch.no_grad():
        return energy_b(x) - energy_a(x) + rate.detach()


def learned_thermodynamic_integration(
    correction: Correction,
    interpolant: Interpolant,
    energy_a: CountedEnergy,
    energy_b: CountedEnergy,
    x_a: Tensor,
    x_b: Tensor,
    nodes: int,
    generator: torch.Generator | None = None,
) -> Estimate:
    """Delta F by ``nodes``-point Gauss-Legendre quadrature of E_t[d_t U_t] (module docstring).

    The m = min(len(x_a), len(x_b)) pairs (x_a[i], x_b[i]) are used at every node, each with a fresh z there
    (2 m energy evaluations a node); the standard error is that of the mean over pairs of each pair's
    quadrature sum_k w_k d_t U_{t_k}, the pairs being independent while the nodes of one pair are not.
    """
    points, weights = np.polynomial.legendre.leggauss(nodes)
    times, weights = (points + 1) / 2, weights / 2  # from [-1, 1] to [0, 1]
    count = min(x_a.shape[0], x_b.shape[0])
    x0, x1 = x_a[:count], x_b[:count]
    per_pair = torch.zeros(count, dtype=torch.float64, device=x1.device)
    for t_value, weight in zip(times, weights, strict=True):
        t = torch.full((count,), float(t_value), dtype=x1.dtype, device=x1.device)
        z = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
        x_t = interpolant.sample(x0, x1, t, z).x_t
        per_pair += float(weight) * time_derivative(correction, energy_a, energy_b, t, x_t).double()
    stderr = float(per_pair.std() / math.sqrt(count)) if count > 1 else math.nan
    return Estimate(float(per_pair.mean()), stderr)
