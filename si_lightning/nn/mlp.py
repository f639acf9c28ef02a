"""Multi-layer perceptron for vector data (batch, d), e.g. the 2-D toy distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from si_lightning.condition import Condition
from si_lightning.nn.backbone import Backbone
from si_lightning.nn.embeddings import LabelEmbedding, TimeEmbedding


class MLP(Backbone):
    """(x (batch, d), t (batch,), cond) -> (batch, out_channels).

    h_0 = W_in [x, channels] + e, h_{k+1} = W_k SiLU(h_k) + e for k < num_layers - 1, out = W_out SiLU(h),
    where e (batch, hidden_size) is the time embedding (plus the label embedding when num_classes > 0),
    added at every layer so the time dependence does not have to survive the depth. ``cond_channels``
    extra features (batch, cond_channels) are concatenated to x.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        cond_channels: int = 0,
        out_channels: int | None = None,
        hidden_size: int = 256,
        num_layers: int = 3,
        time_embedding: str = "sinusoidal",
        frequency_dim: int = 64,
    ) -> None:
        super().__init__(data_shape, num_classes, cond_channels, out_channels, rank=1, layout="(d,)")
        for argument, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MLP expects {argument} to be an int >= 1, got {value!r}")
        self.time_embedding = TimeEmbedding(hidden_size, frequency_dim=frequency_dim, kind=time_embedding)
        self.label_embedding = LabelEmbedding(num_classes, hidden_size) if num_classes > 0 else None
        self.input_layer = nn.Linear(self.data_channels + cond_channels, hidden_size)
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_layers - 1))
        self.output_layer = nn.Linear(hidden_size, self.out_channels)

    def forward(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        labels, channels = self.check_inputs(x, t, cond)
        if channels is not None:
            x = torch.cat([x, channels.to(x.dtype)], dim=1)
        embedding = self.time_embedding(t)
        if self.label_embedding is not None:
            embedding = embedding + self.label_embedding(labels)
        h = self.input_layer(x) + embedding
        for layer in self.hidden_layers:
            h = layer(F.silu(h)) + embedding
        return self.output_layer(F.silu(h))
