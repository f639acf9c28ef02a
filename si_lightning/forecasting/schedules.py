"""Learnable monotone coefficient schedules with exact boundary values (docs/math.md section 9)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from si_lightning.checks import is_integer


@functools.cache
def _binomials(degree: int) -> tuple[int, ...]:
    return tuple(math.comb(degree, k) for k in range(degree + 1))


class MonotoneSchedule(nn.Module):
    """F(t) = sum_j w_j B_{j,K}(t): a degree-K Bernstein polynomial with 0 = w_0 <= w_1 <= ... <= w_K = 1.

    The increments w_{j+1} - w_j = softmax(theta)_j are positive and sum to one, so F(0) = 0 and F(1) = 1
    exactly and F' = K sum_j softmax(theta)_j B_{j,K-1}(t) > 0 (F is increasing) for any theta. theta = 0
    (the initial value) gives w_j = j / K, for which F(t) = t.

    Args:
        degree: K >= 1 (K = 1 is F(t) = t whatever theta).
    """

    def __init__(self, degree: int = 8) -> None:
        super().__init__()
        if not is_integer(degree) or degree < 1:
            raise ValueError(f"degree = {degree!r}: expected an integer >= 1")
        self.degree = degree
        self.logits = nn.Parameter(torch.zeros(degree))

    @staticmethod
    def _bernstein(t: Tensor, degree: int) -> Tensor:
        """(..., degree + 1): B_{j,degree}(t) = C(degree, j) t^j (1 - t)^(degree - j)."""
        j = torch.arange(degree + 1, dtype=t.dtype, device=t.device)
        binomial = torch.tensor(_binomials(degree), dtype=t.dtype, device=t.device)
        t = t.unsqueeze(-1)
        return binomial * t**j * (1 - t) ** (degree - j)

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(F(t), F'(t)), each shaped like t (values in [0, 1])."""
        increments = torch.softmax(self.logits.to(t.dtype), dim=0)
        weights = torch.cat((increments.new_zeros(1), torch.cumsum(increments, dim=0)))
        weights = weights / weights[-1]  # exactly 1 at the end whatever the rounding of the sum
        value = (self._bernstein(t, self.degree) * weights).sum(-1)
        derivative = self.degree * (self._bernstein(t, self.degree - 1) * increments).sum(-1)
        return value, derivative
