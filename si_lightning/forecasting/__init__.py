"""Probabilistic forecasting of flows: the energy-consistent interpolant, roll-outs and their metrics.

Plain PyTorch; the interpolants plug into ``InterpolantModule`` (they own their training loss) and the
``si-lightning forecast`` command rolls them out.
"""

from si_lightning.forecasting.interpolant import EnergyConsistentInterpolant, OneStepRegression
from si_lightning.forecasting.rollout import rollout
from si_lightning.forecasting.schedules import MonotoneSchedule

__all__ = ["EnergyConsistentInterpolant", "MonotoneSchedule", "OneStepRegression", "rollout"]
