"""NonFiniteGuard and the finite-checkpoint check with the real Trainer, faults injected at a known step."""

from __future__ import annotations

import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from si_lightning.callbacks import EMA, NonFiniteGuard
from si_lightning.data import ToyDataModule
from si_lightning.errors import TrainingDiverged
from si_lightning.module import InterpolantModule
from si_lightning.nn import MLP

FAULT_STEP = 3
LINE = re.compile(
    r"^non-finite (?P<what>loss|gradient of \S+) at global step (?P<step>\d+) "
    r"\(batch (?P<batch>\d+), t in \[(?P<low>[\d.]+), (?P<high>[\d.]+)\]\); the last finite checkpoint is (?P<last>.+)$"
)


class PoisonBatch(Callback):
    """A NaN in the data of the batch at ``step`` (a corrupted record)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch.x1[0, 0] = float("nan")


class PoisonGradient(Callback):
    """An infinite gradient entry at ``step``, the loss staying finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            pl_module.backbone.hidden_layers[0].weight.grad[0, 0] = float("inf")


class PoisonWeights(Callback):
    """A NaN in the raw weights after the optimizer step of ``step`` (before that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step + 1:
            with torch.no_grad():
                pl_module.backbone.output_layer.bias[0] = float("nan")


class RecordWeights(Callback):
    """The weights and the optimizer's moments before every optimizer step."""

    def __init__(self) -> None:
        self.before: dict[int, list[torch.Tensor]] = {}
        self.moments: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before[trainer.global_step] = [p.detach().clone() for p in pl_module.parameters()]
        state = trainer.optimizers[0].state
        self.moments[trainer.global_step] = [
            state[p]["exp_avg"].clone() for p in pl_module.parameters() if "exp_avg" in state[p]
        ]


def model() -> InterpolantModule:
    return InterpolantModule(backbone=MLP(data_shape=(2,), hidden_size=16, num_layers=2))


def trainer(tmp_path: Path, callbacks: list[Callback], max_steps: int = 6) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=any(isinstance(callback, ModelCheckpoint) for callback in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        gradient_clip_val=1.0,  # clipping by norm runs after the guard and would turn an inf into NaNs
    )


def data() -> ToyDataModule:
    return ToyDataModule(num_samples=512, val_samples=64, batch_size=32)


@pytest.mark.timeout(120)
def test_nan_loss_stops_at_its_step_naming_batch_and_t_range(tmp_path):
    module, record = model(), RecordWeights()
    run = trainer(tmp_path, [record, PoisonBatch(FAULT_STEP), NonFiniteGuard()])
    with pytest.raises(TrainingDiverged) as caught:
        run.fit(module, datamodule=data())
    match = LINE.match(str(caught.value))
    assert match is not None, str(caught.value)
    assert match["what"] == "loss"
    assert int(match["step"]) == FAULT_STEP == run.global_step
    assert int(match["batch"]) == FAULT_STEP  # one epoch holds 16 batches
    _, t, _ = module.last_training_step
    assert float(match["low"]) == pytest.approx(float(t.min()), abs=5e-4)
    assert float(match["high"]) == pytest.approx(float(t.max()), abs=5e-4)
    assert match["last"] == "none"
    # No optimizer step was taken with the NaN: the weights are those before the poisoned step.
    for before, after in zip(record.before[FAULT_STEP], module.parameters(), strict=True):
        assert torch.equal(before, after.detach())


@pytest.mark.timeout(120)
def test_infinite_gradient_with_finite_loss_names_the_parameter(tmp_path):
    module = model()
    run = trainer(tmp_path, [PoisonGradient(FAULT_STEP), NonFiniteGuard()])
    with pytest.raises(TrainingDiverged) as caught:
        run.fit(module, datamodule=data())
    match = LINE.match(str(caught.value))
    assert match is not None, str(caught.value)
    assert match["what"] == "gradient of backbone.hidden_layers.0.weight"
    assert int(match["step"]) == FAULT_STEP
    assert all(torch.isfinite(parameter).all() for parameter in module.parameters())


@pytest.mark.timeout(120)
def test_skip_leaves_weights_and_moments_of_the_bad_step_unchanged(tmp_path):
    module, record, guard = model(), RecordWeights(), NonFiniteGuard(action="skip")
    run = trainer(tmp_path, [record, PoisonBatch(FAULT_STEP), guard], max_steps=6)
    with pytest.warns(UserWarning, match=rf"non-finite loss at global step {FAULT_STEP} .*the step was skipped"):
        run.fit(module, datamodule=data())
    assert run.global_step == 6 and guard.skipped_steps == 1
    for before, after in zip(record.before[FAULT_STEP], record.before[FAULT_STEP + 1], strict=True):
        assert torch.equal(before, after)
    for before, after in zip(record.moments[FAULT_STEP], record.moments[FAULT_STEP + 1], strict=True):
        assert torch.equal(before, after)
    # The steps around it did train.
    assert not all(torch.equal(a, b) for a, b in zip(record.before[1], record.before[2], strict=True))
    assert all(torch.isfinite(parameter).all() for parameter in module.parameters())


