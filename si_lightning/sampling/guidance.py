"""Classifier-free guidance (docs/math.md section 6): b_guided = b_uncond + w (b_cond - b_uncond).

The unconditional branch is the same network with every label replaced by the null label
(``num_classes``, see si_lightning/condition.py). Both branches run as one call on a doubled batch,
so each evaluation costs two network evaluations per sample and the NFE says so. The score is
combined with the same weights, which keeps b and s related by the (linear) conversions of docs/math.md
section 3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from si_lightning.condition import Condition
from si_lightning.sampling.fields import Fields, as_fields


class GuidedFields(Fields):
    """Guided fields f_u + w (f_c - f_u) of ``fields`` for w = ``guidance_scale``.

    Args:
        fields: the conditional fields (a network trained with label dropout).
        guidance_scale: w; 0 is unconditional, 1 conditional, > 1 sharpens the class.
        null_label: the label of the unconditional branch (the backbone's ``num_classes``).
    """

    def __init__(self, fields: Fields, guidance_scale: float, null_label: int) -> None:
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 0:
            raise ValueError(f"null_label must be an int >= 0 (the number of classes), got {null_label!r}")
        self.fields = as_fields(fields)
        self.guidance_scale = float(guidance_scale)
        self.null_label = null_label
        self.interpolant = self.fields.interpolant
        self.has_score, self.has_data = self.fields.has_score, self.fields.has_data
        self.missing_score_reason = self.fields.missing_score_reason
        self.evaluations_per_call = 2 * self.fields.evaluations_per_call

    def __repr__(self) -> str:
        return f"GuidedFields({self.fields!r}, guidance_scale={self.guidance_scale}, null_label={self.null_label})"

    def _doubled(self, t: Tensor, x: Tensor, cond: Condition | None) -> tuple[Tensor, Tensor, Condition]:
        """(t, x, cond) stacked over [conditional; unconditional]: batch 2B."""
        if cond is None or cond.labels is None:
            raise ValueError("classifier-free guidance needs class labels: pass cond=Condition(labels=...)")
        null = torch.full_like(cond.labels, self.null_label)
        channels = None if cond.channels is None else torch.cat([cond.channels, cond.channels])
        return torch.cat([t, t]), torch.cat([x, x]), Condition(labels=torch.cat([cond.labels, null]), channels=channels)

    def _combine(self, both: Tensor) -> Tensor:
        conditional, unconditional = both.chunk(2)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._combine(self.fields.velocity(*self._doubled(t, x, cond)))

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._combine(self.fields.score(*self._doubled(t, x, cond)))

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._combine(self.fields.data(*self._doubled(t, x, cond)))

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        velocity, score = self.fields.velocity_and_score(*self._doubled(t, x, cond))
        return self._combine(velocity), self._combine(score)

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        return self.fields.valid_interval(need_score)
