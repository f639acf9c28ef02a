"""Class labels as a condition, with label drop for classifier-free guidance (docs/math.md section 6)."""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.checks import is_integer
from si_lightning.condition import Condition
from si_lightning.couplings.base import Batch, Coupling, IndependentCoupling


class ClassLabels(Coupling):
    """Class labels as ``cond.labels`` on top of an inner coupling; labels dropped for classifier-free guidance.

    Each label is replaced by the null label ``num_classes`` independently with ``drop_probability``
    (docs/math.md section 6, Couplings), so one network learns b(t, x | label) and b(t, x | null). The inner coupling
    receives the true labels (``MinibatchOT`` pairs within a class with them).

    Args:
        drop_probability: the probability p in [0, 1] of dropping a label during training.
        num_classes: the number of classes K (labels in 0..K-1; K is the null label).
        inner: the coupling that draws x0 (IndependentCoupling by default).
    """

    def __init__(self, drop_probability: float = 0.1, num_classes: int = 10, inner: Coupling | None = None) -> None:
        if not 0.0 <= drop_probability <= 1.0:
            raise ValueError(f"label drop_probability must be in [0, 1], got {drop_probability!r}")
        if not is_integer(num_classes) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if isinstance(inner, ClassLabels):
            raise ValueError("ClassLabels cannot wrap another ClassLabels coupling; give one label source")
        self.drop_probability, self.num_classes = float(drop_probability), num_classes
        self.inner = IndependentCoupling() if inner is None else inner

    @property
    def gaussian_base(self) -> bool:  # type: ignore[override]
        return self.inner.gaussian_base

    @property
    def supports_guidance(self) -> bool:
        """Guidance needs the unconditional field: a model trained with labels dropped some of the time."""
        return self.drop_probability > 0.0

    def cond_channels(self, data_channels: int) -> int:
        return self.inner.cond_channels(data_channels)

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        self.inner.check_shape(data_shape)

    def evaluation_coupling(self) -> Coupling:
        """The inner coupling's evaluation form, with every label kept (no drop)."""
        return ClassLabels(0.0, self.num_classes, self.inner.evaluation_coupling())

    def degraded(self, batch: Batch) -> Tensor:
        return self.inner.degraded(batch)

    def base_log_prob(self, x0: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        return self.inner.base_log_prob(x0, cond)

    def drop(self, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        """labels (batch,) with each entry replaced by the null label num_classes with probability p."""
        if self.drop_probability == 0.0:
            return labels
        uniform = torch.rand(labels.shape, generator=generator, device=labels.device)
        return torch.where(uniform < self.drop_probability, torch.full_like(labels, self.num_classes), labels)

    def couple(
        self,
        x1: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        if labels is None:
            raise ValueError("ClassLabels needs labels, got None (is the data set labelled?)")
        # The range of the labels is checked once where the data enters (the datamodule), not here:
        # a per-batch check would synchronise the device with the host at every step.
        labels = labels.long()
        extra = {} if noise_generator is None else {"noise_generator": noise_generator}
        inner = self.inner.couple(x1, labels, generator, **extra)
        return Batch(inner.x0, inner.x1, inner.cond.with_labels(self.drop(labels, generator)))
