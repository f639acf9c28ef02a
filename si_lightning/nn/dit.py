"""Diffusion transformer (DiT, Peebles & Xie 2023) as used by SiT: patchify, adaLN-Zero blocks, unpatchify.

Presets S/B/L/XL with patch sizes 2/4/8 are named like the papers: ``DiT.from_name("DiT-XL/2", ...)``.
Sizes at 256x256 (latent 4x32x32, 1000 classes): S/2 33M, B/2 130M, L/2 458M, XL/2 675M parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from si_lightning.checks import lookup
from si_lightning.condition import Condition
from si_lightning.nn.attention import SelfAttention
from si_lightning.nn.backbone import Backbone
from si_lightning.nn.embeddings import LabelEmbedding


@dataclass(frozen=True)
class DiTPreset:
    depth: int
    hidden_size: int
    num_heads: int


DIT_PRESETS: dict[str, DiTPreset] = {
    "S": DiTPreset(depth=12, hidden_size=384, num_heads=6),
    "B": DiTPreset(depth=12, hidden_size=768, num_heads=12),
    "L": DiTPreset(depth=24, hidden_size=1024, num_heads=16),
    "XL": DiTPreset(depth=28, hidden_size=1152, num_heads=16),
}

# "DiT-S/2" -> (preset, patch size): the twelve published configurations.
DIT_MODELS: dict[str, tuple[str, int]] = {
    f"DiT-{preset}/{patch}": (preset, patch) for preset in DIT_PRESETS for patch in (2, 4, 8)
}


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (batch, n, dim) * (1 + scale) + shift, with shift and scale (batch, dim) shared over tokens."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def sincos_position_embedding(dim: int, grid_height: int, grid_width: int) -> Tensor:
    """Fixed 2-D sin-cos embedding (MAE/DiT) -> (grid_height * grid_width, dim), tokens in row-major order.

    The first dim/2 features encode the column, the last dim/2 the row, each as [sin(p w_k), cos(p w_k)]
    with w_k = 10000^(-k / (dim/4)).
    """
    if dim % 4 != 0:
        raise ValueError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim!r}")
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, columns = torch.meshgrid(
        torch.arange(grid_height, dtype=torch.float64), torch.arange(grid_width, dtype=torch.float64), indexing="ij"
    )

    def encode(position: Tensor) -> Tensor:
        angles = position.reshape(-1, 1) * frequencies[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([encode(columns), encode(rows)], dim=1).float()


class DiTBlock(nn.Module):
    """x + gate * Attention(modulate(LN(x))), then x + gate * MLP(modulate(LN(x))); shift/scale/gate from c.

    adaLN-Zero: the modulation layer starts at zero, so every block starts as the identity.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attention = SelfAttention(hidden_size, num_heads)
        self.norm_mlp = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, hidden_size)
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c).chunk(6, dim=1)
        x = x + gate_a[:, None, :] * self.attention(modulate(self.norm_attention(x), shift_a, scale_a))
        return x + gate_m[:, None, :] * self.mlp(modulate(self.norm_mlp(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    """tokens (batch, n, hidden) -> (batch, n, patch * patch * out_channels), modulated by c."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class PatchTokens(Backbone):
    """What DiT and ZigMa share: patches in, the conditioning vector c, patches out.

    A subclass sets ``patch_size``, ``grid`` (tokens per side), ``patch_embedding`` (a strided conv),
    ``position_embedding`` (1, tokens, hidden), ``time_embedding`` and ``label_embedding`` (or None).
    """

    def tokens_and_conditioning(self, x: Tensor, t: Tensor, cond: Condition | None) -> tuple[Tensor, Tensor]:
        """(tokens (batch, h * w, hidden) with positions added, c (batch, hidden) = time + label embedding)."""
        labels, channels = self.check_inputs(x, t, cond)
        if channels is not None:
            x = torch.cat([x, channels.to(x.dtype)], dim=1)
        tokens = rearrange(self.patch_embedding(x), "batch hidden h w -> batch (h w) hidden")
        tokens = tokens + self.position_embedding.to(tokens.dtype)
        c = self.time_embedding(t)
        if self.label_embedding is not None:
            c = c + self.label_embedding(labels)
        return tokens, c

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """(batch, h * w, p * p * C) -> (batch, C, h * p, w * p); tokens in row-major patch order."""
        return rearrange(
            tokens,
            "batch (h w) (p q channels) -> batch channels (h p) (w q)",
            h=self.grid[0],
            w=self.grid[1],
            p=self.patch_size,
            q=self.patch_size,
        )


class DiT(PatchTokens):
    """Diffusion transformer: (x (batch, C, H, W), t (batch,), cond) -> (batch, out_channels, H, W).

    The input (with ``cond_channels`` extra channels concatenated) is cut into patch_size x patch_size
    patches, embedded with a fixed 2-D sin-cos position embedding, passed through ``depth`` adaLN-Zero
    blocks conditioned on c = time embedding + label embedding, and reassembled. The final layer is
    zero-initialised, so a fresh model outputs exactly zero.

    With ``num_marginals`` = K >= 2 the second input is alpha (batch, K) on the simplex instead of t
    (a multimarginal model, docs/math.md section 12).

    ``preset`` ("S", "B", "L", "XL") fixes depth, hidden_size and num_heads; any of the three given
    explicitly overrides the preset's value, and with ``preset=None`` all three are required.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        cond_channels: int = 0,
        out_channels: int | None = None,
        preset: str | None = "S",
        patch_size: int = 2,
        depth: int | None = None,
        hidden_size: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        time_embedding: str = "sinusoidal",
        num_marginals: int = 0,
    ) -> None:
        super().__init__(data_shape, num_classes, cond_channels, out_channels, rank=3, layout="(C, H, W)")
        depth, hidden_size, num_heads = self._resolve_sizes(preset, depth, hidden_size, num_heads)
        _, height, width = self.data_shape
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"DiT expects patch_size to be an int >= 1, got {patch_size!r}")
        if height % patch_size != 0 or width % patch_size != 0:
            raise ValueError(
                f"DiT patch_size={patch_size} must divide the image size, got height {height} and width {width} "
                f"(data_shape {self.data_shape})"
            )
        if hidden_size % num_heads != 0 or hidden_size % 4 != 0:
            raise ValueError(
                f"DiT hidden_size must be divisible by num_heads and by 4, got hidden_size={hidden_size}, "
                f"num_heads={num_heads}"
            )
        if not mlp_ratio > 0:
            raise ValueError(f"DiT expects mlp_ratio > 0, got {mlp_ratio!r}")
        self.patch_size = patch_size
        self.depth, self.hidden_size, self.num_heads = depth, hidden_size, num_heads
        self.grid = (height // patch_size, width // patch_size)

        in_channels = self.data_channels + cond_channels
        self.patch_embedding = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.register_buffer(
            "position_embedding", sincos_position_embedding(hidden_size, *self.grid)[None], persistent=False
        )
        self.time_embedding = self.time_embedding_for(hidden_size, 256, time_embedding, num_marginals)
        self.label_embedding = LabelEmbedding(num_classes, hidden_size) if num_classes > 0 else None
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    @staticmethod
    def _resolve_sizes(
        preset: str | None, depth: int | None, hidden_size: int | None, num_heads: int | None
    ) -> tuple[int, int, int]:
        explicit = {"depth": depth, "hidden_size": hidden_size, "num_heads": num_heads}
        if preset is not None:
            chosen = lookup(DIT_PRESETS, preset, "DiT preset")
            explicit = {key: getattr(chosen, key) if value is None else value for key, value in explicit.items()}
        missing = [key for key, value in explicit.items() if value is None]
        if missing:
            raise ValueError(f"DiT with preset=None needs depth, hidden_size and num_heads; missing {missing}")
        for key, value in explicit.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DiT expects {key} to be an int >= 1, got {value!r}")
        return explicit["depth"], explicit["hidden_size"], explicit["num_heads"]

    @classmethod
    def from_name(cls, name: str, **kwargs) -> DiT:
        """Build a published configuration by name, e.g. ``DiT.from_name("DiT-S/2", data_shape=(4, 32, 32))``."""
        preset, patch_size = lookup(DIT_MODELS, name, "DiT model")
        return cls(preset=preset, patch_size=patch_size, **kwargs)

    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linears, N(0, 0.02) embeddings, adaLN and output at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # The patch embedding is a linear map of the flattened patch.
        weight = self.patch_embedding.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embedding.bias)
        for layer in (self.time_embedding.mlp[0], self.time_embedding.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.label_embedding is not None:
            nn.init.normal_(self.label_embedding.table.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for layer in (self.final_layer.modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        tokens, c = self.tokens_and_conditioning(x, t, cond)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.unpatchify(self.final_layer(tokens, c))

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, hidden_size={self.hidden_size}, num_heads={self.num_heads}, "
            f"patch_size={self.patch_size}, grid={self.grid}"
        )
