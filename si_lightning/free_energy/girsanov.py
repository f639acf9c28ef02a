"""Works of stochastic transports: the SDE of the learned velocity and score (docs/math.md section 10).

Forward SDE dX = [b + eps s] dt + sqrt(2 eps) dW from rho_a (t_start) to rho_b (t_end), and its time
reversal dX = [b - eps s] dt + sqrt(2 eps) dW^B. On a time grid t_0, ..., t_N (signed steps h_k, sign
sigma = +1 forwards, -1 backwards) each step draws from the Euler-Maruyama kernel

    K_prop(x_{k+1} | x_k) = N(x_k + h_k [b + sigma eps s](t_k, x_k), 2 eps(t_k) |h_k| I),

and the path is weighed against the kernel of the opposite direction taking it back,

    K_ret(x_k | x_{k+1}) = N(x_{k+1} - h_k [b - sigma eps s](t_{k+1}, x_{k+1}), 2 eps(t_{k+1}) |h_k| I).

The work is W = U_to(X_N) - U_from(X_0) - sum_k log [K_ret(x_k | x_{k+1}) / K_prop(x_{k+1} | x_k)]: the
log-ratio of the two path measures (the discrete Girsanov term) replaces the ODE's log-Jacobian. Because
the return kernels are normalised densities, E[e^{-W}] = Z_to / Z_from holds exactly at any step count
and for any b, s and eps > 0; the steps only change the works' spread. The reverse direction's kernels
are the forward direction's return kernels and vice versa, so (W_F, W_R) satisfy Crooks' relation
exactly and BAR applies. As h -> 0 the sum tends to the continuous Girsanov term (docs/math.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from si_lightning.checks import positive_int
from si_lightning.free_energy.energies import CountedEnergy
from si_lightning.free_energy.works import TransportWorks
from si_lightning.sampling.checks import batch_time, check_data, resolve_interval
from si_lightning.sampling.diffusion import Diffusion
from si_lightning.sampling.fields import CountedFields, Fields, as_fields
from si_lightning.sampling.seeds import GeneratorArgument, NoiseSource


def _log_normal(y: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    """log N(y; mean, variance I) per sample: y, mean (batch, d), variance 0-d -> (batch,)."""
    dims = y[0].numel()
    return -(y - mean).pow(2).flatten(1).sum(1) / (2 * variance) - 0.5 * dims * torch.log(2 * math.pi * variance)


def sde_works(
    fields: Fields,
    energy_from: CountedEnergy,
    energy_to: CountedEnergy,
    x: Tensor,
    reverse: bool,
    steps: int,
    diffusion: Diffusion,
    generator: GeneratorArgument = None,
    interval: tuple[float, float] | None = None,
) -> TransportWorks:
    """The work of each sample of x (batch, d) carried by the Euler-Maruyama SDE forwards or in ``reverse``.

    Args:
        fields: velocity and score (``has_score``), one ``velocity_and_score`` call per grid time.
        steps: N uniform steps on the fields' score interval (or ``interval``); N + 1 evaluations a path.
        diffusion: eps(t), which must be > 0 on the grid (the kernels need a variance).
        generator: the Brownian increments.

    Returns ``TransportWorks`` whose ``log_jacobian`` is the summed log kernel ratio (batch,) (module
    docstring): what the work subtracts from the energy difference, as the log-Jacobian does for the ODE.
    """
    x = check_data("x", x)
    steps = positive_int("steps", steps)
    counted = CountedFields(as_fields(fields))
    if not counted.has_score:
        raise ValueError(f"the SDE transport needs a score: {counted!r} has none ({counted.missing_score_reason})")
    start, end = resolve_interval(counted, interval, True, "free-energy SDE transport")
    if reverse:
        start, end = end, start
    sign = -1.0 if reverse else 1.0
    grid = torch.linspace(start, end, steps + 1, dtype=torch.float64)
    eps = diffusion.on_grid(grid, counted.interpolant)
    if bool((eps <= 0).any()):
        index = int((eps <= 0).nonzero()[0, 0])
        raise ValueError(
            f"diffusion {diffusion.name!r} gives eps = {float(eps[index])!r} at t = {float(grid[index]):.6g}; "
            "the SDE works need eps > 0 on the whole grid"
        )
    grid, eps = grid.to(device=x.device, dtype=x.dtype), eps.to(device=x.device, dtype=x.dtype)
    batch = x.shape[0]
    noise = NoiseSource.create(batch, x.device, generator, stream="sde")
    log_ratio = torch.zeros(batch, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        current = x
        velocity, score = counted.velocity_and_score(batch_time(grid[0], batch), current)
        for k in range(steps):
            h = grid[k + 1] - grid[k]
            proposal_mean = current + h * (velocity + sign * eps[k] * score)
            proposal_variance = 2 * eps[k] * h.abs()
            following = proposal_mean + proposal_variance.sqrt() * noise.normal_like(current)
            velocity, score = counted.velocity_and_score(batch_time(grid[k + 1], batch), following)
            return_mean = following - h * (velocity - sign * eps[k + 1] * score)
            return_variance = 2 * eps[k + 1] * h.abs()
            log_ratio += _log_normal(current, return_mean, return_variance)
            log_ratio -= _log_normal(following, proposal_mean, proposal_variance)
            current = following
        works = energy_to(current) - energy_from(x) - log_ratio
    return TransportWorks(works, current, counted.nfe, log_ratio)
