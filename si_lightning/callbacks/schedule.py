"""When an evaluation callback runs: every N optimiser steps, at the end of fit, and in ``validate``.

Evaluations run in ``on_train_batch_end`` after the step that made ``global_step`` a multiple of
N, so they see the EMA weights of that step; that requires the weight-averaging callback to come
before the evaluation callbacks in ``trainer.callbacks`` (checked in ``setup``). Checkpoint
callbacks run after every other callback (Lightning orders them last), so a ModelCheckpoint can
monitor a metric of the same step. A step is evaluated at most once (gradient accumulation calls
the hook several times per step; the end of fit often falls on a multiple of N). A standalone
``trainer.validate(model, ckpt_path=...)`` evaluates once, at the end of its validation epoch.
The last evaluated step is in the checkpoint, so a run stopped during an evaluation (a preemption
checkpoint of that step) runs the evaluation when it resumes.

Under ``fast_dev_run`` (a smoke test of the whole pipeline) each evaluation runs exactly once, at the
end of fit (or of validate), on at most ``FAST_DEV_RUN_SAMPLES`` samples: the attributes named in
``sample_counts`` are cut for the run and restored in ``teardown``, and one line says so.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from si_lightning.callbacks.ema import EMA
from si_lightning.checks import is_integer

FAST_DEV_RUN_SAMPLES = 8  # samples (and points) per evaluation under fast_dev_run


def check_every_n_steps(every_n_steps: int | None) -> int | None:
    """None (no periodic evaluation) or a positive int."""
    if every_n_steps is None:
        return None
    if not is_integer(every_n_steps) or every_n_steps < 1:
        raise ValueError(f"every_n_steps must be a positive integer or None; got {every_n_steps!r}")
    return every_n_steps


class PeriodicEvaluation(Callback, ABC):
    """Base of the evaluation callbacks: calls ``evaluate(trainer, pl_module)`` on schedule, on every rank.

    Args:
        every_n_steps: evaluate after every N-th optimiser step (None: never during training).
        at_end: evaluate when fit ends (unless the last step was just evaluated).
        on_validate: evaluate at the end of a standalone ``trainer.validate`` run.
    """

    # Attributes that count samples; fast_dev_run cuts each to at most FAST_DEV_RUN_SAMPLES.
    sample_counts: tuple[str, ...] = ("num_samples",)

    def __init__(self, every_n_steps: int | None, at_end: bool = True, on_validate: bool = True) -> None:
        super().__init__()
        self.every_n_steps = check_every_n_steps(every_n_steps)
        self.at_end, self.on_validate = bool(at_end), bool(on_validate)
        self.last_evaluated_step: int | None = None
        self.full_sample_counts: dict[str, int] = {}

    @abstractmethod
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One evaluation; every rank calls it at the same point (it may run collectives)."""

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Checks and one-off work before the first evaluation (every rank; collectives allowed)."""

    @staticmethod
    def sample_budget(trainer: pl.Trainer, count: int) -> int:
        """``count``, or at most ``FAST_DEV_RUN_SAMPLES`` under fast_dev_run."""
        return min(count, FAST_DEV_RUN_SAMPLES) if trainer.fast_dev_run else count

    def limit_for_dev_run(self, trainer: pl.Trainer, stage: str) -> None:
        """Under fast_dev_run: cut the ``sample_counts`` attributes (before ``prepare``) and say so."""
        if not trainer.fast_dev_run or self.full_sample_counts:
            return
        self.full_sample_counts = {name: getattr(self, name) for name in self.sample_counts if hasattr(self, name)}
        for name, count in self.full_sample_counts.items():
            setattr(self, name, self.sample_budget(trainer, count))
        when = "at the end of fit" if stage == "fit" else f"at the end of {stage}"
        counts = ", ".join(f"{name} {getattr(self, name)}" for name in self.full_sample_counts)
        rank_zero_info(f"fast_dev_run: {type(self).__name__} evaluates once, {when}, with {counts}")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for name, count in self.full_sample_counts.items():
            setattr(self, name, count)
        self.full_sample_counts = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" or (stage == "validate" and self.on_validate):
            self.limit_for_dev_run(trainer, stage)
        if stage == "fit":
            self.last_evaluated_step = None
            self.check_order(trainer)
        if stage == "fit" or (stage == "validate" and self.on_validate):
            self.prepare(trainer, pl_module, stage)

    def check_order(self, trainer: pl.Trainer) -> None:
        """The EMA update of a step must happen before this callback evaluates that step."""
        callbacks = list(trainer.callbacks)
        position = callbacks.index(self) if self in callbacks else -1
        following = callbacks[position + 1 :]
        later = [type(callback).__name__ for callback in following if isinstance(callback, (EMA, WeightAveraging))]
        if position >= 0 and later:
            raise ValueError(
                f"{type(self).__name__} comes before {', '.join(later)} in trainer.callbacks, so it would evaluate "
                "the averaged weights before their update; list the EMA callback first"
            )

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A standalone validate runs its hooks under inference mode, whose tensors cannot enter autograd (the
        # likelihood's divergence) or be updated in place later (metric states); evaluations run outside it.
        with torch.inference_mode(False):
            self.evaluate(trainer, pl_module)
        # Only a finished evaluation counts: one stopped by a preemption runs again when the run resumes.
        self.last_evaluated_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps is None or step == 0 or step % self.every_n_steps != 0 or trainer.fast_dev_run:
            return
        if step != self.last_evaluated_step:
            self._run(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A run resumed from a checkpoint written before that step's evaluation (a preemption) runs it now."""
        step = trainer.global_step
        due = self.every_n_steps is not None and step > 0 and step % self.every_n_steps == 0
        if due and trainer.ckpt_path is not None and self.last_evaluated_step != step:
            self._run(trainer, pl_module)

    @property
    def state_key(self) -> str:
        """Unique among callbacks of one class that differ in a setting (two FID callbacks with different N)."""
        settings = {
            name: value
            for name, value in sorted(vars(self).items())
            if isinstance(value, (bool, int, float, str, type(None))) and name != "last_evaluated_step"
        }
        samplers = getattr(self, "samplers", None)
        if isinstance(samplers, dict):
            settings["samplers"] = ",".join(sorted(samplers))
        return self._generate_state_key(**settings)

    def state_dict(self) -> dict[str, int | None]:
        return {"last_evaluated_step": self.last_evaluated_step}

    def load_state_dict(self, state_dict: dict[str, int | None]) -> None:
        self.last_evaluated_step = state_dict.get("last_evaluated_step")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (self.at_end or trainer.fast_dev_run) and trainer.global_step != self.last_evaluated_step:
            self._run(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.on_validate and trainer.state.fn == TrainerFn.VALIDATING and not trainer.sanity_checking:
            self._run(trainer, pl_module)
