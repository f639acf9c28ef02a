"""fast_dev_run: each evaluation callback runs once, at the end, on at most FAST_DEV_RUN_SAMPLES samples."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from si_lightning.callbacks.schedule import FAST_DEV_RUN_SAMPLES, PeriodicEvaluation
from si_lightning.data import ToyDataModule
from si_lightning.module import InterpolantModule
from si_lightning.nn import MLP


class CountingEvaluation(PeriodicEvaluation):
    """Records the step and the sample count of every evaluation."""

    def __init__(self, num_samples: int, every_n_steps: int | None, at_end: bool) -> None:
        super().__init__(every_n_steps, at_end)
        self.num_samples = num_samples
        self.calls: list[tuple[int, int]] = []

    def evaluate(self, trainer, pl_module) -> None:
        self.calls.append((trainer.global_step, self.num_samples))


def fit(callbacks: list, **settings) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )
    module = InterpolantModule(backbone=MLP(data_shape=(2,), hidden_size=16, num_layers=2))
    trainer.fit(module, datamodule=ToyDataModule(num_samples=256, val_samples=32, batch_size=32))
    return trainer


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fast_dev_run", [True, 3])
def test_each_evaluation_runs_once_at_the_end_on_a_few_samples(fast_dev_run):
    periodic = CountingEvaluation(num_samples=500, every_n_steps=1, at_end=False)
    small = CountingEvaluation(num_samples=3, every_n_steps=None, at_end=True)
    trainer = fit([periodic, small], fast_dev_run=fast_dev_run)
    steps = 1 if fast_dev_run is True else fast_dev_run
    assert trainer.global_step == steps
    assert periodic.calls == [(steps, FAST_DEV_RUN_SAMPLES)]
    assert small.calls == [(steps, 3)]
    assert periodic.num_samples == 500  # restored for a later, full run


@pytest.mark.timeout(120)
def test_without_fast_dev_run_the_schedule_and_counts_are_untouched():
    periodic = CountingEvaluation(num_samples=500, every_n_steps=2, at_end=True)
    fit([periodic], max_steps=5, limit_val_batches=0)
    assert periodic.calls == [(2, 500), (4, 500), (5, 500)]
