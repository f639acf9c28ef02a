"""Lightning callbacks: EMA weights, sampling grids, FID/KID and likelihood."""

from si_lightning.callbacks.ema import EMA
from si_lightning.callbacks.tracking import RunTracking

__all__ = ["EMA", "RunTracking"]
