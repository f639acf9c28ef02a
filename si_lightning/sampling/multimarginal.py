"""Multimarginal fields on a path of the simplex, driven by the ODE and SDE samplers (docs/math.md section 12).

``SimplexFields`` give g = (g_0 .. g_{K-1}) and eta at (alpha, x): from a network that emits them stacked
(``NetworkSimplexFields``) or from the Gaussian oracle (``OracleSimplexFields``). ``PathFields`` restrict
them to one leg alpha(s) of a route and present the ``Fields`` protocol with s in the place of t:

    b(s, x) = sum_k alpha_k'(s) g_k(alpha(s), x) + gamma'(s) eta(alpha(s), x),   s(s, x) = -eta / gamma,

so ``ODESampler.sample`` moves samples of the leg's first vertex to its last (and an SDE with a diffusion
that needs no two-marginal interpolant, such as ``constant`` or ``increasing-decreasing``, does too).
``translate`` follows a whole route, leg after leg.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from torch import Tensor

from si_lightning.analytic_multimarginal import GaussianMarginals, GaussianMixtureMarginals
from si_lightning.condition import Condition
from si_lightning.interpolants.multimarginal import MultimarginalInterpolant
from si_lightning.interpolants.simplex_paths import SimplexPath
from si_lightning.sampling.fields import Fields

SimplexBackbone = Callable[[Tensor, Tensor, Condition | None], Tensor]  # (x, alpha (batch, K), cond) -> output


class SimplexFields(ABC):
    """g_k(alpha, x) = E[x_k | x(alpha) = x] for every k, and eta(alpha, x) = E[z | x(alpha) = x]."""

    interpolant: MultimarginalInterpolant

    @abstractmethod
    def predict(self, alpha: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor | None]:
        """(g (batch, K, ...), eta (batch, ...) or None when gamma = 0) at alpha (batch, K), x (batch, ...)."""


class NetworkSimplexFields(SimplexFields):
    """The fields of a network ``backbone(x, alpha, cond)`` that emits [g_0, .., g_{K-1}, eta] stacked on dim 1."""

    def __init__(self, backbone: SimplexBackbone, interpolant: MultimarginalInterpolant) -> None:
        self.backbone = backbone
        self.interpolant = interpolant

    def predict(self, alpha: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor | None]:
        return self.interpolant.split(self.backbone(x, alpha.to(x.dtype), cond))


class OracleSimplexFields(SimplexFields):
    """The exact fields of ``GaussianMarginals`` or ``GaussianMixtureMarginals`` (x of shape (batch, d))."""

    def __init__(self, oracle: GaussianMarginals | GaussianMixtureMarginals) -> None:
        self.oracle = oracle
        self.interpolant = oracle.interpolant

    def predict(self, alpha: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor | None]:
        return self.oracle.predict(alpha, x)


class PathFields(Fields):
    """``Fields`` along one leg alpha(s) of the simplex, s (batch,) in the place of t.

    There is no two-marginal interpolant (``interpolant`` is None), so samplers use their plain time
    grids; ``valid_interval`` keeps s off the vertices where dgamma/ds (Brownian gamma) or the score is
    infinite.
    """

    def __init__(self, fields: SimplexFields, path: SimplexPath) -> None:
        if path.num_marginals != fields.interpolant.num_marginals:
            raise ValueError(
                f"the path has {path.num_marginals} vertices but the fields {fields.interpolant.num_marginals}"
            )
        self.fields = fields
        self.path = path
        self.simplex = fields.interpolant
        self.interpolant = None
        self.has_score = self.simplex.has_denoiser
        self.missing_score_reason = "" if self.has_score else f"{self.simplex!r} has gamma = 0: no score"

    def __repr__(self) -> str:
        return f"PathFields({self.simplex!r}, {self.path.start} -> {self.path.end})"

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        return self.simplex.valid_interval(need_score)

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        alpha, rate = self.path(t)
        g, eta = self.fields.predict(alpha, x, cond)
        return self.simplex.velocity(alpha, rate, g, eta)

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        alpha, _ = self.path(t)
        _, eta = self.fields.predict(alpha, x, cond)
        return self.simplex.score(alpha, eta)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        alpha, rate = self.path(t)
        g, eta = self.fields.predict(alpha, x, cond)
        return self.simplex.velocity(alpha, rate, g, eta), self.simplex.score(alpha, eta)


def translate(
    fields: SimplexFields, sampler, x: Tensor, legs: Sequence[SimplexPath], cond: Condition | None = None, **options
) -> tuple[Tensor, int]:
    """Move samples x (batch, ...) of the first leg's start vertex along every leg; (result, NFE per sample).

    ``sampler`` is an ``ODESampler`` or ``SDESampler``; ``options`` go to its ``sample`` (an SDE's generator).
    """
    nfe = 0
    for leg in legs:
        result = sampler.sample(PathFields(fields, leg), x, cond, **options)
        x, nfe = result.x, nfe + result.nfe
    return x, nfe
