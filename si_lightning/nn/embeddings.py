"""Embeddings of the time t in [0, 1] and of class labels, shared by every backbone.

A raw time t (batch,) becomes a feature vector (batch, frequency_dim) by fixed sinusoids or random
Fourier features, then a small MLP maps it to the backbone's embedding width. Labels index a table of
``num_classes + 1`` rows; the last row is the null class of classifier-free guidance (docs/math.md section 6).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from si_lightning.checks import is_integer, lookup


def feature_dtype(t: Tensor) -> torch.dtype:
    """float64 for float64 t, float32 otherwise: time features are never computed in half precision."""
    return torch.promote_types(t.dtype, torch.float32)


class SinusoidalTimeFeatures(nn.Module):
    """Fixed sinusoids of the scaled time: [cos(s t w_k), sin(s t w_k)], w_k = max_period^(-k / half).

    t (batch,) in [0, 1] -> (batch, dim). The scale s = 1000 spreads t over the range the transformer
    sinusoids were designed for (integer steps 0..1000); without it every frequency but the highest
    would be nearly constant over [0, 1].
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2 != 0:
            raise ValueError(f"sinusoidal time features need an even dim >= 2, got {dim!r}")
        self.dim = dim
        self.scale = float(scale)
        self.max_period = float(max_period)

    def forward(self, t: Tensor) -> Tensor:
        # Frequencies are computed here, not stored: a buffer would follow model.to(torch.bfloat16), and
        # 1000 t in bfloat16 keeps only 8 significant bits. Angles are at least float32.
        dtype = feature_dtype(t)
        half = self.dim // 2
        frequencies = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
        angles = self.scale * t[:, None].to(dtype) * frequencies[None, :]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class FourierTimeFeatures(nn.Module):
    """Gaussian random Fourier features: [cos(2 pi t w_k), sin(2 pi t w_k)], w_k ~ N(0, scale^2), fixed.

    t (batch,) -> (batch, dim). The frequencies are drawn from a fixed seed, so two models built with the
    same arguments have the same features, and they are stored with the weights (a persistent buffer).
    """

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        if dim < 2 or dim % 2 != 0:
            raise ValueError(f"Fourier time features need an even dim >= 2, got {dim!r}")
        self.dim = dim
        # Drawn on the CPU with a private generator: construction never touches the global RNG and also
        # works inside `with torch.device("meta")`.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        frequencies = scale * torch.randn(dim // 2, generator=generator, device="cpu")
        self.register_buffer("frequencies", frequencies)

    def forward(self, t: Tensor) -> Tensor:
        dtype = feature_dtype(t)
        angles = 2.0 * math.pi * t[:, None].to(dtype) * self.frequencies[None, :].to(dtype)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


TIME_FEATURES: dict[str, type[nn.Module]] = {
    "sinusoidal": SinusoidalTimeFeatures,
    "fourier": FourierTimeFeatures,
}


class TimeEmbedding(nn.Module):
    """t (batch,) -> (batch, dim): fixed time features, then Linear -> SiLU -> Linear.

    ``kind`` is a key of TIME_FEATURES ("sinusoidal" or "fourier").
    """

    def __init__(self, dim: int, frequency_dim: int = 256, kind: str = "sinusoidal") -> None:
        super().__init__()
        self.features = lookup(TIME_FEATURES, kind, "time embedding")(frequency_dim)
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        features = self.features(t).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


class SimplexEmbedding(nn.Module):
    """alpha (batch, K) on the simplex -> (batch, dim): time features of each alpha_k, concatenated, then an MLP.

    The multimarginal backbones take this in the place of ``TimeEmbedding`` (docs/math.md section 12);
    each coordinate gets the same fixed features a time would, so a vertex e_k and the time t = 1 look alike.
    """

    def __init__(self, num_marginals: int, dim: int, frequency_dim: int = 256, kind: str = "sinusoidal") -> None:
        super().__init__()
        if not is_integer(num_marginals) or num_marginals < 2:
            raise ValueError(f"a simplex embedding needs num_marginals >= 2, got {num_marginals!r}")
        self.num_marginals = num_marginals
        self.features = lookup(TIME_FEATURES, kind, "time embedding")(frequency_dim)
        self.mlp = nn.Sequential(nn.Linear(num_marginals * frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, alpha: Tensor) -> Tensor:
        features = self.features(alpha.flatten())  # (batch * K, frequency_dim)
        features = features.reshape(alpha.shape[0], -1).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


class LabelEmbedding(nn.Module):
    """labels (batch,) int64 in [0, num_classes] -> (batch, dim); row num_classes is the null class."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor) -> Tensor:
        return self.table(labels)
