"""The multimarginal interpolant x(alpha) = sum_k alpha_k x_k + gamma(alpha) z (docs/math.md section 12).

K marginals rho_0 .. rho_{K-1}, alpha (batch, K) on the simplex, vertex e_k is rho_k. One network
learns g_k(alpha, x) = E[x_k | x(alpha) = x] for every k (and, when gamma is not zero, the denoiser
eta(alpha, x) = E[z | x(alpha) = x]) by the square loss; any path alpha(s) on the simplex then
transports rho_{alpha(0)} to rho_{alpha(1)} with

    dx/ds = sum_k alpha_k'(s) g_k(alpha(s), x) + gamma'(s) eta(alpha(s), x),

and where gamma > 0 the score of x(alpha) is -eta / gamma. Plain PyTorch, no Lightning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from si_lightning.checks import is_integer, lookup
from si_lightning.interpolants.interpolant import broadcast_time
from si_lightning.interpolants.predictions import mean_square
from si_lightning.interpolants.simplex import (
    SIMPLEX_SAMPLERS,
    MixedSimplex,
    SimplexGamma,
    SimplexSampler,
    get_simplex_gamma,
    simplex_q,
    simplex_q_rate,
)

SimplexNetwork = Callable[[Tensor, Tensor], Tensor]  # (x (batch, ...), alpha (batch, K)) -> (batch, outputs*C, ...)


@dataclass(frozen=True)
class MultimarginalSample:
    """One draw of x(alpha) and its regression targets.

    alpha (batch, K); x (batch, ...); xs the K marginal samples (targets of g_k), each (batch, ...);
    z (batch, ...) the latent noise (target of eta); gamma (batch,).
    """

    alpha: Tensor
    x: Tensor
    xs: tuple[Tensor, ...]
    z: Tensor
    gamma: Tensor


class MultimarginalInterpolant:
    """x(alpha) = sum_k alpha_k x_k + gamma(alpha) z on the simplex of ``num_marginals`` vertices.

    Args:
        num_marginals: K >= 2.
        gamma: one of ``SIMPLEX_GAMMAS``: ``brownian`` sqrt(a q), ``quadratic`` a q or ``zero``, with
            q = (1 - |alpha|^2) / 2 (zero at the vertices, s (1 - s) on an edge).
        gamma_scale: a > 0.
        endpoint_eps: how far from a vertex a path's sampling interval starts and ends where
            dgamma/ds is infinite there (Brownian) or where the score is asked for (gamma = 0 at a vertex).
        alpha_sampler: the training density of alpha, one of ``SIMPLEX_SAMPLERS``: ``uniform``
            (Dirichlet(1)), ``edges`` or ``mixed`` (an edge with probability ``edge_probability``).
        edge_probability: the edge share of ``mixed``.
        gaussian_base: whether vertex 0 is the standard Gaussian N(0, I) (set from the datamodule by
            the command line); only then can a model generate from noise (the route 0 -> j).
    """

    def __init__(
        self,
        num_marginals: int,
        gamma: str = "brownian",
        gamma_scale: float = 1.0,
        endpoint_eps: float = 1e-3,
        alpha_sampler: str = "mixed",
        edge_probability: float = 0.5,
        gaussian_base: bool = True,
    ) -> None:
        if not is_integer(num_marginals) or num_marginals < 2:
            raise ValueError(f"num_marginals must be an integer >= 2, got {num_marginals!r}")
        if not 0 < endpoint_eps < 0.5:
            raise ValueError(f"endpoint_eps must be in (0, 0.5), got {endpoint_eps!r}")
        self.num_marginals = num_marginals
        self.gamma_name = gamma
        self.gamma_scale = float(gamma_scale)
        self.gamma_family: SimplexGamma = get_simplex_gamma(gamma, gamma_scale)
        self.endpoint_eps = float(endpoint_eps)
        sampler = lookup(SIMPLEX_SAMPLERS, alpha_sampler, "alpha sampler")
        self.alpha_sampler_name = alpha_sampler
        self.alpha_sampler: SimplexSampler = (
            sampler(edge_probability) if sampler is MixedSimplex else sampler()  # only the mixture has a share
        )
        if not 0.0 <= edge_probability <= 1.0:
            raise ValueError(f"edge_probability must be in [0, 1], got {edge_probability!r}")
        self.gaussian_base = bool(gaussian_base)

    def __repr__(self) -> str:
        return (
            f"MultimarginalInterpolant(num_marginals={self.num_marginals}, gamma={self.gamma_name!r}, "
            f"gamma_scale={self.gamma_scale})"
        )

    @property
    def has_denoiser(self) -> bool:
        """Whether x(alpha) has latent noise, so that eta = E[z | x] is learnt (and the score exists)."""
        return not self.gamma_family.is_zero

    @property
    def outputs(self) -> int:
        """Data-shaped fields a network emits: g_0 .. g_{K-1}, then eta when gamma is not zero."""
        return self.num_marginals + int(self.has_denoiser)

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        """[s_min, s_max] of a vertex-to-vertex path on which the fields (and, if asked, the score) are finite."""
        eps = self.endpoint_eps
        singular = self.gamma_family.singular_at_vertices or need_score
        return (eps, 1 - eps) if singular else (0.0, 1.0)

    def gamma(self, alpha: Tensor) -> Tensor:
        """gamma(alpha): (batch, K) -> (batch,)."""
        return self.gamma_family(alpha)

    def gamma_rates(self, alpha: Tensor, alpha_rate: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(gamma, dgamma/ds, gamma dgamma/ds) along a path with alpha (batch, K), alpha'(s) (batch, K)."""
        q = simplex_q(alpha)
        rate, product = self.gamma_family.rates(q, simplex_q_rate(alpha, alpha_rate))
        return self.gamma_family.of_q(q), rate, product

    def check_alpha(self, alpha: Tensor, batch_size: int, tolerance: float = 1e-5) -> None:
        """Raise a ValueError unless alpha is (batch, K), finite, >= 0 and sums to 1 per row."""
        expected = (batch_size, self.num_marginals)
        if tuple(alpha.shape) != expected:
            raise ValueError(f"alpha must have shape {expected} (batch, num_marginals), got {tuple(alpha.shape)}")
        sums = alpha.sum(dim=1)
        bad = ~torch.isfinite(alpha).all(dim=1) | (alpha < -tolerance).any(dim=1) | ((sums - 1).abs() > tolerance)
        if bool(bad.any()):
            row = [round(value, 6) for value in alpha[bad][0].tolist()]
            raise ValueError(f"alpha must lie on the simplex (entries >= 0 summing to 1), got {row}")

    def sample(
        self, xs: Sequence[Tensor], alpha: Tensor, z: Tensor | None = None, check_alpha: bool = True
    ) -> MultimarginalSample:
        """x(alpha) and its targets from K marginal samples ``xs`` (each (batch, ...)), alpha (batch, K), z."""
        xs = tuple(xs)
        if len(xs) != self.num_marginals:
            raise ValueError(f"expected {self.num_marginals} marginal samples, got {len(xs)}")
        shape = xs[0].shape
        for index, x_k in enumerate(xs):
            if x_k.shape != shape:
                raise ValueError(f"marginal {index} has shape {tuple(x_k.shape)}, marginal 0 has {tuple(shape)}")
        if z is None:
            z = torch.randn_like(xs[0])
        elif z.shape != shape:
            raise ValueError(f"z must have the marginals' shape {tuple(shape)}, got {tuple(z.shape)}")
        if check_alpha:
            self.check_alpha(alpha, shape[0])
        x = sum(broadcast_time(alpha[:, k], x_k) * x_k for k, x_k in enumerate(xs))
        gamma = self.gamma(alpha)
        if self.has_denoiser:
            x = x + broadcast_time(gamma, z) * z
        return MultimarginalSample(alpha=alpha, x=x, xs=xs, z=z, gamma=gamma)

    def split(self, output: Tensor) -> tuple[Tensor, Tensor | None]:
        """A network output (batch, outputs * C, ...) -> (g (batch, K, C, ...), eta (batch, C, ...) or None)."""
        if output.shape[1] % self.outputs != 0:
            raise ValueError(
                f"expected a network output with a multiple of {self.outputs} channels (g_0..g_{self.num_marginals - 1}"
                f"{', eta' if self.has_denoiser else ''}), got shape {tuple(output.shape)}"
            )
        fields = output.unflatten(1, (self.outputs, output.shape[1] // self.outputs))
        if not self.has_denoiser:
            return fields, None
        return fields[:, : self.num_marginals], fields[:, self.num_marginals]

    def loss(self, output: Tensor, sample: MultimarginalSample) -> Tensor:
        """Per-sample loss (batch,): sum_k |g_k - x_k|^2 (+ |eta - z|^2), each a mean over the data dimensions."""
        g, eta = self.split(output)
        loss = sum(mean_square(g[:, k] - x_k) for k, x_k in enumerate(sample.xs))
        if eta is not None:
            loss = loss + mean_square(eta - sample.z)
        return loss

    def velocity(self, alpha: Tensor, alpha_rate: Tensor, g: Tensor, eta: Tensor | None) -> Tensor:
        """dx/ds = sum_k alpha_k' g_k + gamma' eta at alpha(s): alpha, alpha' (batch, K), g (batch, K, ...)."""
        weights = alpha_rate.to(g.dtype).reshape(*alpha_rate.shape, *([1] * (g.dim() - 2)))
        velocity = (weights * g).sum(dim=1)
        if eta is not None:
            _, gamma_rate, _ = self.gamma_rates(alpha, alpha_rate)
            velocity = velocity + broadcast_time(gamma_rate.to(eta.dtype), eta) * eta
        return velocity

    def score(self, alpha: Tensor, eta: Tensor) -> Tensor:
        """s(alpha, x) = -eta / gamma(alpha), (batch, ...); defined where gamma > 0 (off the vertices)."""
        if eta is None:
            raise ValueError(f"{self!r} has gamma = 0: x(alpha) has no Gaussian part and no score")
        return -eta / broadcast_time(self.gamma(alpha).to(eta.dtype), eta)


def multimarginal_loss(
    interpolant: MultimarginalInterpolant,
    network: SimplexNetwork,
    xs: Sequence[Tensor],
    alpha: Tensor,
    z: Tensor | None = None,
    check_alpha: bool = True,
) -> Tensor:
    """Per-sample loss (batch,) of ``network(x, alpha)`` at x(alpha) drawn from (xs, alpha, z)."""
    sample = interpolant.sample(xs, alpha, z, check_alpha=check_alpha)
    return interpolant.loss(network(sample.x, alpha), sample)
