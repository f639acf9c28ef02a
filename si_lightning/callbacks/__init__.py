"""Lightning callbacks: EMA weights, a non-finite guard, preemption, sampling grids, FID/KID, likelihood,
restoration metrics and forecast scores."""

from si_lightning.callbacks.classes import ClassAccuracyCallback
from si_lightning.callbacks.ema import EMA
from si_lightning.callbacks.fid import FIDCallback
from si_lightning.callbacks.forecast import ForecastCallback
from si_lightning.callbacks.generation import default_samplers
from si_lightning.callbacks.guard import NonFiniteGuard
from si_lightning.callbacks.likelihood import LIKELIHOOD_UNITS, LikelihoodCallback
from si_lightning.callbacks.preemption import Preemption
from si_lightning.callbacks.restoration import RestorationCallback
from si_lightning.callbacks.sampling import SamplingCallback
from si_lightning.callbacks.schedule import PeriodicEvaluation
from si_lightning.callbacks.tracking import RunTracking

__all__ = [
    "ClassAccuracyCallback",
    "EMA",
    "LIKELIHOOD_UNITS",
    "FIDCallback",
    "ForecastCallback",
    "LikelihoodCallback",
    "NonFiniteGuard",
    "PeriodicEvaluation",
    "Preemption",
    "RestorationCallback",
    "RunTracking",
    "SamplingCallback",
    "default_samplers",
]
