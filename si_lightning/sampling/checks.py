"""Argument checks shared by the samplers: each bad value stops here with a ValueError naming it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import Tensor

from si_lightning.condition import Condition

if TYPE_CHECKING:
    from si_lightning.sampling.fields import Fields


def check_interval_argument(interval: object) -> tuple[float, float] | None:
    """A user-given (t_start, t_end) with t_start < t_end, or None (the fields' valid interval)."""
    if interval is None:
        return None
    if not isinstance(interval, (tuple, list)) or len(interval) != 2:
        raise ValueError(f"interval must be None or a pair (t_start, t_end), got {interval!r}")
    start, end = (float(value) for value in interval)
    if not (math.isfinite(start) and math.isfinite(end)) or start >= end:
        raise ValueError(f"interval must be finite with t_start < t_end, got {interval!r}")
    return start, end


def resolve_interval(
    fields: Fields, interval: tuple[float, float] | None, need_score: bool, who: str
) -> tuple[float, float]:
    """The integration interval: ``interval`` if it lies inside the fields' valid interval, else theirs.

    A prediction that converts through the score (``needs_score_interval``) shrinks the valid interval
    even for an ODE; ``need_score`` shrinks it for samplers that use s themselves.
    """
    low, high = fields.valid_interval(need_score=need_score)
    if interval is None:
        return float(low), float(high)
    start, end = interval
    if start < low or end > high:
        bad = start if start < low else end
        name = "t_start" if start < low else "t_end"
        need = " where the score is needed" if need_score else ""
        raise ValueError(
            f"{who}: {name} = {bad!r} of interval {interval!r} is outside the valid interval [{low}, {high}]{need} "
            f"of {fields!r}"
        )
    return start, end


def check_data(name: str, x: object) -> Tensor:
    """A floating-point (batch, ...) tensor with at least two dimensions."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        dtype = x.dtype if isinstance(x, Tensor) else None
        raise ValueError(
            f"{name} must be a floating-point tensor of shape (batch, ...) with batch >= 1 and at least 2 "
            f"dimensions, got {shape} (dtype {dtype})"
        )
    return x


def check_condition(cond: object, batch: int) -> Condition | None:
    """``cond`` is None or a Condition for exactly ``batch`` samples."""
    if cond is None:
        return None
    if not isinstance(cond, Condition):
        raise ValueError(f"cond must be a Condition or None, got {type(cond).__name__}")
    if len(cond) not in (0, batch):
        raise ValueError(f"cond describes {len(cond)} samples but the data has batch size {batch}")
    return cond


def batch_time(t: Tensor, batch: int) -> Tensor:
    """A 0-d grid time as the (batch,) tensor every field takes (on the device: no host sync).

    A real (batch,) tensor rather than an expanded view, so a network may reshape or write into it.
    """
    return t.reshape(1).repeat(batch)
