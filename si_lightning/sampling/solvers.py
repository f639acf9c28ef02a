"""ODE integrators for dX/dt = f(t, X) on a state that is a tuple of tensors (docs/math.md section 4).

Fixed-step Euler, Heun, RK4 and the exponential integrator dpm++2m (which also reads the interpolant)
run on a time grid with no host synchronisation per step: a NaN or inf is recorded on the device as
the first bad step and checked once at the end. Adaptive methods
are torchdiffeq's (dopri5, dopri8, bosh3, fehlberg2, adaptive_heun) with atol/rtol; they synchronise
at every step anyway, so their right-hand side checks its own output and names t at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

from si_lightning.interpolants import Interpolant

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

    NFE = 2 steps - 1 (docs/math.md section 4): the final correction would evaluate the field at the data
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


class ExponentialMethod(ABC):
    """A step that integrates the part of the velocity linear in x exactly: it reads the interpolant.

    With a Gaussian base, b(t, x) = (alpha_bar' / alpha_bar) x + (beta' - alpha_bar' beta / alpha_bar) D(t, x),
    where D = E[x1 | x_t = x] is the data prediction, so in lambda = log(beta / alpha_bar)

        x_t / alpha_bar_t = x_s / alpha_bar_s + integral of D d(e^lambda)   (the variation of constants),

    and only D is approximated (polynomially in lambda): DPM-Solver++ for any interpolant with a
    Gaussian base. D comes from the velocity at no extra cost:
    D = (alpha_bar^2 b - alpha_bar alpha_bar' x) / (beta' alpha_bar^2 - alpha_bar alpha_bar' beta).
    """

    @abstractmethod
    def integrate(
        self, function: Function, state: State, grid: Tensor, interpolant: Interpolant, what: str
    ) -> State: ...


class DataPredictionMultistep(ExponentialMethod):
    """DPM-Solver++(2M) for interpolants: one evaluation per step, second order in lambda.

    Each step from t_i to t_{i+1} (h = lambda_{i+1} - lambda_i) is
    x_{i+1} = (alpha_bar_{i+1} / alpha_bar_i) x_i + beta_{i+1} (1 - e^{-h}) D_eff, with
    D_eff = D_i + (D_i - D_{i-1}) h / (2 h_{i-1}); the first step and any step with an infinite lambda
    (t = 0 or a data end where alpha_bar = 0) use D_eff = D_i. The step never evaluates the field at
    the last time of the grid, so it may end where alpha_bar = 0 (t = 1).
    """

    def integrate(self, function: Function, state: State, grid: Tensor, interpolant: Interpolant, what: str) -> State:
        if len(state) != 1:
            raise ValueError(f"{what}: the exponential integrator transports one tensor, got a state of {len(state)}")
        if not interpolant.gaussian_base or interpolant.schedule.base_absent:
            raise ValueError(
                f"{what}: the exponential integrator needs an independent N(0, I) base, got {interpolant!r}"
            )
        times = grid.to(torch.float64)
        c = interpolant.coefficients(times)
        noise = c.noise_variance(True).sqrt()
        variance, rate = c.noise_variance(True), c.noise_variance_rate(True)
        lam = torch.log(c.beta) - torch.log(noise)
        denominator = c.beta_dot * variance - rate * c.beta
        monitor = FiniteMonitor(grid.device)
        (x,) = state
        previous_data, previous_step = None, None
        for index in range(grid.shape[0] - 1):
            velocity = function(grid[index], (x,))[0]
            data = (variance[index] * velocity - rate[index] * x) / denominator[index]
            data = data.to(x.dtype)
            step = lam[index + 1] - lam[index]
            decay = c.beta[index] * noise[index + 1] / (noise[index] * c.beta[index + 1])  # e^{-h}, 0 if h = inf
            effective = data
            if previous_data is not None:
                usable = torch.isfinite(step) & torch.isfinite(previous_step) & (previous_step != 0)
                weight = torch.where(usable, step / (2 * previous_step), torch.zeros_like(step)).to(x.dtype)
                effective = data + weight * (data - previous_data)
            ratio = (noise[index + 1] / noise[index]).to(x.dtype)
            x = ratio * x + (c.beta[index + 1] * (1 - decay)).to(x.dtype) * effective
            previous_data, previous_step = data, step
            monitor.update(index, (x,))
        monitor.check(grid, what)
        return (x,)


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


ODE_METHODS: dict[str, type[FixedStepMethod] | type[ExponentialMethod] | type[AdaptiveMethod]] = {
    "euler": Euler,
    "heun": Heun,
    "rk4": RungeKutta4,
    "dpm++2m": DataPredictionMultistep,
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
