"""The EMA callback: the closed-form average of the recorded weights, what it copies, and its checkpoint."""

from __future__ import annotations

import math
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


def step_decay(m: int, decay: float, warmup: bool, exponent: float | None) -> float:
    """d(m), written out from the definition: warm-up min(decay, (1+m)/(10+m)), power (m/(m+1))^(g+1), or decay."""
    if exponent is not None:
        return (m / (m + 1)) ** (exponent + 1)
    return min(decay, (1 + m) / (10 + m)) if warmup else decay


def expected_average(
    history: list[torch.Tensor], decay: float, every: int, start: int, warmup: bool = False, exponent=None
) -> torch.Tensor:
    """Starts as the weights at step k0 = max(start, 1); at steps k0 + j n it lerps with the n steps' decays."""
    average, first, last = None, None, None
    for step, weights in enumerate(history, start=1):
        if step < max(start, 1):
            continue
        if average is None:
            average, first, last = weights.clone(), step, step
        elif (step - first) % every == 0:
            factor = 1.0
            for m in range(last - first + 1, step - first + 1):
                factor *= step_decay(m, decay, warmup, exponent)
            average = factor * average + (1 - factor) * weights
            last = step
    return average


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("every", "start", "settings"),
    [
        (1, 0, {"warmup": False}),
        (3, 4, {"warmup": False}),
        (1, 0, {"warmup": True}),
        (3, 5, {"warmup": True}),
        (2, 0, {"sigma_rel": 0.1}),
    ],
)
def test_average_equals_the_closed_form_of_the_recorded_weights(tmp_path, every, start, settings):
    torch.manual_seed(0)
    model, recorder = small_model(), RecordWeights()
    ema = EMA(decay=0.8, update_every_n_steps=every, update_starting_at_step=start, **settings)
    trainer = quiet_trainer(12, [ema, recorder], tmp_path)
    recorded = {}

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 12:
                recorded["average"] = torch.cat([p.flatten().clone() for p in ema.average.parameters()])

    trainer.callbacks.append(Probe())
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16))
    expected = expected_average(
        recorder.history, 0.8, every, start, warmup=settings.get("warmup", False), exponent=ema.exponent
    )
    torch.testing.assert_close(recorded["average"], expected, atol=1e-6, rtol=1e-6)
    # At the end of training the average is swapped into the network.
    final = torch.cat([p.detach().flatten() for p in model.backbone.parameters()])
    torch.testing.assert_close(final, expected, atol=1e-6, rtol=1e-6)


class ScalarNetwork(torch.nn.Module):
    """One parameter, so the average of a weight sequence is a number."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))


class ScalarModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = ScalarNetwork()


def initial_share(ema: EMA, steps: int) -> float:
    """The share of the first update's weights in the average after ``steps`` further steps, by running the
    callback on the weight sequence 1, 0, 0, ... (the average is then exactly that share)."""
    module = ScalarModule()
    ema.average = ScalarNetwork()
    with torch.no_grad():
        module.backbone.weight.fill_(1.0)
        ema.update(module, 1)
        module.backbone.weight.fill_(0.0)
        for step in range(2, steps + 2):
            if (step - 1) % ema.update_every_n_steps == 0:
                ema.update(module, step)
    return float(ema.average.weight.detach())


@pytest.mark.parametrize("steps", [1, 10, 100, 1000, 2000])
def test_the_initial_weights_share_follows_its_closed_form(steps):
    """Warm-up: prod_{m<=M} (1+m)/(10+m) = 10! (M+1)! / (M+10)! while below the decay; constant decay: decay^M;
    power function: (M+1)^-(g+1); each to float64 rounding (relative 1e-12)."""
    closed_warmup = math.exp(math.lgamma(11) + math.lgamma(steps + 2) - math.lgamma(steps + 11))
    assert initial_share(EMA(decay=0.999), steps) == pytest.approx(closed_warmup, rel=1e-12)
    assert initial_share(EMA(decay=0.999, warmup=False), steps) == pytest.approx(0.999**steps, rel=1e-12)
    power = EMA(sigma_rel=0.05)
    assert initial_share(power, steps) == pytest.approx((steps + 1) ** -(power.exponent + 1), rel=1e-12)
    assert initial_share(EMA(decay=0.999, update_every_n_steps=5), steps - steps % 5) == pytest.approx(
        math.exp(math.lgamma(11) + math.lgamma(steps - steps % 5 + 2) - math.lgamma(steps - steps % 5 + 11)),
        rel=1e-12,
    )
    # The share the issue measured for the old constant decay, against the warm-up's.
    if steps == 1000:
        assert 0.999**steps > 0.36 and closed_warmup < 1e-20


def test_warmup_reaches_the_decay_where_the_closed_form_says():
    """(1 + m) / (10 + m) < decay exactly when m < (10 decay - 1) / (1 - decay): 8990 steps for 0.999."""
    ema = EMA(decay=0.999)
    assert ema.step_decay(8989) < 0.999 and ema.step_decay(8991) == 0.999


def test_power_exponent_matches_edm2_widths():
    """g solves sigma_rel^2 = (g+1) / ((g+2)^2 (g+3)); EDM2's sigma_rel 0.05 and 0.10 give g = 16.97 and 6.94."""
    for sigma_rel in (0.05, 0.1, 0.2):
        g = EMA(sigma_rel=sigma_rel).exponent
        assert (g + 1) / ((g + 2) ** 2 * (g + 3)) == pytest.approx(sigma_rel**2, rel=1e-10)
    assert EMA(sigma_rel=0.05).exponent == pytest.approx(16.97, abs=0.01)
    assert EMA(sigma_rel=0.10).exponent == pytest.approx(6.94, abs=0.01)


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
    with pytest.raises(ValueError, match=r"EMA sigma_rel = 0.5: expected a number in \(0, 0.28\) or null"):
        EMA(sigma_rel=0.5)
    with pytest.raises(ValueError, match=r"EMA warmup = 'yes': expected true or false"):
        EMA(warmup="yes")
