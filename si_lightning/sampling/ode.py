"""Probability-flow ODE dX/dt = b(t, X) (docs/math.md section 4): sampling (base -> data) and encoding.

``sample`` integrates from t_start to t_end (base to data), ``encode`` from t_end back to t_start
(data to base); by default the interval is the fields' valid interval. decode(encode(x)) = x up to
the solver tolerance ([GIF]).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from si_lightning.checks import lookup, positive_float, positive_int
from si_lightning.condition import Condition
from si_lightning.interpolants import Interpolant
from si_lightning.sampling.checks import (
    batch_time,
    check_condition,
    check_data,
    check_interval_argument,
    resolve_interval,
)
from si_lightning.sampling.fields import CountedFields, Fields, as_fields
from si_lightning.sampling.grids import GRIDS, TimeGrid
from si_lightning.sampling.solvers import (
    ODE_METHODS,
    AdaptiveMethod,
    ExponentialMethod,
    Function,
    State,
    integrate_adaptive,
    integrate_fixed,
)


@dataclass(frozen=True)
class SampleResult:
    """x: the final state (batch, ...); nfe: network evaluations per sample; interval: (from, to) in t."""

    x: Tensor
    nfe: int
    interval: tuple[float, float]


class ODESampler:
    """Integrates the probability-flow ODE with a fixed-step or adaptive method.

    Args:
        method: one of ``ODE_METHODS``: euler, heun, rk4, dpm++2m (fixed steps on ``grid``; dpm++2m is
            the exponential integrator, one evaluation per step, for fields with a Gaussian-base
            interpolant) or the adaptive torchdiffeq methods dopri5, dopri8, bosh3, fehlberg2,
            adaptive_heun (``atol``, ``rtol``).
        steps: number of steps of a fixed-step method.
        atol, rtol: tolerances of an adaptive method.
        grid: one of ``GRIDS`` (uniform, cosine: denser near both ends, logsnr: uniform in log-SNR,
            edm: EDM's rho-grid in sigma = alpha_bar / beta) or a ``TimeGrid`` instance (e.g. a fitted one).
        interval: (t_start, t_end) inside the fields' valid interval; None takes the whole of it.
    """

    def __init__(
        self,
        method: str = "dopri5",
        steps: int = 100,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        grid: str | TimeGrid = "uniform",
        interval: tuple[float, float] | None = None,
    ) -> None:
        self.method_name = method
        self.method = lookup(ODE_METHODS, method, "ODE method")()
        self.steps = positive_int("steps", steps)
        self.atol = positive_float("atol", atol)
        self.rtol = positive_float("rtol", rtol)
        self.grid_name = grid if isinstance(grid, str) else type(grid).__name__
        self.grid = grid if isinstance(grid, TimeGrid) else lookup(GRIDS, grid, "time grid")()
        self.interval = check_interval_argument(interval)

    def __repr__(self) -> str:
        if self.adaptive:
            return f"ODESampler(method={self.method_name!r}, atol={self.atol}, rtol={self.rtol})"
        return f"ODESampler(method={self.method_name!r}, steps={self.steps}, grid={self.grid_name!r})"

    @property
    def adaptive(self) -> bool:
        return isinstance(self.method, AdaptiveMethod)

    def sample(self, fields: Fields, x0: Tensor, cond: Condition | None = None) -> SampleResult:
        """X_{t_end} from X_{t_start} = x0 (batch, ...): base -> data."""
        return self._transport(fields, check_data("x0", x0), cond, reverse=False)

    def encode(self, fields: Fields, x1: Tensor, cond: Condition | None = None) -> SampleResult:
        """X_{t_start} from X_{t_end} = x1 (batch, ...): data -> base."""
        return self._transport(fields, check_data("x1", x1), cond, reverse=True)

    def _transport(self, fields: Fields, x: Tensor, cond: Condition | None, reverse: bool) -> SampleResult:
        counted = CountedFields(as_fields(fields))
        cond = check_condition(cond, x.shape[0])
        start, end = resolve_interval(counted, self.interval, need_score=False, who=repr(self))
        if reverse:
            start, end = end, start

        def velocity(t: Tensor, state: State) -> State:
            return (counted.velocity(batch_time(t, state[0].shape[0]), state[0], cond),)

        (final,) = self.integrate(velocity, (x,), start, end, f"{self!r} on {counted!r}", counted.interpolant)
        return SampleResult(final, counted.nfe, (start, end))

    def integrate(
        self,
        function: Function,
        state: State,
        start: float,
        end: float,
        what: str,
        interpolant: Interpolant | None = None,
    ) -> State:
        """Solve d state/dt = function(t, state) from ``start`` to ``end`` (either direction).

        ``interpolant`` is that of the fields: path grids and the exponential integrator need it.
        """
        if self.adaptive:
            return integrate_adaptive(self.method, function, state, start, end, self.atol, self.rtol, what)
        grid = self.grid(start, end, self.steps, device=state[0].device, dtype=state[0].dtype, interpolant=interpolant)
        if isinstance(self.method, ExponentialMethod):
            if interpolant is None:
                raise ValueError(f"{what}: method {self.method_name!r} needs fields that carry their interpolant")
            return self.method.integrate(function, state, grid, interpolant, what)
        return integrate_fixed(self.method, function, state, grid, what)
