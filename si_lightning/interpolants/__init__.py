"""Interpolants, their losses, time samplers and conversions: plain PyTorch, no Lightning."""

from si_lightning.interpolants.bridges import BRIDGES, Bridge, BridgeSpec
from si_lightning.interpolants.gamma import GAMMAS, Gamma
from si_lightning.interpolants.interpolant import (
    Coefficients,
    Interpolant,
    InterpolantSample,
    as_batch_time,
    broadcast_time,
)
from si_lightning.interpolants.losses import get_prediction, interpolant_loss
from si_lightning.interpolants.multimarginal import MultimarginalInterpolant, MultimarginalSample, multimarginal_loss
from si_lightning.interpolants.predictions import PREDICTIONS, Prediction, stack_fields
from si_lightning.interpolants.schedules import SCHEDULES, Schedule
from si_lightning.interpolants.simplex import (
    SIMPLEX_GAMMAS,
    SIMPLEX_SAMPLERS,
    EdgeSimplex,
    MixedSimplex,
    SimplexGamma,
    SimplexSampler,
    UniformSimplex,
)
from si_lightning.interpolants.simplex_paths import PATH_KINDS, ROUTES, EdgePath, InteriorPath, SimplexPath, route
from si_lightning.interpolants.time_samplers import TIME_SAMPLERS, LogitNormalTime, TimeSampler, UniformTime

__all__ = [
    "BRIDGES",
    "GAMMAS",
    "PREDICTIONS",
    "PATH_KINDS",
    "ROUTES",
    "SCHEDULES",
    "SIMPLEX_GAMMAS",
    "SIMPLEX_SAMPLERS",
    "TIME_SAMPLERS",
    "Bridge",
    "BridgeSpec",
    "Coefficients",
    "EdgePath",
    "EdgeSimplex",
    "Gamma",
    "Interpolant",
    "InteriorPath",
    "InterpolantSample",
    "LogitNormalTime",
    "MixedSimplex",
    "MultimarginalInterpolant",
    "MultimarginalSample",
    "Prediction",
    "Schedule",
    "SimplexGamma",
    "SimplexPath",
    "SimplexSampler",
    "TimeSampler",
    "UniformSimplex",
    "UniformTime",
    "as_batch_time",
    "broadcast_time",
    "get_prediction",
    "interpolant_loss",
    "multimarginal_loss",
    "route",
    "stack_fields",
]
