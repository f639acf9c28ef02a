"""Classifier-free guidance (docs/math.md section 6): b_guided = b_uncond + w (b_cond - b_uncond).

The unconditional branch is the same network with every label replaced by the null label
(``num_classes``, see si_lightning/condition.py). Both branches run as one call on a doubled batch,
so each evaluation costs two network evaluations per sample and the NFE says so. The score is
combined with the same weights, which keeps b and s related by the (linear) conversions of docs/math.md
section 3.

Exact ends: w = 1 is the conditional field and w = 0 the unconditional one, each from a single call
(no doubled batch, no arithmetic), so they equal the plain fields bit for bit. A guidance interval
[t_low, t_high] (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval") applies w only
for t inside it; outside, the field is the conditional one, untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from si_lightning.checks import is_integer, is_number
from si_lightning.condition import Condition
from si_lightning.sampling.fields import Fields, FieldsWrapper, as_fields


def check_guidance_interval(interval: Sequence[float] | None) -> tuple[float, float] | None:
    """(t_low, t_high) with 0 <= t_low <= t_high <= 1, or None (guidance at every t)."""
    if interval is None:
        return None
    values = tuple(interval)
    if len(values) != 2 or not all(is_number(v) for v in values) or not 0.0 <= values[0] <= values[1] <= 1.0:
        raise ValueError(f"guidance_interval = {interval!r}: expected [t_low, t_high] with 0 <= t_low <= t_high <= 1")
    return float(values[0]), float(values[1])


class GuidedFields(FieldsWrapper):
    """Guided fields f_u + w (f_c - f_u) of ``fields`` for w = ``guidance_scale``.

    Args:
        fields: the conditional fields (a network trained with label dropout).
        guidance_scale: w; 0 is unconditional, 1 conditional, > 1 sharpens the class.
        null_label: the label of the unconditional branch (the backbone's ``num_classes``).
        interval: [t_low, t_high]: guide only there (conditional field elsewhere); None: every t.
    """

    def __init__(
        self, fields: Fields, guidance_scale: float, null_label: int, interval: Sequence[float] | None = None
    ) -> None:
        if not is_number(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if not is_integer(null_label) or null_label < 0:
            raise ValueError(f"null_label must be an int >= 0 (the number of classes), got {null_label!r}")
        super().__init__(as_fields(fields))
        self.guidance_scale = float(guidance_scale)
        self.null_label = null_label
        self.interval = check_guidance_interval(interval)
        single = self.guidance_scale == 1.0 or (self.guidance_scale == 0.0 and self.interval is None)
        self.evaluations_per_call = (1 if single else 2) * self.fields.evaluations_per_call

    def __repr__(self) -> str:
        interval = "" if self.interval is None else f", interval={list(self.interval)}"
        return (
            f"GuidedFields({self.fields!r}, guidance_scale={self.guidance_scale}, "
            f"null_label={self.null_label}{interval})"
        )

    def _null(self, cond: Condition | None) -> Condition:
        if cond is None or cond.labels is None:
            raise ValueError("classifier-free guidance needs class labels: pass cond=Condition(labels=...)")
        return cond.with_labels(torch.full_like(cond.labels, self.null_label))

    def _doubled(self, t: Tensor, x: Tensor, cond: Condition | None) -> tuple[Tensor, Tensor, Condition]:
        """(t, x, cond) stacked over [conditional; unconditional]: batch 2B."""
        both = Condition.concatenate([cond, self._null(cond)])  # type: ignore[list-item]
        return torch.cat([t, t]), torch.cat([x, x]), both

    def _inside(self, t: Tensor) -> Tensor | None:
        """Which samples are guided (batch,) bool; None when all are."""
        if self.interval is None:
            return None
        low, high = self.interval
        return (t >= low) & (t <= high)

    def _apply(self, evaluate: Callable, t: Tensor, x: Tensor, cond: Condition | None):
        """evaluate(t, x, cond) -> tensor or tuple of tensors, guided."""
        self._null(cond)  # refuse a missing label before any evaluation
        inside = self._inside(t)
        if self.guidance_scale == 1.0 or (inside is not None and not bool(inside.any())):
            return evaluate(t, x, cond)  # the conditional field, untouched
        if self.guidance_scale == 0.0 and inside is None:
            return evaluate(t, x, self._null(cond))  # the unconditional field, untouched
        both = evaluate(*self._doubled(t, x, cond))
        outputs = both if isinstance(both, tuple) else (both,)
        combined = []
        for output in outputs:
            conditional, unconditional = output.chunk(2)
            guided = unconditional + self.guidance_scale * (conditional - unconditional)
            if inside is not None:
                guided = torch.where(inside.view(-1, *[1] * (guided.dim() - 1)), guided, conditional)
            combined.append(guided)
        return tuple(combined) if isinstance(both, tuple) else combined[0]

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._apply(self.fields.velocity, t, x, cond)

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._apply(self.fields.score, t, x, cond)

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._apply(self.fields.data, t, x, cond)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        return self._apply(self.fields.velocity_and_score, t, x, cond)
