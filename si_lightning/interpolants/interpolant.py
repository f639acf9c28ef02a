"""The stochastic interpolant x_t = alpha x0 + beta x1 + gamma z (docs/math.md sections 0-2).

``broadcast_time`` is the one place where a per-sample time (batch,) meets data of any shape
(batch, ...): every coefficient multiplies data through it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from si_lightning.checks import lookup
from si_lightning.interpolants.gamma import GAMMAS, Gamma
from si_lightning.interpolants.schedules import SCHEDULES, Schedule


def broadcast_time(value: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample value of shape (batch,) to (batch, 1, ..., 1) so it multiplies ``x``.

    Broadcasting a (batch,) tensor directly against (batch, C, H, W) data would pair it with the
    last axis (silently wrong when W == batch), so every coefficient goes through here.
    """
    if value.dim() != 1 or value.shape[0] != x.shape[0]:
        raise ValueError(
            f"expected a per-sample tensor of shape ({x.shape[0]},) for data of shape {tuple(x.shape)}, "
            f"got shape {tuple(value.shape)}"
        )
    return value.reshape(value.shape[0], *([1] * (x.dim() - 1)))


def as_batch_time(t: Tensor | float, batch_size: int, like: Tensor) -> Tensor:
    """Turn a scalar or (batch,) time into a (batch,) tensor with ``like``'s dtype and device."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(f"expected t of shape ({batch_size},) or a scalar, got shape {tuple(t.shape)}")
    return t


@dataclass(frozen=True)
class Coefficients:
    """alpha, beta, gamma, their t-derivatives and the products alpha alpha', gamma gamma', each shaped like t.

    The products come in closed form from the schedule and the gamma family: they stay finite at an end
    where a derivative is infinite (gamma' of the Brownian gamma at t = 0 and 1, alpha' of sbdm and vp
    at t = 1), where the product of the factors would be 0 * inf.
    """

    alpha: Tensor
    beta: Tensor
    gamma: Tensor
    alpha_dot: Tensor
    beta_dot: Tensor
    gamma_dot: Tensor
    alpha_alpha_dot: Tensor
    gamma_gamma_dot: Tensor

    def noise_variance(self, gaussian_base: bool) -> Tensor:
        """alpha_bar^2: the variance of the Gaussian part of x_t (alpha^2 + gamma^2 for a Gaussian base)."""
        return self.alpha**2 + self.gamma**2 if gaussian_base else self.gamma**2

    def noise_variance_rate(self, gaussian_base: bool) -> Tensor:
        """alpha_bar alpha_bar' = (1/2) d/dt alpha_bar^2: alpha alpha' + gamma gamma' (Gaussian base) or gamma gamma'.

        Finite on all of [0, 1], even where alpha' or gamma' is infinite (the products are closed forms).
        """
        return self.alpha_alpha_dot + self.gamma_gamma_dot if gaussian_base else self.gamma_gamma_dot


@dataclass(frozen=True)
class InterpolantSample:
    """One draw of the interpolant with its regression targets; every tensor is (batch, ...).

    ``noise`` is the Gaussian variable the denoiser predicts: z for a two-sided interpolant (m z with a
    per-pixel modulation m, docs/math.md section 11), x0 for a one-sided one; ``noise_scale`` (batch,)
    multiplies it in x_t (gamma or alpha). ``modulation`` is m (broadcastable to x0) or None (m = 1).
    """

    t: Tensor
    x_t: Tensor
    x0: Tensor
    x1: Tensor
    z: Tensor
    velocity: Tensor  # alpha' x0 + beta' x1 + gamma' z, the target of b
    interpolant_derivative: Tensor  # alpha' x0 + beta' x1, the target of v
    noise: Tensor
    noise_scale: Tensor
    modulation: Tensor | None = None


class Interpolant:
    """x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z with t = 0 the base and t = 1 the data.

    Args:
        schedule: one of ``SCHEDULES`` (linear, trig, vp-trig, encoder-decoder, one-sided-linear,
            one-sided-trig, sbdm, mirror).
        gamma: one of ``GAMMAS`` (brownian, quadratic, sine-squared, zero); None takes the
            schedule's default.
        gamma_scale: the scale ``a`` of the gamma family.
        gaussian_base: x0 ~ N(0, I) independent of x1. Only then do the score and the velocity
            determine each other (docs/math.md section 3); a data-dependent coupling sets it False.
        endpoint_eps: how far inside [0, 1] the valid interval starts or ends where a
            coefficient derivative (or, for ``valid_interval(need_score=True)``, the score) is singular.
    """

    modulated: bool = False  # a residual bridge: the noise is modulated by 1 - cond.keep (bridges.py)

    def __init__(
        self,
        schedule: str = "linear",
        gamma: str | None = None,
        gamma_scale: float = 1.0,
        gaussian_base: bool = True,
        endpoint_eps: float = 1e-3,
    ) -> None:
        self.schedule_name = schedule
        self.schedule: Schedule = lookup(SCHEDULES, schedule, "schedule")()
        self.gamma_name = gamma if gamma is not None else self.schedule.default_gamma
        self.gamma_family: Gamma = lookup(GAMMAS, self.gamma_name, "gamma")(gamma_scale)
        self.schedule.check_gamma(self.gamma_name, self.gamma_family.maximum())
        if self.schedule.one_sided and not gaussian_base:
            raise ValueError(f"schedule {schedule!r} is one-sided: x0 must be Gaussian (gaussian_base=True)")
        if not 0 < endpoint_eps < 0.5:
            raise ValueError(f"endpoint_eps must be in (0, 0.5), got {endpoint_eps!r}")
        self.gamma_scale = float(gamma_scale)
        self.gaussian_base = gaussian_base
        self.endpoint_eps = float(endpoint_eps)

    def __repr__(self) -> str:
        return (
            f"Interpolant(schedule={self.schedule_name!r}, gamma={self.gamma_name!r}, "
            f"gamma_scale={self.gamma_scale}, gaussian_base={self.gaussian_base})"
        )

    @property
    def one_sided(self) -> bool:
        """Whether x0 itself is the Gaussian noise: a one-sided schedule, or gamma = 0 with a Gaussian base.

        Then the denoiser predicts x0, the score is -E[x0 | x_t] / alpha, and the antithetic twin flips x0.
        """
        return self.schedule.one_sided or (
            self.gamma_family.is_zero and self.gaussian_base and not self.schedule.base_absent
        )

    @property
    def keeps_known_pixels(self) -> bool:
        """Whether pixels marked known (``cond.keep`` = 1, x0 = x1 there) never move: x_t = x1 at every t.

        True with gamma = 0 (no noise anywhere) or a modulated bridge (no noise where keep = 1); then the
        velocity is zero there and the noise is modulated by m = 1 - keep. Needs alpha + beta = 1.
        """
        return self.gamma_family.is_zero or self.modulated

    def spread_start(self, x0: Tensor, t: float, z: Tensor, keep: Tensor | None = None) -> Tensor:
        """x0 + gamma(t) m z: a draw of x_t given a data-dependent x0 at a small t, for posterior draws.

        From the point x0 an ODE follows one deterministic path, so K draws from it are one path repeated.
        The law of x_t | x0 at small t is x0 + beta(t) (x1 - x0) + gamma(t) m z (alpha + beta = 1); the
        beta(t) (x1 - x0) term is O(t) and unknown without x1, so it is left out. Starting each draw here
        lets the flow carry the spread to a draw of x1 | x0 (docs/math.md section 11).

        Args:
            x0: the degraded inputs (batch, ...).
            t: the sampler's start time (the lower end of its interval).
            z: standard Gaussian noise shaped like x0.
            keep: ``cond.keep`` (batch, 1, ...) or None; m = 1 - keep for a modulated bridge, else m = 1.

        Returns x0 itself for gamma = 0 (the coupling's own noise spreads the draws then).
        """
        if self.gamma_family.is_zero:
            return x0
        gamma = self.coefficients(torch.full((x0.shape[0],), float(t), dtype=x0.dtype, device=x0.device)).gamma
        if self.modulated and keep is not None:
            z = z * (1 - keep.to(z.dtype))
        return x0 + broadcast_time(gamma, x0) * z

    @property
    def score_defined(self) -> bool:
        """Whether x_t has a Gaussian part at all, so that the score is -E[noise | x_t] / noise_scale."""
        return self.one_sided or not self.gamma_family.is_zero

    @property
    def conversions_defined(self) -> bool:
        """Whether b, s, eta_z and eta_1 determine each other (docs/math.md section 3)."""
        return self.score_defined and (self.gaussian_base or self.schedule.base_absent)

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        """[t_min, t_max] on which the coefficients, their derivatives and (if asked) the score are finite."""
        eps = self.endpoint_eps
        singular_start = self.schedule.singular_at_start or self.gamma_family.singular_at_ends
        singular_end = self.schedule.singular_at_end or self.gamma_family.singular_at_ends
        if need_score:
            # The Gaussian part of x_t vanishes at t = 1; at t = 0, gamma = 0 (two-sided) or
            # beta = 0 makes the conversions s <-> b and s <-> eta_1 divide by zero.
            singular_start = singular_end = True
        return (eps if singular_start else 0.0, 1 - eps if singular_end else 1.0)

    def coefficients(self, t: Tensor) -> Coefficients:
        """alpha, beta, gamma and derivatives at t, each shaped like t."""
        gamma, gamma_dot = self.gamma_family(t)
        gamma_gamma_dot = self.gamma_family.gamma_gamma_dot(t)
        alpha, beta, alpha_dot, beta_dot, alpha_alpha_dot = self.schedule(t, gamma, gamma_gamma_dot)
        if alpha_alpha_dot is None:
            alpha_alpha_dot = alpha * alpha_dot
        return Coefficients(alpha, beta, gamma, alpha_dot, beta_dot, gamma_dot, alpha_alpha_dot, gamma_gamma_dot)

    def noise_scale(self, coefficients: Coefficients) -> Tensor:
        """The factor of the Gaussian variable the denoiser predicts: alpha (one-sided) or gamma."""
        return coefficients.alpha if self.one_sided else coefficients.gamma

    def check_time(self, t: Tensor, need_score: bool = False) -> None:
        """Raise a ValueError naming the first t outside [0, 1] or outside the valid interval."""
        t_min, t_max = self.valid_interval(need_score)
        bad = (t < t_min) | (t > t_max) | ~torch.isfinite(t)
        if bool(bad.any()):
            value = float(t[bad].flatten()[0])
            where = "[0, 1]" if not 0 <= value <= 1 else f"the valid interval [{t_min}, {t_max}] of {self!r}"
            raise ValueError(f"t = {value!r} is outside {where}")

    def sample(
        self,
        x0: Tensor,
        x1: Tensor,
        t: Tensor,
        z: Tensor | None = None,
        check_time: bool = True,
        modulation: Tensor | None = None,
    ) -> InterpolantSample:
        """Draw x_t and its regression targets.

        Args:
            x0: base samples (batch, ...); for one-sided schedules the Gaussian noise.
            x1: data samples, same shape as x0.
            t: times (batch,) inside ``valid_interval()``.
            z: latent noise like x0; drawn with ``torch.randn_like`` when None.
            check_time: verify t (one host sync); a training loop whose t comes from a TimeSampler on
                the valid interval turns it off.
            modulation: the per-pixel noise modulation m >= 0 of a residual bridge (docs/math.md section 11),
                broadcastable to x0 (batch, 1 or C, ...): x_t = alpha x0 + beta x1 + gamma m z, and the
                noise the denoiser predicts is m z. None: m = 1.
        """
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        if z is None:
            z = torch.randn_like(x0)
        elif z.shape != x0.shape:
            raise ValueError(f"z must have the shape of x0 {tuple(x0.shape)}, got {tuple(z.shape)}")
        if check_time:
            self.check_time(t)
        if modulation is not None:
            if self.one_sided:
                raise ValueError(f"a noise modulation needs a two-sided interpolant with gamma > 0, got {self!r}")
            z = modulation * z
        c = self.coefficients(t)
        alpha, beta, gamma = (broadcast_time(v, x0) for v in (c.alpha, c.beta, c.gamma))
        alpha_dot, beta_dot, gamma_dot = (broadcast_time(v, x0) for v in (c.alpha_dot, c.beta_dot, c.gamma_dot))
        derivative = alpha_dot * x0 + beta_dot * x1
        if self.gamma_family.is_zero:
            x_t, velocity = alpha * x0 + beta * x1, derivative
        else:
            x_t, velocity = alpha * x0 + beta * x1 + gamma * z, derivative + gamma_dot * z
        return InterpolantSample(
            t=t,
            x_t=x_t,
            x0=x0,
            x1=x1,
            z=z,
            velocity=velocity,
            interpolant_derivative=derivative,
            noise=x0 if self.one_sided else z,
            noise_scale=self.noise_scale(c),
            modulation=modulation,
        )

    def antithetic(self, sample: InterpolantSample) -> InterpolantSample:
        """The twin draw with the Gaussian noise negated ([U] section 6.1): x_t^- = I - gamma z."""
        if self.one_sided:
            return self.sample(-sample.x0, sample.x1, sample.t, sample.z, check_time=False)
        # sample.z is already m z: the twin's z is -m z and it is not modulated a second time.
        twin = self.sample(sample.x0, sample.x1, sample.t, -sample.z, check_time=False)
        return twin if sample.modulation is None else replace(twin, modulation=sample.modulation)
