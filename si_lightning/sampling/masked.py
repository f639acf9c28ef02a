"""Fields that never move known pixels: the velocity is exactly zero where ``cond.keep`` = 1 (in-painting).

With the linear interpolant and gamma = 0, a kept pixel has x0 = x1 (in-painting, docs/math.md
section 6) and x_t = x1 for every t, so the exact velocity there is zero. Forcing it makes every
fixed-step or adaptive ODE solver return the input bit for bit on kept pixels (x + h * 0 = x),
whatever the network learned.
"""

from __future__ import annotations

from torch import Tensor

from si_lightning.condition import Condition
from si_lightning.couplings import mask_velocity
from si_lightning.sampling.fields import Fields


class KeptPixelFields(Fields):
    """``fields`` with b set to 0 where ``cond.keep`` = 1; unchanged when the condition has no keep-mask."""

    def __init__(self, fields: Fields) -> None:
        self.fields = fields
        self.interpolant = fields.interpolant
        self.has_score, self.has_data = fields.has_score, fields.has_data
        self.missing_score_reason = fields.missing_score_reason
        self.evaluations_per_call = fields.evaluations_per_call

    def __repr__(self) -> str:
        return f"KeptPixelFields({self.fields!r})"

    @staticmethod
    def _masked(velocity: Tensor, cond: Condition | None) -> Tensor:
        return velocity if cond is None or cond.keep is None else mask_velocity(velocity, cond)

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._masked(self.fields.velocity(t, x, cond), cond)

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.fields.score(t, x, cond)

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.fields.data(t, x, cond)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        velocity, score = self.fields.velocity_and_score(t, x, cond)
        return self._masked(velocity, cond), score

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        return self.fields.valid_interval(need_score)
