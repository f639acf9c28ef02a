"""Generative SDEs (docs/math.md section 4) with a chosen diffusion coefficient eps(t).

    forward  (base -> data):  dX = (b + eps s) dt + sqrt(2 eps) dW,     t from t_start up to t_end
    backward (data -> base):  dY = (b - eps s) dt + sqrt(2 eps) dW^B,   t from t_end down to t_start

Integrated on a time grid by the exponential Euler-Maruyama step (the default: exact in the part of the
state linear in x, so no step size makes it amplify the state), Euler-Maruyama or stochastic Heun
(``sde_methods``). The forward SDE stops at t_end - h (h = ``last_step_size``) and takes one last step
([SiT]): ``mean`` the method's step without its noise (x + h b_F for Euler-Maruyama and Heun),
``tweedie`` E[x1 | x_t], ``euler`` x + h b, or ``none`` (x at t_end - h as is; h = 0 integrates the
SDE to t_end). No host sync per step: a NaN or inf is recorded on the device and reported at the end.
Per-sample seeds keep their batch-size invariance with one batched noise draw per step
(``CounterNoise``: a counter-based stream keyed by (sample key, step)).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from si_lightning.checks import lookup, non_negative_float, positive_int
from si_lightning.condition import Condition
from si_lightning.sampling.checks import (
    batch_time,
    check_condition,
    check_data,
    check_interval_argument,
    resolve_interval,
)
from si_lightning.sampling.diffusion import DIFFUSIONS
from si_lightning.sampling.fields import CountedFields, Fields, as_fields
from si_lightning.sampling.grids import GRIDS
from si_lightning.sampling.ode import SampleResult
from si_lightning.sampling.sde_methods import SDE_METHODS
from si_lightning.sampling.seeds import GeneratorArgument, NoiseSource, Seeds
from si_lightning.sampling.solvers import FiniteMonitor


class LastStep(ABC):
    """The final move from the stopping time t to t_end = t + h.

    ``needs_data``: uses E[x1 | x_t]; ``needs_score_weight``: uses the score weight w the SDE method gives the
    step from t to t_end (eps(t) for Euler-Maruyama and Heun, c / h for the exponential method).
    """

    needs_data: bool = False
    needs_score_weight: bool = False

    @abstractmethod
    def apply(
        self, fields: Fields, t: Tensor, step: Tensor, x: Tensor, weight: Tensor, cond: Condition | None
    ) -> Tensor: ...


class MeanStep(LastStep):
    """x + h (b + w s): the SDE method's step without its noise (x + h b_F, SiT's "Mean", for Euler-Maruyama)."""

    needs_score_weight = True

    def apply(
        self, fields: Fields, t: Tensor, step: Tensor, x: Tensor, weight: Tensor, cond: Condition | None
    ) -> Tensor:
        return x + step * fields.velocity_plus_score(batch_time(t, x.shape[0]), x, cond, weight)


class TweedieStep(LastStep):
    """E[x1 | x_t = x] = (x + alpha_bar^2 s) / beta: the posterior mean of the data."""

    needs_data = True

    def apply(
        self, fields: Fields, t: Tensor, step: Tensor, x: Tensor, weight: Tensor, cond: Condition | None
    ) -> Tensor:
        return fields.data(batch_time(t, x.shape[0]), x, cond)


class EulerStep(LastStep):
    """x + h b(t, x): the probability-flow ODE step."""

    def apply(
        self, fields: Fields, t: Tensor, step: Tensor, x: Tensor, weight: Tensor, cond: Condition | None
    ) -> Tensor:
        return x + step * fields.velocity(batch_time(t, x.shape[0]), x, cond)


class NoLastStep(LastStep):
    """x at the stopping time, as is."""

    def apply(
        self, fields: Fields, t: Tensor, step: Tensor, x: Tensor, weight: Tensor, cond: Condition | None
    ) -> Tensor:
        return x


LAST_STEPS: dict[str, type[LastStep]] = {
    "mean": MeanStep,
    "tweedie": TweedieStep,
    "euler": EulerStep,
    "none": NoLastStep,
}


class SDESampler:
    """Exponential Euler-Maruyama, Euler-Maruyama or stochastic Heun for the forward (``sample``) and backward
    (``encode``) SDE.

    Args:
        steps: number of SDE steps (the last step, if any, comes on top).
        method: one of ``SDE_METHODS``: exponential-euler (the default: needs fields that carry their
            interpolant, and never amplifies the state), euler-maruyama, heun.
        diffusion: one of ``DIFFUSIONS``: constant, sbdm, sigma, linear, decreasing, increasing-decreasing.
        scale: c >= 0 multiplying the diffusion family.
        last_step: one of ``LAST_STEPS`` (mean, tweedie, euler, none).
        last_step_size: h >= 0: the forward SDE stops at t_end - h; must be > 0 unless last_step is none.
        grid: one of ``GRIDS`` (uniform, cosine, logsnr: uniform in log-SNR, edm: EDM's rho-grid in
            sigma = alpha_bar / beta; the last two read the interpolant of the fields).
        interval: (t_start, t_end) inside the fields' score interval; None takes the whole of it.
    """

    def __init__(
        self,
        steps: int = 250,
        method: str = "exponential-euler",
        diffusion: str = "sbdm",
        scale: float = 1.0,
        last_step: str = "mean",
        last_step_size: float = 0.04,
        grid: str = "uniform",
        interval: tuple[float, float] | None = None,
    ) -> None:
        self.steps = positive_int("steps", steps)
        self.method_name, self.method = method, lookup(SDE_METHODS, method, "SDE method")()
        self.diffusion = lookup(DIFFUSIONS, diffusion, "diffusion")(scale)
        self.last_step_name, self.last_step = last_step, lookup(LAST_STEPS, last_step, "last step")()
        self.last_step_size = non_negative_float("last_step_size", last_step_size)
        if self.last_step_size == 0 and last_step != "none":
            raise ValueError(f"last_step_size must be > 0 with last_step={last_step!r}, got {last_step_size!r}")
        self.grid_name, self.grid = grid, lookup(GRIDS, grid, "time grid")()
        self.interval = check_interval_argument(interval)

    def __repr__(self) -> str:
        return (
            f"SDESampler(steps={self.steps}, method={self.method_name!r}, diffusion={self.diffusion.name!r}, "
            f"scale={self.diffusion.scale}, last_step={self.last_step_name!r}, last_step_size={self.last_step_size})"
        )

    def sample(
        self,
        fields: Fields,
        x0: Tensor,
        cond: Condition | None = None,
        generator: GeneratorArgument = None,
        seeds: Seeds | None = None,
    ) -> SampleResult:
        """X at t_end from X_{t_start} = x0 (batch, ...) by the forward SDE and the last step.

        ``seeds`` (one int per sample) make the result independent of the batch size; a single
        ``generator`` makes it reproducible for this batch only; a list of generators acts per sample.
        """
        return self._run(fields, check_data("x0", x0), cond, generator, seeds, forward=True)

    def encode(
        self,
        fields: Fields,
        x1: Tensor,
        cond: Condition | None = None,
        generator: GeneratorArgument = None,
        seeds: Seeds | None = None,
    ) -> SampleResult:
        """Y at t_start from Y_{t_end} = x1 by the backward SDE (drift b_B = b - eps s); no last step."""
        return self._run(fields, check_data("x1", x1), cond, generator, seeds, forward=False)

    def _run(
        self,
        fields: Fields,
        x: Tensor,
        cond: Condition | None,
        generator: GeneratorArgument,
        seeds: Seeds | None,
        forward: bool,
    ) -> SampleResult:
        counted = CountedFields(as_fields(fields))
        check_score(counted, repr(self))
        if forward and self.last_step.needs_data and not counted.has_data:
            raise ValueError(f"last_step='tweedie' needs E[x1 | x_t], which {counted!r} does not provide")
        cond = check_condition(cond, x.shape[0])
        # Per-sample streams as one batched draw per step (CounterNoise): no loop over the samples.
        noise = NoiseSource.create(x.shape[0], x.device, generator, seeds, stream="sde").counter_based()
        start, end = resolve_interval(counted, self.interval, need_score=True, who=repr(self))
        stop = end - self.last_step_size if forward else end
        if stop <= start:
            raise ValueError(f"last_step_size = {self.last_step_size!r} leaves no room for the SDE on [{start}, {end}]")
        first, last = (start, stop) if forward else (end, start)
        # Path grids (logsnr, edm) are built from the fields' interpolant, exactly as the ODE builds them.
        grid = self.grid(first, last, self.steps, device=x.device, dtype=x.dtype, interpolant=counted.interpolant)
        what = f"{self!r} on {counted!r}"
        plan = self.method.plan(grid, self.diffusion, counted.interpolant, 1.0 if forward else -1.0, what)

        def drift(t: Tensor, state: Tensor, weight: Tensor) -> Tensor:
            return counted.velocity_plus_score(batch_time(t, state.shape[0]), state, cond, weight)

        # Pixels the fields never move (b = s = 0 there, a residual bridge's untouched pixels) get no noise.
        frozen = counted.frozen_pixels(cond)
        frozen = None if frozen is None else frozen.bool()
        monitor = FiniteMonitor(x.device)
        for index in range(self.steps):
            increment = noise.normal_like(x)
            if frozen is not None:
                increment = torch.where(frozen, torch.zeros_like(increment), increment)
            x = self.method.step(drift, plan, index, x, increment)
            monitor.update(index, (x,))
        monitor.check(grid, what)
        if not forward:
            return SampleResult(x, counted.nfe, (end, start))
        final = torch.stack([grid[-1], torch.as_tensor(end, dtype=x.dtype, device=x.device)])
        weight = plan.eps[-1]  # read only by a last step that needs_score_weight
        if self.last_step.needs_score_weight:
            weight = self.method.plan(final, self.diffusion, counted.interpolant, 1.0, what).score_weight[0]
        x = self.last_step.apply(counted, grid[-1], final[1] - final[0], x, weight, cond)
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(
                f"{self!r}: the last step ({self.last_step_name}) at t = {stop:.6g} gave a NaN or inf"
            )
        reached = stop if isinstance(self.last_step, NoLastStep) else end
        return SampleResult(x, counted.nfe, (start, reached))


def check_score(fields: Fields, who: str) -> None:
    """Raise a ValueError if ``fields`` have no score (an SDE needs s for b_F = b + eps s)."""
    if not fields.has_score:
        reason = f": {fields.missing_score_reason}" if fields.missing_score_reason else ""
        raise ValueError(f"{who} needs the score, but {fields!r} provides none{reason}")
