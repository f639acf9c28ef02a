"""Probabilistic forecasting of flows: the energy-consistent interpolant, roll-outs and their scores.

Plain PyTorch; the interpolants plug into ``InterpolantModule`` (they own their training loss) and the
``si-lightning forecast`` command rolls them out.
"""

from si_lightning.forecasting.interpolant import EnergyConsistentInterpolant, OneStepRegression
from si_lightning.forecasting.rollout import rollout
from si_lightning.forecasting.schedules import MonotoneSchedule
from si_lightning.forecasting.scores import SCALAR_SCORES, decorrelation_lead, forecast_scores

__all__ = [
    "SCALAR_SCORES",
    "EnergyConsistentInterpolant",
    "MonotoneSchedule",
    "OneStepRegression",
    "decorrelation_lead",
    "forecast_scores",
    "rollout",
]
