"""Multi-head self-attention over tokens through torch's fused scaled_dot_product_attention."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """tokens (batch, n, dim) -> (batch, n, dim): softmax(q k^T / sqrt(dim / heads)) v per head, then a projection.

    Uses ``scaled_dot_product_attention``, which picks a flash or memory-efficient kernel on GPUs.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"attention width {dim} must be divisible by num_heads, got num_heads={num_heads!r}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.projection = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        query, key, value = rearrange(
            self.qkv(tokens), "batch n (three heads d) -> three batch heads n d", three=3, heads=self.num_heads
        )
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.projection(rearrange(attended, "batch heads n d -> batch n (heads d)"))
