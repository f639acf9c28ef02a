"""ZigMa (Hu et al. 2024): a DiT-style backbone whose blocks mix tokens with Mamba along zigzag paths.

Patchify, position embedding, time and label conditioning and the final layer are DiT's; each block's token
mixer is a Mamba (S6) layer instead of attention, so the cost grows linearly with the number of tokens.
Block i reads the tokens along zigzag path i mod 8 (si_lightning/nn/zigzag.py) and writes them back in
row-major order, so every layer sees spatial neighbours as sequence neighbours, along a different path,
at no parameter cost.

Presets S/B/L/XL keep DiT's widths with twice the depth: a Mamba block with adaLN (about 9 width^2
parameters) is half a DiT block (about 18 width^2), so a preset has about DiT's parameters: at 256x256
(latent 4x32x32, 1000 classes) S/2 34.7M, B/2 135.8M, L/2 475.6M, XL/2 700.2M (DiT: 33M, 130M, 458M, 675M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from si_lightning.checks import lookup
from si_lightning.condition import Condition
from si_lightning.nn.dit import FinalLayer, PatchTokens, modulate, sincos_position_embedding
from si_lightning.nn.embeddings import LabelEmbedding, TimeEmbedding
from si_lightning.nn.selective_scan import MAX_CHUNK_SIZE, selective_scan
from si_lightning.nn.zigzag import NUM_ZIGZAG_PATHS, zigzag_paths


@dataclass(frozen=True)
class ZigMaPreset:
    depth: int
    hidden_size: int


ZIGMA_PRESETS: dict[str, ZigMaPreset] = {
    "S": ZigMaPreset(depth=24, hidden_size=384),
    "B": ZigMaPreset(depth=24, hidden_size=768),
    "L": ZigMaPreset(depth=48, hidden_size=1024),
    "XL": ZigMaPreset(depth=56, hidden_size=1152),
}

# "ZigMa-S/2" -> (preset, patch size), named like DiT's twelve configurations.
ZIGMA_MODELS: dict[str, tuple[str, int]] = {
    f"ZigMa-{preset}/{patch}": (preset, patch) for preset in ZIGMA_PRESETS for patch in (2, 4, 8)
}


class Mamba(nn.Module):
    """Mamba's token mixer: tokens (batch, L, dim) -> (batch, L, dim), causal along L.

    in_proj splits into a branch x and a gate z (each ``expand * dim`` channels); x passes a causal
    depthwise convolution of ``conv_size`` taps and SiLU, then gives the input-dependent delta (through a
    rank-``dt_rank`` projection and softplus), B and C of the selective scan; the scan's output is gated by
    SiLU(z) and projected back. A = -exp(A_log) < 0 is diagonal per channel, D a per-channel skip.
    """

    def __init__(
        self, dim: int, state_size: int = 16, expand: int = 2, conv_size: int = 4, chunk_size: int = 32
    ) -> None:
        super().__init__()
        inner = expand * dim
        self.inner, self.state_size, self.chunk_size = inner, state_size, chunk_size
        self.dt_rank = math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        # Padding conv_size - 1 on both sides and keeping the first L outputs: token l sees l - k + 1 .. l.
        self.conv = nn.Conv1d(inner, inner, conv_size, groups=inner, padding=conv_size - 1)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * state_size, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, state_size + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.initialize_delta()

    def initialize_delta(self, delta_min: float = 1e-3, delta_max: float = 0.1) -> None:
        """Mamba's initialisation of the step: softplus(bias) log-uniform in [delta_min, delta_max]."""
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        with torch.no_grad():
            delta = torch.exp(
                torch.rand(self.inner) * (math.log(delta_max) - math.log(delta_min)) + math.log(delta_min)
            )
            self.dt_proj.bias.copy_(delta + torch.log(-torch.expm1(-delta)))  # the inverse of softplus

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        x, gate = self.in_proj(tokens).chunk(2, dim=-1)
        x = F.silu(self.conv(x.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.state_size, self.state_size], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log)
        y = selective_scan(x, delta, A, B, C, self.D, self.chunk_size)
        return self.out_proj(y * F.silu(gate))


class ZigMaBlock(nn.Module):
    """x + gate * unscan(Mamba(scan(modulate(LN(x))))), shift/scale/gate from c; adaLN-Zero (identity at start).

    With ``recompute`` (the default) and gradients on, the block keeps only its inputs for the backward pass,
    x (batch, n, hidden) and c, and runs its forward again there (activation checkpointing; inside, the
    selective scan recomputes chunk by chunk in turn). Without it a block holds about four (batch, n, hidden)
    and ten (batch, n, expand * hidden) activations until backward. The gradients are the same
    (tests/test_zigma.py); the cost is one more forward pass of the block.
    """

    def __init__(
        self, hidden_size: int, state_size: int, expand: int, conv_size: int, chunk_size: int, recompute: bool = True
    ) -> None:
        super().__init__()
        self.recompute = recompute
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mixer = Mamba(hidden_size, state_size, expand, conv_size, chunk_size)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size))

    def forward(self, x: Tensor, c: Tensor, path: Tensor, inverse: Tensor) -> Tensor:
        """x (batch, n, hidden) row-major, c (batch, hidden), path and inverse (n,) -> (batch, n, hidden)."""
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(self.update, x, c, path, inverse, use_reentrant=False, preserve_rng_state=False)
        return self.update(x, c, path, inverse)

    def update(self, x: Tensor, c: Tensor, path: Tensor, inverse: Tensor) -> Tensor:
        """The block itself (same arguments and shapes as ``forward``)."""
        shift, scale, gate = self.modulation(c).chunk(3, dim=1)
        scanned = modulate(self.norm(x), shift, scale).index_select(1, path)
        return x + gate[:, None, :] * self.mixer(scanned).index_select(1, inverse)


