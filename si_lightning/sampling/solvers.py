"""ODE integrators for dX/dt = f(t, X) on a state that is a tuple of tensors (MATH.md section 4).

Fixed-step Euler, Heun and RK4 run on a time grid with no host synchronisation per step: a NaN or
inf is recorded on the device as the first bad step and checked once at the end. Adaptive methods
are torchdiffeq's (dopri5, dopri8, bosh3, fehlberg2, adaptive_heun) with atol/rtol; they synchronise
at every step anyway, so their right-hand side checks its own output and names t at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

State = tuple[Tensor, ...]
Function = Callable[[Tensor, State], State]  # (t, a 0-d tensor; state) -> d state / dt


def _axpy(state: State, step: Tensor, *terms: tuple[float, State]) -> State:
    """state + step * sum_i weight_i derivative_i, per component."""
    return tuple(
        value + step * sum(weight * derivative[index] for weight, derivative in terms)
        for index, value in enumerate(state)
    )


class FiniteMonitor:
    """The first step whose state holds a NaN or inf, kept on the device until ``check``."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def update(self, step: int, state: State) -> None:
        finite = torch.stack([torch.isfinite(value).all() for value in state]).all()
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, step, self.first_bad)

    def check(self, grid: Tensor, what: str) -> None:
        """Raise a FloatingPointError naming the step and its times (the one host sync of the solve)."""
        step = int(self.first_bad)
        if step >= 0:
            start, end = float(grid[step]), float(grid[step + 1])
            raise FloatingPointError(
                f"{what}: a NaN or inf appeared at step {step} of {grid.shape[0] - 1} (t = {start:.6g} -> {end:.6g})"
            )


class FixedStepMethod(ABC):
    """One step from t to t_next; ``last`` marks the final step of the grid."""

    @abstractmethod
    def step(self, function: Function, t: Tensor, t_next: Tensor, state: State, last: bool) -> State: ...


class Euler(FixedStepMethod):
    """X + h f(t, X): one evaluation per step, first order."""

    def step(self, function: Function, t: Tensor, t_next: Tensor, state: State, last: bool) -> State:
        return _axpy(state, t_next - t, (1.0, function(t, state)))


class Heun(FixedStepMethod):
    """Trapezoidal predictor-corrector, second order; the last step is Euler (as in EDM).

    NFE = 2 steps - 1 (MATH.md section 4): the final correction would evaluate the field at the data
    end, where it is stiffest, and would change the result by O(h^2) only.
    """

    def step(self, function: Function, t: Tensor, t_next: Tensor, state: State, last: bool) -> State:
        step = t_next - t
        slope = function(t, state)
        predicted = _axpy(state, step, (1.0, slope))
        if last:
            return predicted
        return _axpy(state, step, (0.5, slope), (0.5, function(t_next, predicted)))


class RungeKutta4(FixedStepMethod):
    """Classical fourth-order Runge-Kutta: four evaluations per step."""

    def step(self, function: Function, t: Tensor, t_next: Tensor, state: State, last: bool) -> State:
        step = t_next - t
        middle = t + 0.5 * step
        k1 = function(t, state)
        k2 = function(middle, _axpy(state, 0.5 * step, (1.0, k1)))
        k3 = function(middle, _axpy(state, 0.5 * step, (1.0, k2)))
        k4 = function(t_next, _axpy(state, step, (1.0, k3)))
        return _axpy(state, step, (1 / 6, k1), (1 / 3, k2), (1 / 3, k3), (1 / 6, k4))


class AdaptiveMethod:
    """A torchdiffeq adaptive solver, named by ``solver``."""

    solver: str = ""


class Dopri5(AdaptiveMethod):
    solver = "dopri5"


class Dopri8(AdaptiveMethod):
    solver = "dopri8"


class Bosh3(AdaptiveMethod):
    solver = "bosh3"


class Fehlberg2(AdaptiveMethod):
    solver = "fehlberg2"


class AdaptiveHeun(AdaptiveMethod):
    solver = "adaptive_heun"


ODE_METHODS: dict[str, type[FixedStepMethod] | type[AdaptiveMethod]] = {
    "euler": Euler,
    "heun": Heun,
    "rk4": RungeKutta4,
    "dopri5": Dopri5,
    "dopri8": Dopri8,
    "bosh3": Bosh3,
    "fehlberg2": Fehlberg2,
    "adaptive_heun": AdaptiveHeun,
}


def integrate_fixed(method: FixedStepMethod, function: Function, state: State, grid: Tensor, what: str) -> State:
    """Integrate along ``grid`` (steps + 1,), increasing or decreasing; raise if a NaN or inf appears."""
    monitor = FiniteMonitor(grid.device)
    steps = grid.shape[0] - 1
    for index in range(steps):
        state = method.step(function, grid[index], grid[index + 1], state, last=index == steps - 1)
        monitor.update(index, state)
    monitor.check(grid, what)
    return state


def integrate_adaptive(
    method: AdaptiveMethod,
    function: Function,
    state: State,
    start: float,
    end: float,
    atol: float,
    rtol: float,
    what: str,
) -> State:
    """Integrate from ``start`` to ``end`` with torchdiffeq at (atol, rtol)."""

    def checked(t: Tensor, current: State) -> State:
        derivative = function(t, current)
        if not all(bool(torch.isfinite(value).all()) for value in derivative):
            raise FloatingPointError(f"{what}: the field returned a NaN or inf at t = {float(t):.6g}")
        return derivative

    times = torch.tensor([start, end], dtype=state[0].dtype, device=state[0].device)
    # step_t makes the solver land on ``end`` instead of stepping past it and interpolating back, so the
    # field is never evaluated outside the valid interval (where it may be singular).
    options = {"step_t": times[1:]}
    solution = odeint(checked, state, times, atol=atol, rtol=rtol, method=method.solver, options=options)
    final = tuple(value[-1] for value in solution)
    if not all(bool(torch.isfinite(value).all()) for value in final):
        raise FloatingPointError(f"{what}: the state holds a NaN or inf at t = {end:.6g}")
    return final
