"""The EMA callback: the closed-form average of the recorded weights, what it copies, and its checkpoint."""

from __future__ import annotations

import pickle

import lightning.pytorch as pl
import pytest
import torch

from si_lightning.callbacks import EMA
from si_lightning.data import DigitsDataModule
from si_lightning.interpolants import Interpolant
from si_lightning.module import InterpolantModule
from si_lightning.nn import UNet


def small_model() -> InterpolantModule:
    network = UNet(data_shape=(1, 8, 8), model_channels=8, channel_multipliers=(1,), num_res_blocks=1, norm_groups=4)
    return InterpolantModule(backbone=network, interpolant=Interpolant("linear"), loss_bins=0)


def quiet_trainer(steps: int, callbacks: list[pl.Callback], root) -> pl.Trainer:
    """A CPU Trainer for ``steps`` optimiser steps with ``callbacks`` and nothing else (no logs, no checkpoints)."""
    return pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=callbacks, default_root_dir=root,
    )  # fmt: skip


class RecordWeights(pl.Callback):
    """The network's flattened parameters after every optimiser step."""

    def __init__(self) -> None:
        self.history: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.history.append(torch.cat([p.detach().flatten().clone() for p in pl_module.backbone.parameters()]))


def expected_average(history: list[torch.Tensor], decay: float, every: int, start: int) -> torch.Tensor:
    """The average of MATH-free definition: starts as the weights at the first update, then lerps."""
    average = None
    for step, weights in enumerate(history, start=1):
        if step < max(start, 1):
            continue
        if average is None:
            average = weights.clone()
        elif (step - 1) % every == 0:
            average = decay**every * average + (1 - decay**every) * weights
    return average


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("every", "start"), [(1, 0), (3, 4)])
def test_average_equals_the_closed_form_of_the_recorded_weights(tmp_path, every, start):
    torch.manual_seed(0)
    model, recorder = small_model(), RecordWeights()
    ema = EMA(decay=0.8, update_every_n_steps=every, update_starting_at_step=start)
    trainer = quiet_trainer(12, [ema, recorder], tmp_path)
    recorded = {}

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 12:
                recorded["average"] = torch.cat([p.flatten().clone() for p in ema.average.parameters()])

    trainer.callbacks.append(Probe())
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16))
    expected = expected_average(recorder.history, 0.8, every, start)
    torch.testing.assert_close(recorded["average"], expected, atol=1e-6, rtol=1e-6)
    # At the end of training the average is swapped into the network.
    final = torch.cat([p.detach().flatten() for p in model.backbone.parameters()])
    torch.testing.assert_close(final, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.timeout(120)
def test_the_callback_copies_the_network_only(tmp_path):
    model = small_model()
    ema = EMA(decay=0.9)
    trainer = quiet_trainer(2, [ema], tmp_path)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16))
    assert type(ema.average) is type(model.backbone)
    copied = {id(tensor) for tensor in [*ema.average.parameters(), *ema.average.buffers()]}
    assert not copied & {id(tensor) for tensor in [*model.parameters(), *model.buffers()]}
    # The callback's own state pickles as the network and a few numbers (Lightning attaches the module's
    # ``log``/``log_dict`` to every callback during fit; those are Lightning's, not the average's).
    own = {name: value for name, value in vars(ema).items() if name not in ("log", "log_dict")}
    size, network_size = len(pickle.dumps(own)), len(pickle.dumps(model.backbone))
    assert size < network_size + 10_000, (size, network_size)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"EMA decay must be in \(0, 1\), got 1.5"):
        EMA(decay=1.5)
    with pytest.raises(ValueError, match=r"EMA update_every_n_steps must be an integer >= 1, got 0"):
        EMA(update_every_n_steps=0)
