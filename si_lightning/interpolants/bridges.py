"""Diffusion bridges between a degraded image x0 and the clean x1 as interpolants (docs/math.md section 11).

One switch, ``Bridge(name)``, picks the bridge; each is an interpolant of this framework with a
data-dependent base (x0 is the degraded image, not noise):

| name  | schedule | gamma    | noise                           |
|-------|----------|----------|---------------------------------|
| rdbm  | goub     | goub     | gamma m z, m = 0 on untouched pixels (residual-modulated) |
| goub  | goub     | goub     | gamma z on every pixel          |
| bbdm  | linear   | brownian | gamma z on every pixel          |
| plain | linear   | zero     | none (the coupling's base noise only) |

The modulation m of ``rdbm`` is 1 - keep, with keep (``Condition.keep``) the pixels the coupling marks as
untouched by the degradation (x0 = x1 there): they get no noise and no velocity, so every sampler returns
them exactly as they were given.
"""

from __future__ import annotations

from typing import NamedTuple

from si_lightning.checks import lookup
from si_lightning.interpolants.interpolant import Interpolant


class BridgeSpec(NamedTuple):
    """A bridge's schedule, gamma family and whether its noise is modulated by the residual's support."""

    schedule: str
    gamma: str
    modulated: bool


BRIDGES: dict[str, BridgeSpec] = {
    "rdbm": BridgeSpec("goub", "goub", True),
    "goub": BridgeSpec("goub", "goub", False),
    "bbdm": BridgeSpec("linear", "brownian", False),
    "plain": BridgeSpec("linear", "zero", False),
}


class Bridge(Interpolant):
    """The bridge ``name`` of ``BRIDGES`` between a degraded x0 and the clean x1 (gaussian_base is False).

    Args:
        name: rdbm (residual-modulated generalized OU bridge), goub, bbdm (Brownian bridge) or plain
            (the linear interpolant with gamma = 0 of the repository's couplings).
        noise_scale: the scale a of the gamma family (gamma^2 = a t (1 - t) for bbdm; the same a for goub
            and rdbm, whose gamma^2 tends to it as the mean-reversion rate goes to 0). Unused by plain.
        endpoint_eps: as for ``Interpolant``.
        gaussian_base: must be False (x0 is the degraded image); present because the command line links
            it from the data's coupling, so a Gaussian coupling is refused here in one line.
    """

    def __init__(
        self, name: str = "rdbm", noise_scale: float = 0.25, endpoint_eps: float = 1e-3, gaussian_base: bool = False
    ) -> None:
        spec = lookup(BRIDGES, name, "bridge")
        if gaussian_base:
            raise ValueError(
                f"bridge {name!r} joins a degraded image x0 to the clean x1: expected a data-dependent coupling "
                "(gaussian_base false), got a Gaussian base"
            )
        super().__init__(
            schedule=spec.schedule,
            gamma=spec.gamma,
            gamma_scale=noise_scale,
            gaussian_base=False,
            endpoint_eps=endpoint_eps,
        )
        self.bridge_name = name
        self.modulated = spec.modulated

    def __repr__(self) -> str:
        return f"Bridge(name={self.bridge_name!r}, noise_scale={self.gamma_scale})"
