"""Physics for the turbulence forecasts: a pseudo-spectral Navier-Stokes solver and the Leray projection.

Plain PyTorch (no Lightning); states are velocity fields (batch, 2, H, W) on the periodic square
[0, 2 pi)^2, channel 0 the x-component u, channel 1 the y-component v, H rows along y, W columns along x.
"""

from si_lightning.physics.navier_stokes import KolmogorovFlow, taylor_green_vorticity
from si_lightning.physics.spectral import (
    divergence,
    enstrophy,
    kinetic_energy,
    leray_projection,
    projection_trace,
    velocity_from_vorticity,
    vorticity_from_velocity,
)

__all__ = [
    "KolmogorovFlow",
    "divergence",
    "enstrophy",
    "kinetic_energy",
    "leray_projection",
    "projection_trace",
    "taylor_green_vorticity",
    "velocity_from_vorticity",
    "vorticity_from_velocity",
]
