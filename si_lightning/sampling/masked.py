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
from si_lightning.sampling.fields import FieldsWrapper


class KeptPixelFields(FieldsWrapper):
    """``fields`` with b set to 0 where ``cond.keep`` = 1; unchanged when the condition has no keep-mask.

    Only b changes: the score and the data prediction forward as they are.
    """

    @staticmethod
    def _masked(velocity: Tensor, cond: Condition | None) -> Tensor:
        return velocity if cond is None or cond.keep is None else mask_velocity(velocity, cond)

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._masked(self.fields.velocity(t, x, cond), cond)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        velocity, score = self.fields.velocity_and_score(t, x, cond)
        return self._masked(velocity, cond), score
