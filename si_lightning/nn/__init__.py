"""Backbones: plain nn.Modules with forward(x, t, cond=None) -> prediction. No Lightning.

BACKBONES maps a name to its class for by-name choice through ``si_lightning.checks.lookup``.
"""

from si_lightning.nn.attention import SelfAttention
from si_lightning.nn.backbone import Backbone, count_parameters
from si_lightning.nn.dit import DIT_MODELS, DIT_PRESETS, DiT, DiTPreset
from si_lightning.nn.embeddings import (
    TIME_FEATURES,
    FourierTimeFeatures,
    LabelEmbedding,
    SimplexEmbedding,
    SinusoidalTimeFeatures,
    TimeEmbedding,
)
from si_lightning.nn.mlp import MLP
from si_lightning.nn.unet import UNet
from si_lightning.nn.zigma import ZIGMA_MODELS, ZIGMA_PRESETS, ZigMa, ZigMaPreset

BACKBONES: dict[str, type[Backbone]] = {"unet": UNet, "dit": DiT, "zigma": ZigMa, "mlp": MLP}

__all__ = [
    "BACKBONES",
    "DIT_MODELS",
    "DIT_PRESETS",
    "MLP",
    "TIME_FEATURES",
    "ZIGMA_MODELS",
    "ZIGMA_PRESETS",
    "Backbone",
    "DiT",
    "DiTPreset",
    "FourierTimeFeatures",
    "LabelEmbedding",
    "SelfAttention",
    "SimplexEmbedding",
    "SinusoidalTimeFeatures",
    "TimeEmbedding",
    "UNet",
    "ZigMa",
    "ZigMaPreset",
    "count_parameters",
]
