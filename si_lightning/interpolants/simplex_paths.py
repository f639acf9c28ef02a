"""Paths alpha(s), s in [0, 1], on the simplex of a multimarginal interpolant (docs/math.md section 12).

A translation from marginal i to marginal j follows a route: ``edge`` is the one leg [i, j],
``through-base`` the two legs [i, base, j] (encode to the Gaussian vertex, then generate), each the straight
edge alpha(s) = (1 - s) e_a + s e_b, alpha'(s) = e_b - e_a, solved as its own ODE so that the kink at a
vertex (where alpha' jumps) is never inside one solve. ``through-interior`` is one smooth leg from i to j
that bends into the interior toward a third vertex k (``InteriorPath``) without reaching it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class SimplexPath(Protocol):
    """A leg alpha(s) from vertex ``start`` (s = 0) to vertex ``end`` (s = 1) of a ``num_marginals``-simplex."""

    num_marginals: int
    start: int
    end: int

    def __call__(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha (batch, K), alpha'(s) (batch, K)) at s (batch,)."""
        ...


def _check_vertex(name: str, vertex: int, num_marginals: int) -> None:
    if not 0 <= vertex < num_marginals:
        raise ValueError(f"{name} vertex {vertex} is not a marginal in 0..{num_marginals - 1}")


@dataclass(frozen=True)
class EdgePath:
    """alpha(s) = (1 - s) e_start + s e_end on the simplex of ``num_marginals`` vertices."""

    num_marginals: int
    start: int
    end: int

    def __post_init__(self) -> None:
        for name, vertex in (("start", self.start), ("end", self.end)):
            _check_vertex(name, vertex, self.num_marginals)
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


@dataclass(frozen=True)
class InteriorPath:
    """A leg from e_start to e_end that bends toward e_via through the interior of the simplex.

    With i = start, j = end, k = via and the bend r(s) = kappa 4 s (1 - s) (0 at both ends, kappa at s = 1/2):

        alpha(s)  = (1 - s)(1 - r) e_i + r e_k + s (1 - r) e_j,
        alpha'(s) = -[(1 - r) + (1 - s) r'] e_i + r' e_k + [(1 - r) - s r'] e_j,   r'(s) = 4 kappa (1 - 2 s).

    The coordinates are >= 0 and sum to 1 for kappa in [0, 1], and the path is symmetric: the leg
    end -> start with the same via and kappa is this one run backwards, so the cycle start -> end -> start
    measures the solver. At its midpoint alpha = (1 - kappa)/2 (e_i + e_j) + kappa e_k, so the class mean
    of x(alpha) keeps the via marginal's part kappa T_k(mu_c) where the edge's cancels (an upright and an
    inverted digit). kappa must lie in (0, 1): kappa = 0 is the edge, and kappa = 1 reaches the vertex
    e_k at s = 1/2, where alpha' = 0 and gamma = 0, so the Brownian dgamma/ds is 0/0 there (the route
    through a vertex is two edges, ``route(..., "through-base", base=via)``).
    """

    num_marginals: int
    start: int
    end: int
    via: int
    kappa: float

    def __post_init__(self) -> None:
        for name, vertex in (("start", self.start), ("end", self.end), ("via", self.via)):
            _check_vertex(name, vertex, self.num_marginals)
        if len({self.start, self.end, self.via}) != 3:
            raise ValueError(
                f"an interior path needs three different vertices, got start {self.start}, end {self.end}, "
                f"via {self.via}"
            )
        if not (math.isfinite(self.kappa) and 0 < self.kappa < 1):
            raise ValueError(f"kappa must lie in (0, 1) (0 is the edge, 1 reaches the via vertex), got {self.kappa}")

    def __call__(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha (batch, K), alpha'(s) (batch, K)) at s (batch,)."""
        bend = 4.0 * self.kappa * s * (1 - s)
        bend_rate = 4.0 * self.kappa * (1 - 2 * s)
        alpha = torch.zeros(s.shape[0], self.num_marginals, dtype=s.dtype, device=s.device)
        alpha[:, self.start] = (1 - s) * (1 - bend)
        alpha[:, self.via] = bend
        alpha[:, self.end] = s * (1 - bend)
        rate = torch.zeros_like(alpha)
        rate[:, self.start] = -(1 - bend) - (1 - s) * bend_rate
        rate[:, self.via] = bend_rate
        rate[:, self.end] = (1 - bend) - s * bend_rate
        return alpha, rate


ROUTES = ("edge", "through-base")  # the routes named by their kind alone (``si-lightning sample --path``)
PATH_KINDS = (*ROUTES, "through-interior")


def route(
    num_marginals: int,
    start: int,
    end: int,
    kind: str = "edge",
    base: int = 0,
    via: int | None = None,
    kappa: float | None = None,
) -> list[SimplexPath]:
    """The legs from vertex ``start`` to ``end``.

    ``edge``: one straight leg; ``through-base``: two straight legs via ``base``; ``through-interior``:
    one ``InteriorPath`` bending toward ``via`` by ``kappa`` (both required).
    """
    if kind not in PATH_KINDS:
        raise ValueError(f"unknown path {kind!r}; expected one of: {', '.join(PATH_KINDS)}")
    if kind == "through-interior":
        if via is None or kappa is None:
            raise ValueError(f"the through-interior path needs via and kappa, got via={via}, kappa={kappa}")
        return [InteriorPath(num_marginals, start, end, via, kappa)]
    if kind == "edge" or base in (start, end):
        return [EdgePath(num_marginals, start, end)]
    return [EdgePath(num_marginals, start, base), EdgePath(num_marginals, base, end)]
