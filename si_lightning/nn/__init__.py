"""Backbones: plain nn.Modules with forward(x, t, cond=None) -> prediction. No Lightning.

BACKBONES maps a name to its class for by-name choice through ``si_lightning.registry.lookup``.
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

BACKBONES: dict[str, type[Backbone]] = {"unet": UNet, "dit": DiT, "mlp": MLP}

__all__ = [
    "BACKBONES",
    "DIT_MODELS",
    "DIT_PRESETS",
    "MLP",
    "TIME_FEATURES",
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
    "count_parameters",
]
