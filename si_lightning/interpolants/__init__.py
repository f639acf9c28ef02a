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
from si_lightning.interpolants.predictions import PREDICTIONS, Prediction, stack_fields
from si_lightning.interpolants.schedules import SCHEDULES, Schedule
from si_lightning.interpolants.time_samplers import TIME_SAMPLERS, LogitNormalTime, TimeSampler, UniformTime

__all__ = [
    "BRIDGES",
    "GAMMAS",
    "PREDICTIONS",
    "SCHEDULES",
    "TIME_SAMPLERS",
    "Bridge",
    "BridgeSpec",
    "Coefficients",
    "Gamma",
    "Interpolant",
    "InterpolantSample",
    "LogitNormalTime",
    "Prediction",
    "Schedule",
    "TimeSampler",
    "UniformTime",
    "as_batch_time",
    "broadcast_time",
    "get_prediction",
    "interpolant_loss",
    "stack_fields",
]