class ZigMa(PatchTokens):
    """Zigzag Mamba: (x (batch, C, H, W), t (batch,), cond) -> (batch, out_channels, H, W).

    As DiT: the input (with ``cond_channels`` extra channels concatenated) is cut into patch_size x
    patch_size patches with a fixed 2-D sin-cos position embedding, conditioned on c = time embedding +
    label embedding through adaLN-Zero, and reassembled by a zero-initialised final layer, so a fresh
    model outputs exactly zero. Block i scans the tokens along zigzag path i mod 8.

    ``preset`` ("S", "B", "L", "XL") fixes depth and hidden_size; either given explicitly overrides the
    preset's value, and with ``preset=None`` both are required. ``state_size`` (N), ``expand`` (E / width)
    and ``conv_size`` are Mamba's; ``chunk_size`` (at most 32) is the chunk of the plain-PyTorch scan: longer
    chunks take fewer sequential steps. ``recompute`` (default True) has each block keep only its input for
    backward and recompute the rest there (see ``ZigMaBlock``): less memory for one more forward pass.
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
        state_size: int = 16,
        expand: int = 2,
        conv_size: int = 4,
        chunk_size: int = 32,
        time_embedding: str = "sinusoidal",
        recompute: bool = True,
    ) -> None:
        super().__init__(data_shape, num_classes, cond_channels, out_channels, rank=3, layout="(C, H, W)")
        depth, hidden_size = self._resolve_sizes(preset, depth, hidden_size)
        _, height, width = self.data_shape
        for key, value in (
            ("patch_size", patch_size),
            ("state_size", state_size),
            ("expand", expand),
            ("conv_size", conv_size),
            ("chunk_size", chunk_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ZigMa expects {key} to be an int >= 1, got {value!r}")
        if not isinstance(recompute, bool):
            raise ValueError(f"ZigMa expects recompute to be a bool, got {recompute!r}")
        if chunk_size > MAX_CHUNK_SIZE:
            raise ValueError(
                f"ZigMa expects chunk_size <= {MAX_CHUNK_SIZE} (the scan's float64 range), got {chunk_size}"
            )
        if height % patch_size != 0 or width % patch_size != 0:
            raise ValueError(
                f"ZigMa patch_size={patch_size} must divide the image size, got height {height} and width {width} "
                f"(data_shape {self.data_shape})"
            )
        if hidden_size % 4 != 0:
            raise ValueError(f"ZigMa hidden_size must be divisible by 4, got hidden_size={hidden_size}")
        self.patch_size = patch_size
        self.depth, self.hidden_size = depth, hidden_size
        self.grid = (height // patch_size, width // patch_size)

        in_channels = self.data_channels + cond_channels
        self.patch_embedding = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.register_buffer(
            "position_embedding", sincos_position_embedding(hidden_size, *self.grid)[None], persistent=False
        )
        paths, inverses = zigzag_paths(*self.grid)
        # Derived from the grid, never learned: kept out of checkpoints.
        self.register_buffer("paths", paths, persistent=False)
        self.register_buffer("inverse_paths", inverses, persistent=False)
        self.time_embedding = TimeEmbedding(hidden_size, frequency_dim=256, kind=time_embedding)
        self.label_embedding = LabelEmbedding(num_classes, hidden_size) if num_classes > 0 else None
        self.blocks = nn.ModuleList(
            ZigMaBlock(hidden_size, state_size, expand, conv_size, chunk_size, recompute) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    @staticmethod
    def _resolve_sizes(preset: str | None, depth: int | None, hidden_size: int | None) -> tuple[int, int]:
        explicit = {"depth": depth, "hidden_size": hidden_size}
        if preset is not None:
            chosen = lookup(ZIGMA_PRESETS, preset, "ZigMa preset")
            explicit = {key: getattr(chosen, key) if value is None else value for key, value in explicit.items()}
        missing = [key for key, value in explicit.items() if value is None]
        if missing:
            raise ValueError(f"ZigMa with preset=None needs depth and hidden_size; missing {missing}")
        for key, value in explicit.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ZigMa expects {key} to be an int >= 1, got {value!r}")
        return explicit["depth"], explicit["hidden_size"]

    @classmethod
    def from_name(cls, name: str, **kwargs) -> ZigMa:
        """Build a configuration by name, e.g. ``ZigMa.from_name("ZigMa-S/2", data_shape=(4, 32, 32))``."""
        preset, patch_size = lookup(ZIGMA_MODELS, name, "ZigMa model")
        return cls(preset=preset, patch_size=patch_size, **kwargs)

    def initialize_weights(self) -> None:
        """DiT's initialisation (Xavier linears, adaLN and output at zero) with Mamba's for the step delta."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        weight = self.patch_embedding.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embedding.bias)
        for layer in (self.time_embedding.mlp[0], self.time_embedding.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.label_embedding is not None:
            nn.init.normal_(self.label_embedding.table.weight, std=0.02)
        for block in self.blocks:
            block.mixer.initialize_delta()
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for layer in (self.final_layer.modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        tokens, c = self.tokens_and_conditioning(x, t, cond)
        for index, block in enumerate(self.blocks):
            path = index % NUM_ZIGZAG_PATHS
            tokens = block(tokens, c, self.paths[path], self.inverse_paths[path])
        return self.unpatchify(self.final_layer(tokens, c))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, hidden_size={self.hidden_size}, patch_size={self.patch_size}, grid={self.grid}"
