"""U-Net in the ADM / DDPM++ style: residual blocks with scale-shift time conditioning, self-attention at
chosen resolutions, strided-conv down-sampling, nearest + conv up-sampling, skip connections per block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from si_lightning.condition import Condition
from si_lightning.nn.attention import SelfAttention
from si_lightning.nn.backbone import Backbone
from si_lightning.nn.embeddings import LabelEmbedding


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter: a residual branch or output layer that starts as exactly nothing."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResidualBlock(nn.Module):
    """h = Conv(SiLU(GN(x))); h = GN(h) (1 + scale) + shift with (scale, shift) from the embedding;
    out = skip(x) + Conv(Dropout(SiLU(h))), the last conv zero-initialised so the block starts as skip(x).
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm_in = nn.GroupNorm(groups, in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding_projection = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm_out = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv_in(F.silu(self.norm_in(x)))
        scale, shift = rearrange(self.embedding_projection(F.silu(embedding)), "b c -> b c 1 1").chunk(2, dim=1)
        h = self.norm_out(h) * (1 + scale) + shift
        return self.skip(x) + self.conv_out(self.dropout(F.silu(h)))


class AttentionBlock(nn.Module):
    """x + Attention(GN(x)) over the H * W positions; the output projection starts at zero."""

    def __init__(self, channels: int, num_heads: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attention = SelfAttention(channels, num_heads)
        zero_module(self.attention.projection)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        return x + rearrange(self.attention(tokens), "b (h w) c -> b c h w", h=height, w=width)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.ModuleList):
    """Layers applied in order, each taking (x, embedding)."""

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, embedding)
        return x


class UNet(Backbone):
    """(x (batch, C, H, W), t (batch,), cond) -> (batch, out_channels, H, W).

    Level k (k = 0 .. len(channel_multipliers) - 1) works at resolution H / 2^k with
    ``model_channels * channel_multipliers[k]`` channels and ``num_res_blocks`` residual blocks (one more
    on the way up, ADM's layout). Self-attention follows every residual block at the resolutions (feature
    map heights) listed in ``attention_resolutions``, and always in the middle block. The embedding
    (time, plus label when ``num_classes > 0``) conditions every residual block by scale and shift.
    ``cond_channels`` extra channels are concatenated to x. The output conv is zero-initialised, so a
    fresh model outputs exactly zero. With ``num_marginals`` = K >= 2 the second input is alpha (batch, K)
    on the simplex instead of t (a multimarginal model, docs/math.md section 12).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        cond_channels: int = 0,
        out_channels: int | None = None,
        model_channels: int = 64,
        channel_multipliers: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (),
        num_heads: int = 4,
        dropout: float = 0.0,
        norm_groups: int = 32,
        time_embedding: str = "sinusoidal",
        num_marginals: int = 0,
    ) -> None:
        super().__init__(data_shape, num_classes, cond_channels, out_channels, rank=3, layout="(C, H, W)")
        multipliers = tuple(channel_multipliers)
        self._check_hyperparameters(
            model_channels, multipliers, num_res_blocks, attention_resolutions, num_heads, dropout, norm_groups
        )
        embedding_dim = 4 * model_channels
        self.time_embedding = self.time_embedding_for(embedding_dim, model_channels, time_embedding, num_marginals)
        self.label_embedding = LabelEmbedding(num_classes, embedding_dim) if num_classes > 0 else None

        def residual(cin: int, cout: int) -> ResidualBlock:
            return ResidualBlock(cin, cout, embedding_dim, norm_groups, dropout)

        def attention(channels: int) -> AttentionBlock:
            return AttentionBlock(channels, num_heads, norm_groups)

        attend = set(attention_resolutions)
        resolution = self.data_shape[1]
        channels = model_channels
        self.input_conv = nn.Conv2d(self.data_channels + cond_channels, channels, 3, padding=1)
        skip_channels = [channels]
        self.down = nn.ModuleList()
        for level, multiplier in enumerate(multipliers):
            for _ in range(num_res_blocks):
                stage = Stage([residual(channels, model_channels * multiplier)])
                channels = model_channels * multiplier
                if resolution in attend:
                    stage.append(attention(channels))
                self.down.append(stage)
                skip_channels.append(channels)
            if level < len(multipliers) - 1:
                self.down.append(Stage([Downsample(channels)]))
                skip_channels.append(channels)
                resolution //= 2

        self.middle = Stage([residual(channels, channels), attention(channels), residual(channels, channels)])

        self.up = nn.ModuleList()
        for level, multiplier in reversed(list(enumerate(multipliers))):
            for index in range(num_res_blocks + 1):
                stage = Stage([residual(channels + skip_channels.pop(), model_channels * multiplier)])
                channels = model_channels * multiplier
                if resolution in attend:
                    stage.append(attention(channels))
                if level > 0 and index == num_res_blocks:
                    stage.append(Upsample(channels))
                    resolution *= 2
                self.up.append(stage)

        self.output = nn.Sequential(
            nn.GroupNorm(norm_groups, channels),
            nn.SiLU(),
            zero_module(nn.Conv2d(channels, self.out_channels, 3, padding=1)),
        )

    def _check_hyperparameters(
        self,
        model_channels: int,
        multipliers: tuple[int, ...],
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        num_heads: int,
        dropout: float,
        norm_groups: int,
    ) -> None:
        if not multipliers or not all(isinstance(m, int) and m >= 1 for m in multipliers):
            raise ValueError(f"UNet expects channel_multipliers to be ints >= 1, got {multipliers!r}")
        for argument, value in (("model_channels", model_channels), ("num_res_blocks", num_res_blocks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UNet expects {argument} to be an int >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet expects dropout in [0, 1), got {dropout!r}")
        _, height, width = self.data_shape
        factor = 2 ** (len(multipliers) - 1)
        if height % factor != 0 or width % factor != 0:
            raise ValueError(
                f"UNet with {len(multipliers)} levels halves the image {len(multipliers) - 1} times, so height and "
                f"width must be divisible by {factor}; got data_shape {self.data_shape}"
            )
        resolutions = [height // 2**level for level in range(len(multipliers))]
        unused = sorted(set(attention_resolutions) - set(resolutions))
        if unused:
            raise ValueError(
                f"UNet attention_resolutions {list(attention_resolutions)} include {unused}, which no level has; "
                f"the feature-map heights are {resolutions}"
            )
        # Every width in the network (skip concatenations included) is a multiple of model_channels.
        if not isinstance(norm_groups, int) or norm_groups < 1 or model_channels % norm_groups != 0:
            raise ValueError(f"UNet norm_groups={norm_groups!r} must divide model_channels={model_channels}")
        for channels in sorted({model_channels * m for m in multipliers}):
            if channels % num_heads != 0:
                raise ValueError(f"UNet num_heads={num_heads} must divide every level's width, got {channels}")

    def forward(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        labels, channels = self.check_inputs(x, t, cond)
        if channels is not None:
            x = torch.cat([x, channels.to(x.dtype)], dim=1)
        embedding = self.time_embedding(t)
        if self.label_embedding is not None:
            embedding = embedding + self.label_embedding(labels)
        h = self.input_conv(x)
        skips = [h]
        for stage in self.down:
            h = stage(h, embedding)
            skips.append(h)
        h = self.middle(h, embedding)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), embedding)
        return self.output(h)
