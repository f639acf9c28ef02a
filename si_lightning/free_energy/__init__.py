"""Free-energy differences of two Boltzmann densities with learned transports (docs/math.md section 10).

Plain PyTorch (no Lightning): ``estimate`` takes any ``Fields`` (a trained network or the oracle), two
energies in kT and samples of each density, and returns Delta F = F_b - F_a with its standard error and,
where defined, Jensen bounds, along the ODE (log-Jacobian works) or the SDE (Girsanov works).
``systems`` holds the benchmark pairs with their reference Delta F; ``head`` the learned energy interpolant.
"""

from si_lightning.free_energy.averages import (
    BAR_SOLVERS,
    Estimate,
    backward_estimate,
    bennett,
    exponential_average,
    forward_estimate,
    pymbar_bennett,
)
from si_lightning.free_energy.energies import CountedEnergy, Energy
from si_lightning.free_energy.estimate import METHODS, TRANSPORTS, FreeEnergyResult, estimate
from si_lightning.free_energy.girsanov import sde_works
from si_lightning.free_energy.head import EnergyInterpolantBackbone, EnergyInterpolantFields
from si_lightning.free_energy.learned import learned_thermodynamic_integration
from si_lightning.free_energy.thermodynamic import thermodynamic_integration
from si_lightning.free_energy.works import TransportWorks, transport_works

__all__ = [
    "BAR_SOLVERS",
    "METHODS",
    "TRANSPORTS",
    "CountedEnergy",
    "Energy",
    "EnergyInterpolantBackbone",
    "EnergyInterpolantFields",
    "Estimate",
    "FreeEnergyResult",
    "TransportWorks",
    "backward_estimate",
    "bennett",
    "estimate",
    "exponential_average",
    "forward_estimate",
    "learned_thermodynamic_integration",
    "pymbar_bennett",
    "sde_works",
    "thermodynamic_integration",
    "transport_works",
]
