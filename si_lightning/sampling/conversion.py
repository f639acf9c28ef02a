"""Interpolant conversion: fields learned for interpolant A, re-expressed exactly as those of interpolant B.

With the same N(0, I) base and the same data, x^A_s = alpha_bar_A(s) z + beta_A(s) x1 in law (a latent
gamma z only adds to the Gaussian part: alpha_bar^2 = alpha^2 + gamma^2). Matching the log-SNR,
lambda_A(s(t)) = lambda_B(t), and the scale c(t) = beta_B(t) / beta_A(s) = alpha_bar_B(t) / alpha_bar_A(s),
gives x^B_t = c(t) x^A_{s(t)} in law, for every t in (0, 1). Hence, with y = x / c,

    s_B(t, x)   = s_A(s, y) / c
    eta1_B(t, x) = eta1_A(s, y)
    b_B(t, x)   = (c' / c) x + c s' b_A(s, y)        (s' = lambda_B'(t) / lambda_A'(s))

the last because d/dt [c x^A_s] = c' x^A_s + c s' d/ds x^A_s and b is the conditional mean of that time
derivative. One evaluation of A's fields gives one of B's, so NFE is unchanged. A trained network and the
Gaussian-mixture oracle convert alike: only ``fields.interpolant`` is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from si_lightning.condition import Condition
from si_lightning.interpolants import Interpolant, broadcast_time
from si_lightning.sampling.fields import Fields, FieldsWrapper, as_fields
from si_lightning.sampling.snr import check_convertible, log_snr, log_snr_rate, time_of_log_snr


@dataclass(frozen=True)
class TimeChange:
    """The map from target time t to source time s and scale c, each (batch,) in float64."""

    source_time: Tensor  # s(t)
    source_rate: Tensor  # s'(t)
    scale: Tensor  # c(t)
    scale_log_rate: Tensor  # c'(t) / c(t)


def time_change(source: Interpolant, target: Interpolant, t: Tensor) -> TimeChange:
    """s(t), s'(t), c(t) and c'/c matching the log-SNR of ``target`` at t (batch,) with that of ``source``.

    c is the ratio of the betas where the source's signal dominates (beta_A >= alpha_bar_A) and of the
    alpha_bars elsewhere: both are equal at matched SNR, and the larger denominator keeps the ratio
    accurate near either end.
    """
    t = t.to(torch.float64)
    source_time = time_of_log_snr(source, log_snr(target, t))
    source_rate = log_snr_rate(target, t) / log_snr_rate(source, source_time)
    to, of = target.coefficients(t), source.coefficients(source_time)
    beta_route = of.beta >= of.noise_variance(True).sqrt()
    beta_scale = to.beta / of.beta
    beta_log_rate = to.beta_dot / to.beta - source_rate * of.beta_dot / of.beta
    noise_scale = torch.sqrt(to.noise_variance(True) / of.noise_variance(True))
    noise_log_rate = to.noise_variance_rate(True) / to.noise_variance(True) - source_rate * (
        of.noise_variance_rate(True) / of.noise_variance(True)
    )
    return TimeChange(
        source_time,
        source_rate,
        torch.where(beta_route, beta_scale, noise_scale),
        torch.where(beta_route, beta_log_rate, noise_log_rate),
    )


class ConvertedFields(FieldsWrapper):
    """The fields of ``interpolant`` computed from ``source`` fields of another Gaussian-base interpolant.

    Valid on the target's interior [eps, 1 - eps]: at t = 0 and t = 1 the log-SNR is infinite.
    """

    def __init__(self, source: Fields, interpolant: Interpolant) -> None:
        super().__init__(source)
        self.interpolant = interpolant  # the target's; the source keeps its own

    @property
    def source(self) -> Fields:
        """The fields being converted (those of ``source.interpolant``)."""
        return self.fields

    def __repr__(self) -> str:
        return f"ConvertedFields({self.source!r} -> {self.interpolant!r})"

    def _source_point(self, t: Tensor, x: Tensor) -> tuple[TimeChange, Tensor, Tensor]:
        change = time_change(self.source.interpolant, self.interpolant, t)
        scale = broadcast_time(change.scale.to(x.dtype), x)
        return change, change.source_time.to(x.dtype), x / scale

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        change, source_time, y = self._source_point(t, x)
        return self._velocity(change, x, self.source.velocity(source_time, y, cond))

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        change, source_time, y = self._source_point(t, x)
        return self.source.score(source_time, y, cond) / broadcast_time(change.scale.to(x.dtype), x)

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        _, source_time, y = self._source_point(t, x)
        return self.source.data(source_time, y, cond)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        change, source_time, y = self._source_point(t, x)
        velocity, score = self.source.velocity_and_score(source_time, y, cond)
        return self._velocity(change, x, velocity), score / broadcast_time(change.scale.to(x.dtype), x)

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        return self.interpolant.valid_interval(need_score=True)

    @staticmethod
    def _velocity(change: TimeChange, x: Tensor, source_velocity: Tensor) -> Tensor:
        linear = broadcast_time(change.scale_log_rate.to(x.dtype), x)
        factor = broadcast_time((change.scale * change.source_rate).to(x.dtype), x)
        return linear * x + factor * source_velocity


def convert_interpolant(fields: object, interpolant: Interpolant) -> Fields:
    """Fields for ``interpolant`` from ``fields`` that carry their own ``interpolant`` (a network or the oracle).

    Both interpolants need an independent N(0, I) base (no data-dependent coupling, no mirror) and a
    strictly increasing signal-to-noise ratio beta / alpha_bar (not encoder-decoder); anything else raises a
    ValueError naming the interpolant and the reason.
    """
    source = as_fields(fields)
    if source.interpolant is None:
        raise ValueError(f"{source!r} carries no interpolant: conversion needs the one the fields were made for")
    check_convertible(source.interpolant, "source")
    check_convertible(interpolant, "target")
    return ConvertedFields(source, interpolant)
