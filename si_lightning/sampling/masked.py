"""Fields that never move known pixels: the velocity is exactly zero where ``cond.keep`` = 1.

With gamma = 0 (in-painting's linear interpolant) or a residual-modulated bridge (no noise where
keep = 1, docs/math.md section 11), a kept pixel has x0 = x1 and x_t = (alpha + beta) x1 = x1 for every t
(alpha + beta = 1), so the exact velocity there is zero, the Gaussian part of x_t has no variance there and
E[x1 | x_t] = x_t. Forcing b = 0, s = 0 and E[x1 | x_t] = x there (``torch.where``, exact even if the
network returns inf or NaN), and telling an SDE not to add noise there (``frozen_pixels``), makes every
ODE and SDE solver return the input bit for bit on kept pixels (x + h * 0 = x), whatever the network learned.
"""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.condition import Condition
from si_lightning.couplings import mask_velocity
from si_lightning.sampling.fields import FieldsWrapper


class KeptPixelFields(FieldsWrapper):
    """``fields`` with b = 0, s = 0 and E[x1 | x_t] = x where ``cond.keep`` = 1; unchanged without a keep-mask."""

    @staticmethod
    def _masked(value: Tensor, cond: Condition | None) -> Tensor:
        return value if cond is None or cond.keep is None else mask_velocity(value, cond)

    def frozen_pixels(self, cond: Condition | None) -> Tensor | None:
        """keep (batch, 1, ...): the pixels an SDE must add no noise to (None: none)."""
        return None if cond is None else cond.keep

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._masked(self.fields.velocity(t, x, cond), cond)

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self._masked(self.fields.score(t, x, cond), cond)

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        data = self.fields.data(t, x, cond)
        return data if cond is None or cond.keep is None else torch.where(cond.keep.bool(), x, data)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        velocity, score = self.fields.velocity_and_score(t, x, cond)
        return self._masked(velocity, cond), self._masked(score, cond)