@pytest.mark.timeout(120)
def test_checkpoint_with_nonfinite_weights_is_refused_and_the_last_finite_one_kept(tmp_path):
    directory = tmp_path / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=directory, every_n_train_steps=1, save_top_k=1, save_last=True)
    module = model()
    # EMA first: its average is updated before the raw weights are poisoned, so only the raw weights
    # ("current_model_state") hold the NaN.
    run = trainer(tmp_path, [EMA(decay=0.9), PoisonWeights(FAULT_STEP), NonFiniteGuard(), checkpoint])
    with pytest.raises(TrainingDiverged) as caught:
        run.fit(module, datamodule=data())
    message = str(caught.value)
    assert message.startswith(
        f"non-finite weights at global step {FAULT_STEP + 1} (current_model_state.backbone.output_layer.bias)"
    )
    kept = sorted(path.name for path in directory.iterdir())
    assert kept == [f"epoch=0-step={FAULT_STEP}.ckpt", "last.ckpt"]  # save_top_k=1 did not delete step 3
    assert message.endswith(f"the last finite checkpoint is {directory / kept[0]}") or message.endswith(
        f"the last finite checkpoint is {directory / 'last.ckpt'}"
    )
    for name in kept:
        saved = torch.load(directory / name, weights_only=True)
        assert saved["global_step"] == FAULT_STEP
        for entry in ("state_dict", "current_model_state"):
            assert all(torch.isfinite(value).all() for value in saved[entry].values() if value.is_floating_point())


class RecordTimes(Callback):
    """The t of every training batch, by global step."""

    def __init__(self) -> None:
        self.t: dict[int, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.t[trainer.global_step] = pl_module.last_training_step[1].detach().clone()


@pytest.mark.timeout(120)
def test_deferred_check_stops_one_step_late_naming_the_bad_step(tmp_path):
    """No host sync in the step: the flags of step k are read at step k + 1, the line still names step k."""
    module, times = model(), RecordTimes()
    run = trainer(tmp_path, [times, PoisonBatch(FAULT_STEP), NonFiniteGuard(check="deferred")])
    with pytest.raises(TrainingDiverged) as caught:
        run.fit(module, datamodule=data())
    match = LINE.match(str(caught.value))
    assert match is not None, str(caught.value)
    assert match["what"] == "loss" and int(match["step"]) == FAULT_STEP == int(match["batch"])
    assert run.global_step == FAULT_STEP + 1  # the bad step was taken; the next one was stopped before its update
    assert float(match["low"]) == pytest.approx(float(times.t[FAULT_STEP].min()), abs=5e-4)
    assert float(match["high"]) == pytest.approx(float(times.t[FAULT_STEP].max()), abs=5e-4)


@pytest.mark.timeout(120)
def test_deferred_check_names_the_gradient_and_catches_the_last_step(tmp_path):
    """A bad last step is read at the end of training; the parameter is named as the immediate check does."""
    module = model()
    run = trainer(tmp_path, [PoisonGradient(FAULT_STEP), NonFiniteGuard(check="deferred")], max_steps=FAULT_STEP + 1)
    with pytest.raises(TrainingDiverged) as caught:
        run.fit(module, datamodule=data())
    match = LINE.match(str(caught.value))
    assert match is not None, str(caught.value)
    assert match["what"] == "gradient of backbone.hidden_layers.0.weight"
    assert int(match["step"]) == FAULT_STEP


@pytest.mark.timeout(120)
def test_deferred_check_writes_no_checkpoint_after_the_bad_step(tmp_path):
    directory = tmp_path / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=directory, every_n_train_steps=1, save_top_k=-1)
    run = trainer(tmp_path, [PoisonGradient(FAULT_STEP), NonFiniteGuard(check="deferred"), checkpoint])
    with pytest.raises(TrainingDiverged, match=f"non-finite gradient of .* at global step {FAULT_STEP} "):
        run.fit(model(), datamodule=data())
    steps = sorted(int(path.stem.split("step=")[1]) for path in directory.iterdir())
    assert steps == list(range(1, FAULT_STEP + 1))  # the checkpoint after the bad update was refused
