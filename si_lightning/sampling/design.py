"""Time grids and schedules fitted on a pilot batch, stored with a checkpoint (``state_dict``).

A fixed-step solver on the grid t_k = tau(k / N) integrates the path reparametrised by tau. Two criteria
give tau by equidistributing a density rho(t) (steps h_k proportional to 1 / rho(t_k)):

- ``lipschitz``: rho = L(t), the root-mean-square Lipschitz constant of the velocity along the pilot
  trajectories, L(t)^2 = E ||grad_x b(t, X_t) v||^2 over unit random directions v. In the new time u the
  drift tau' b(tau, x) has Lipschitz constant tau' L, and tau' proportional to 1 / L minimises the
  averaged squared Lipschitz constant of the drift, integral of (tau' L)^2 du, at a fixed duration: the
  Lipschitz-guided schedule of Chen, Vanden-Eijnden and Xu (2025) within the time changes of the path.
  Combined with ``convert_interpolant`` it designs the path too (the path chooses alpha_bar / beta up to
  a time change, this grid the time change).
- ``local-error``: rho = E[||d^(p+1) x / dt^(p+1)||^2]^(1 / (2 (p + 1))) for a method of order p, from finite
  differences of the pilot velocities: a step of size h makes a local error of about h^(p+1) times that
  derivative, which this density makes equal on every step.

The density is tabulated on the pilot's times (float64) and interpolated linearly; the grid is its
inverse cumulative, so it serves any number of steps and any sub-interval.
"""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.checks import positive_int
from si_lightning.condition import Condition
from si_lightning.interpolants import Interpolant
from si_lightning.sampling.checks import batch_time, check_data, resolve_interval
from si_lightning.sampling.fields import Fields, as_fields
from si_lightning.sampling.grids import CosineGrid, IncreasingTimeGrid

_MESH = 4097  # points of the mesh on which a fitted grid inverts its cumulative density
_DENSITY_FLOOR = 1e-3  # relative to the mean density: no step longer than about 1000 times the average


class FittedGrid(IncreasingTimeGrid):
    """Times equidistributing a tabulated density: ``times`` (M,) increasing in [0, 1], ``density`` (M,) > 0."""

    def __init__(self, times: Tensor | None = None, density: Tensor | None = None, criterion: str = "") -> None:
        self.times = torch.linspace(0.0, 1.0, 2, dtype=torch.float64) if times is None else times.double()
        self.density = torch.ones_like(self.times) if density is None else density.double()
        self.criterion = criterion
        self._check()

    def _check(self) -> None:
        if self.times.dim() != 1 or self.times.shape != self.density.shape or self.times.shape[0] < 2:
            raise ValueError(
                f"FittedGrid needs times and density of one shape (M,), M >= 2, got {tuple(self.times.shape)} and "
                f"{tuple(self.density.shape)}"
            )
        if not bool((self.times[1:] > self.times[:-1]).all()) or not bool((self.density > 0).all()):
            raise ValueError("FittedGrid needs strictly increasing times and a positive density")

    def __repr__(self) -> str:
        return f"FittedGrid(criterion={self.criterion!r}, knots={self.times.shape[0]})"

    def state_dict(self) -> dict[str, object]:
        return {"times": self.times.clone(), "density": self.density.clone(), "criterion": self.criterion}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.times, self.density = state["times"].double(), state["density"].double()
        self.criterion = str(state.get("criterion", ""))
        self._check()

    def increasing(self, low: float, high: float, steps: int, interpolant: Interpolant | None) -> Tensor:
        # Knots of [low, high]: the table's times inside it, both ends and a fine uniform mesh, so that the
        # piecewise-linear inverse of the (piecewise-quadratic) cumulative density is accurate.
        inside = self.times[(self.times > low) & (self.times < high)]
        mesh = torch.linspace(low, high, _MESH, dtype=torch.float64)
        knots = torch.unique(torch.cat([mesh, inside]))
        values = _interpolate(self.times, self.density, knots)
        cumulative = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (values[1:] + values[:-1]) * knots.diff(), 0)]
        )
        targets = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64) * cumulative[-1]
        return _interpolate(cumulative, knots, targets)


def _interpolate(x: Tensor, y: Tensor, at: Tensor) -> Tensor:
    """Piecewise-linear y(at) through (x, y), x increasing; constant beyond the ends."""
    index = torch.searchsorted(x, at).clamp(1, x.shape[0] - 1)
    left, right = x[index - 1], x[index]
    weight = ((at - left) / (right - left)).clamp(0.0, 1.0)
    return y[index - 1] + weight * (y[index] - y[index - 1])


