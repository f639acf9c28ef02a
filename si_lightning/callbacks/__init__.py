"""Lightning callbacks: EMA weights, sampling grids, FID/KID and likelihood."""

from si_lightning.callbacks.ema import EMA

__all__ = ["EMA"]
