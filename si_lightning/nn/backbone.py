"""What every backbone shares: the constructor arguments linked from the datamodule and input checks.

A backbone maps (x_t, t, cond) to the prediction the module trains (docs/math.md section 2):
x (batch, *data_shape), t (batch,) in [0, 1], cond a Condition or None -> (batch, out_channels, ...).
Bad input stops where it enters, with a ValueError that names the value and the expectation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from si_lightning.checks import is_integer
from si_lightning.condition import Condition
from si_lightning.nn.embeddings import SimplexEmbedding, TimeEmbedding


class Backbone(nn.Module):
    """Base class: validates and stores data_shape, num_classes, cond_channels and out_channels.

    ``data_shape`` is (C, H, W) for images (``rank=3``) or (d,) for vectors (``rank=1``); the first entry
    is the data's channel count. ``num_classes = 0`` means unconditional; otherwise labels index
    ``num_classes + 1`` embedding rows, the last one the null class. ``cond_channels`` extra channels
    (batch, cond_channels, *data_shape[1:]) are concatenated to x. ``out_channels=None`` means the data's
    channel count (the "velocity+denoiser" prediction needs twice that).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int,
        cond_channels: int,
        out_channels: int | None,
        rank: int,
        layout: str,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        shape = tuple(data_shape)
        if len(shape) != rank or not all(isinstance(size, int) and size > 0 for size in shape):
            raise ValueError(f"{name} expects data_shape {layout} ({rank} positive ints), got {data_shape!r}")
        for argument, value in (("num_classes", num_classes), ("cond_channels", cond_channels)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} expects {argument} to be an int >= 0, got {value!r}")
        if out_channels is not None and (not isinstance(out_channels, int) or out_channels < 1):
            raise ValueError(f"{name} expects out_channels to be None or an int >= 1, got {out_channels!r}")
        self.data_shape: tuple[int, ...] = shape
        self.num_classes = num_classes
        self.cond_channels = cond_channels
        self.data_channels = shape[0]
        self.out_channels = shape[0] if out_channels is None else out_channels
        # K > 0: the backbone is conditioned on alpha (batch, K) on the simplex instead of t (batch,)
        # (the multimarginal interpolant, docs/math.md section 12); set by the subclasses that support it.
        self.num_marginals = 0

    def time_embedding_for(self, dim: int, frequency_dim: int, kind: str, num_marginals: int) -> nn.Module:
        """``TimeEmbedding`` of t, or with ``num_marginals`` = K >= 2 a ``SimplexEmbedding`` of alpha (batch, K)."""
        if not is_integer(num_marginals) or num_marginals < 0:
            raise ValueError(f"{type(self).__name__} expects num_marginals to be an int >= 0, got {num_marginals!r}")
        if num_marginals == 1:
            raise ValueError(f"{type(self).__name__} expects num_marginals 0 (time) or >= 2 (simplex), got 1")
        self.num_marginals = num_marginals
        if num_marginals == 0:
            return TimeEmbedding(dim, frequency_dim=frequency_dim, kind=kind)
        return SimplexEmbedding(num_marginals, dim, frequency_dim=frequency_dim, kind=kind)

    @property
    def null_label(self) -> int:
        """The label of the null class (classifier-free guidance's unconditional branch)."""
        return self.num_classes

    def check_inputs(self, x: Tensor, t: Tensor, cond: Condition | None) -> tuple[Tensor | None, Tensor | None]:
        """Validate (x, t, cond) against the constructor; return (labels (batch,) or None, channels or None).

        Missing labels on a class-conditional backbone (``cond`` None or ``cond.labels`` None) mean the null
        class: that is the unconditional branch of classifier-free guidance, which the null row was trained
        for by label dropout. Labels given to a backbone built with ``num_classes = 0`` are an error.
        """
        name = type(self).__name__
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"{name} expects x of shape (batch, {', '.join(map(str, self.data_shape))}) (data_shape), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"{name} expects floating-point x, got dtype {x.dtype}")
        batch = x.shape[0]
        expected = (batch,) if self.num_marginals == 0 else (batch, self.num_marginals)
        if t.shape != expected or not t.is_floating_point():
            what = "t" if self.num_marginals == 0 else "alpha (the simplex coordinates)"
            raise ValueError(
                f"{name} expects {what} to be a floating-point tensor of shape {expected}, "
                f"got shape {tuple(t.shape)} and dtype {t.dtype}"
            )
        if cond is not None and not isinstance(cond, Condition):
            raise ValueError(f"{name} expects cond to be a Condition or None, got {type(cond).__name__}")
        labels = None if cond is None else cond.labels
        channels = None if cond is None else cond.channels
        return self._check_labels(labels, batch, x.device), self._check_channels(channels, batch)

    def _check_labels(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        name = type(self).__name__
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError(f"{name} was built with num_classes=0 (unconditional) but received class labels")
            return None
        if labels is None:
            return torch.full((batch,), self.null_label, dtype=torch.long, device=device)
        if labels.shape != (batch,) or labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"{name} expects labels of shape ({batch},) and an integer dtype, "
                f"got shape {tuple(labels.shape)} and dtype {labels.dtype}"
            )
        # One device sync per call; skipped under torch.compile, where it would break the graph.
        if not torch.compiler.is_compiling() and bool(((labels < 0) | (labels > self.num_classes)).any()):
            bad = labels[(labels < 0) | (labels > self.num_classes)][0].item()
            raise ValueError(
                f"{name} expects labels in [0, {self.num_classes}] ({self.num_classes} = null class), got {bad}"
            )
        return labels.long()

    def _check_channels(self, channels: Tensor | None, batch: int) -> Tensor | None:
        name = type(self).__name__
        if self.cond_channels == 0:
            if channels is not None:
                raise ValueError(
                    f"{name} was built with cond_channels=0 but received conditioning channels of shape "
                    f"{tuple(channels.shape)}"
                )
            return None
        expected = (batch, self.cond_channels, *self.data_shape[1:])
        if channels is None:
            raise ValueError(f"{name} was built with cond_channels={self.cond_channels} but cond.channels is missing")
        if tuple(channels.shape) != expected:
            raise ValueError(
                f"{name} expects cond.channels of shape {expected} (cond_channels={self.cond_channels}), "
                f"got {tuple(channels.shape)}"
            )
        return channels


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (works on the meta device, where nothing is allocated)."""
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)