def pilot_trajectory(
    fields: Fields, x0: Tensor, steps: int, cond: Condition | None = None
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Heun on the cosine grid over the fields' valid interval: (times (steps + 1,), states, velocities).

    The velocities are those at each state (one more evaluation at the end than Heun needs).
    """
    start, end = resolve_interval(fields, None, need_score=False, who="pilot trajectory")
    times = CosineGrid()(start, end, steps, device=x0.device, dtype=x0.dtype)
    states, velocities = [x0], []
    x = x0
    for index in range(steps):
        t, t_next = times[index], times[index + 1]
        slope = fields.velocity(batch_time(t, x.shape[0]), x, cond)
        velocities.append(slope)
        predicted = x + (t_next - t) * slope
        corrected = fields.velocity(batch_time(t_next, x.shape[0]), predicted, cond)
        x = x + 0.5 * (t_next - t) * (slope + corrected)
        states.append(x)
    velocities.append(fields.velocity(batch_time(times[-1], x.shape[0]), x, cond))
    return times, states, velocities


def fit_lipschitz_grid(
    fields: object, x0: Tensor, pilot_steps: int = 32, probes: int = 2, cond: Condition | None = None
) -> FittedGrid:
    """The grid minimising the averaged squared Lipschitz constant of the drift, fitted on pilot ``x0``.

    L(t)^2 is estimated by finite differences b(t, x + delta v) - b(t, x) along ``probes`` random unit
    directions v per pilot state, with delta 1e-3 of the state's RMS (relative, so it works in any units).
    Costs pilot_steps * (2 + probes) + 1 evaluations per pilot sample.
    """
    fields = as_fields(fields)
    x0 = check_data("x0", x0)
    positive_int("pilot_steps", pilot_steps)
    positive_int("probes", probes)
    generator = torch.Generator(device=x0.device).manual_seed(0)
    times, states, velocities = pilot_trajectory(fields, x0, pilot_steps, cond)
    density = []
    for t, x, velocity in zip(times, states, velocities, strict=True):
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for _ in range(probes):
            direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            direction = direction / direction.flatten(1).norm(dim=1).reshape(-1, *([1] * (x.dim() - 1)))
            delta = 1e-3 * (1 + x.flatten(1).pow(2).mean(1).sqrt()).reshape(-1, *([1] * (x.dim() - 1)))
            moved = fields.velocity(batch_time(t, x.shape[0]), x + delta * direction, cond)
            total += ((moved - velocity) / delta).flatten(1).pow(2).sum(1).double().mean()
        density.append((total / probes).sqrt())
    return FittedGrid(times.double().cpu(), _floored(torch.stack(density).cpu()), "lipschitz")


def fit_local_error_grid(
    fields: object, x0: Tensor, order: int = 2, pilot_steps: int = 64, cond: Condition | None = None
) -> FittedGrid:
    """The grid equalising the local error of an order-``order`` method, fitted on pilot ``x0``.

    The (order + 1)-th time derivative of the pilot trajectories comes from divided differences of their
    velocities (no evaluations beyond the pilot's 2 * pilot_steps + 1 per sample).
    """
    fields = as_fields(fields)
    x0 = check_data("x0", x0)
    positive_int("order", order)
    positive_int("pilot_steps", pilot_steps)
    if pilot_steps < order + 1:
        raise ValueError(f"pilot_steps must be >= order + 1 = {order + 1}, got {pilot_steps}")
    times, _, velocities = pilot_trajectory(fields, x0, pilot_steps, cond)
    times = times.double().cpu()
    derivative = [velocity.double().cpu() for velocity in velocities]
    centres = times
    for level in range(order):  # divided differences: derivative of order level + 2 of x
        width = times[level + 1 :] - times[: -(level + 1)]
        derivative = [
            (after - before) / span for before, after, span in zip(derivative[:-1], derivative[1:], width, strict=True)
        ]
        centres = 0.5 * (centres[1:] + centres[:-1])
    size = torch.stack([value.flatten(1).pow(2).sum(1).mean() for value in derivative])
    density = size.pow(1 / (2 * (order + 1)))
    # Extend to the ends of the pilot interval with the nearest value.
    knots = torch.cat([times[:1], centres, times[-1:]])
    values = torch.cat([density[:1], density, density[-1:]])
    return FittedGrid(knots, _floored(values), f"local-error order {order}")


def _floored(density: Tensor) -> Tensor:
    """Finite, positive density: NaN/inf replaced by the largest finite value, small values raised."""
    density = density.double()
    finite = torch.isfinite(density)
    if not bool(finite.any()):
        raise FloatingPointError("the fitted density is not finite anywhere on the pilot trajectory")
    density = torch.where(finite, density, density[finite].max())
    return density.clamp(min=_DENSITY_FLOOR * float(density.mean()))
