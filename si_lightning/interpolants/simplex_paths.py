"""Paths alpha(s), s in [0, 1], on the simplex of a multimarginal interpolant (docs/math.md section 12).

A translation from marginal i to marginal j follows a route of vertices: ``edge`` is [i, j], ``through-base``
is [i, base, j] (encode to the Gaussian vertex, then generate). Each leg is the straight edge
alpha(s) = (1 - s) e_a + s e_b, alpha'(s) = e_b - e_a, solved as its own ODE so that the kink at a vertex
(where alpha' jumps) is never inside one solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class EdgePath:
    """alpha(s) = (1 - s) e_start + s e_end on the simplex of ``num_marginals`` vertices."""

    num_marginals: int
    start: int
    end: int

    def __post_init__(self) -> None:
        for name, vertex in (("start", self.start), ("end", self.end)):
            if not 0 <= vertex < self.num_marginals:
                raise ValueError(f"{name} vertex {vertex} is not a marginal in 0..{self.num_marginals - 1}")
        if self.start == self.end:
            raise ValueError(f"an edge needs two different vertices, got {self.start} twice")

    def __call__(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha (batch, K), alpha'(s) (batch, K)) at s (batch,)."""
        alpha = torch.zeros(s.shape[0], self.num_marginals, dtype=s.dtype, device=s.device)
        alpha[:, self.start] = 1 - s
        alpha[:, self.end] += s
        rate = torch.zeros_like(alpha)
        rate[:, self.start] = -1.0
        rate[:, self.end] = 1.0
        return alpha, rate


ROUTES = ("edge", "through-base")


def route(num_marginals: int, start: int, end: int, kind: str = "edge", base: int = 0) -> list[EdgePath]:
    """The legs from vertex ``start`` to ``end``: ``edge`` one leg, ``through-base`` two via ``base``."""
    if kind not in ROUTES:
        raise ValueError(f"unknown path {kind!r}; expected one of: {', '.join(ROUTES)}")
    if kind == "edge" or base in (start, end):
        return [EdgePath(num_marginals, start, end)]
    return [EdgePath(num_marginals, start, base), EdgePath(num_marginals, base, end)]
