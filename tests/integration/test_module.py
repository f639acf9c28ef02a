"""InterpolantModule with the real Trainer: every backbone and prediction, learning, save/load, EMA."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from si_lightning.callbacks import EMA
from si_lightning.data import DigitsDataModule, ToyDataModule
from si_lightning.interpolants import Interpolant
from si_lightning.module import InterpolantModule
from si_lightning.nn import MLP, DiT, UNet
from si_lightning.sampling import ODESampler, base_noise

PREDICTIONS = ["velocity", "velocity+denoiser", "score", "denoiser", "data"]


def trainer(**kwargs) -> pl.Trainer:
    settings = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    settings.update(kwargs)
    return pl.Trainer(**settings)


def image_backbone(name: str, outputs: int):
    shape = (1, 8, 8)
    if name == "unet":
        return UNet(
            data_shape=shape,
            out_channels=outputs,
            model_channels=16,
            channel_multipliers=(1, 2),
            num_res_blocks=1,
            norm_groups=8,
        )
    return DiT(data_shape=shape, out_channels=outputs, preset="S", patch_size=4)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("backbone", ["unet", pytest.param("dit", marks=pytest.mark.slow), "mlp"])
def test_fast_dev_run_every_backbone_and_prediction(backbone, prediction):
    outputs = 2 if prediction == "velocity+denoiser" else 1
    interpolant = Interpolant("linear", "brownian")
    if backbone == "mlp":
        network, data = MLP(data_shape=(2,), out_channels=2 * outputs, hidden_size=32), ToyDataModule(batch_size=16)
    else:
        network, data = image_backbone(backbone, outputs), DigitsDataModule(batch_size=16)
    model = InterpolantModule(backbone=network, interpolant=interpolant, prediction=prediction)
    before = [p.detach().clone() for p in model.parameters()]
    run = trainer(fast_dev_run=2)
    run.fit(model, datamodule=data)
    assert torch.isfinite(run.callback_metrics["train/loss"])
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    assert changed > 0  # the optimiser stepped
    # And the trained fields drive a sampler: a few Euler steps give finite samples of the data's shape.
    shape = data.data_shape
    x0 = base_noise(range(4), shape)
    out = ODESampler(method="euler", steps=4).sample(model.fields(ema=False), x0)
    assert out.x.shape == (4, *shape) and bool(torch.isfinite(out.x).all())


def mixture_mmd(a: torch.Tensor, b: torch.Tensor, bandwidth: float = 1.0) -> float:
    """Biased Gaussian-kernel MMD^2 between two point clouds (N, d)."""

    def kernel(x, y):
        return torch.exp(-torch.cdist(x, y).pow(2) / (2 * bandwidth**2)).mean()

    return float(kernel(a, a) + kernel(b, b) - 2 * kernel(a, b))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_learning_a_2d_mixture_matches_the_oracle():
    """2,000 steps: ODE samples' MMD < 1/5 of the base's, velocity MSE < 10% of the oracle's mean square."""
    torch.manual_seed(0)
    interpolant = Interpolant("linear", "zero")
    data = ToyDataModule(name="gaussian-mixture", batch_size=256, num_samples=32768)
    model = InterpolantModule(
        backbone=MLP(data_shape=(2,), hidden_size=128, num_layers=3),
        interpolant=interpolant,
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3),
        loss_bins=0,
    )
    trainer(max_steps=2000, limit_val_batches=0, callbacks=[EMA(decay=0.99)]).fit(model, datamodule=data)
    oracle = data.oracle(interpolant)
    generator = torch.Generator().manual_seed(1)
    real = oracle.sample_data(2000, generator).float()
    x0 = torch.randn(2000, 2, generator=generator)
    with torch.no_grad():
        samples = ODESampler(method="heun", steps=50).sample(model.fields(), x0).x
    base_mmd, model_mmd = mixture_mmd(x0, real), mixture_mmd(samples, real)
    assert model_mmd < base_mmd / 5, (model_mmd, base_mmd)
    # Velocity error at random (t, x_t) against the closed form.
    x1 = oracle.sample_data(4000, generator)
    t = torch.rand(4000, generator=generator, dtype=torch.float64)
    x_t = interpolant.sample(oracle.sample_base(4000, generator), x1, t).x_t
    exact = oracle.velocity(t, x_t)
    with torch.no_grad():
        learned = model.fields().velocity(t.float(), x_t.float()).double()
    relative = (learned - exact).pow(2).sum(-1).mean() / exact.pow(2).sum(-1).mean()
    assert relative < 0.10, float(relative)


@pytest.mark.timeout(120)
def test_save_load_gives_identical_outputs_and_ema_is_used(tmp_path):
    data = DigitsDataModule(batch_size=32)
    network = UNet(data_shape=(1, 8, 8), model_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, norm_groups=8)
    model = InterpolantModule(backbone=network, interpolant=Interpolant("linear"))
    ema = EMA(decay=0.9)
    run = trainer(max_steps=15, limit_val_batches=0, callbacks=[ema], enable_checkpointing=False)
    x, t = torch.randn(6, 1, 8, 8), torch.rand(6)

    # During training the average lives in the callback: fields() must use it, not the raw weights.
    seen = {}

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 10:
                with torch.no_grad():
                    seen["ema"] = pl_module.fields().velocity(t, x)
                    seen["raw"] = pl_module.fields(ema=False).velocity(t, x)
                    seen["average"] = ema.average(x, t)
                    seen["module"] = pl_module.backbone(x, t)

    run.callbacks.append(Probe())
    run.fit(model, datamodule=data)
    assert not torch.allclose(seen["ema"], seen["raw"])
    torch.testing.assert_close(seen["ema"], seen["average"], atol=0, rtol=0)
    torch.testing.assert_close(seen["raw"], seen["module"], atol=0, rtol=0)

    path = tmp_path / "model.ckpt"
    run.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert "current_model_state" in checkpoint  # raw weights kept apart from the average for resume
    model.eval()
    loaded = InterpolantModule.load_from_checkpoint(
        path,
        backbone=UNet(
            data_shape=(1, 8, 8), model_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, norm_groups=8
        ),
        interpolant=Interpolant("linear"),
    )
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), model(x, t), atol=0, rtol=0)


@pytest.mark.timeout(60)
def test_data_that_does_not_match_the_backbone_stops_at_setup():
    model = InterpolantModule(
        backbone=UNet(
            data_shape=(3, 8, 8), model_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, norm_groups=8
        )
    )
    with pytest.raises(ValueError, match=r"the data has shape \(1, 8, 8\).*backbone was built for \(3, 8, 8\)"):
        trainer(fast_dev_run=1).fit(model, datamodule=DigitsDataModule(batch_size=8))


def test_unknown_prediction_and_wrong_output_channels_are_named():
    backbone = MLP(data_shape=(2,))
    with pytest.raises(ValueError, match=r"unknown prediction 'velocty'; expected one of"):
        InterpolantModule(backbone=backbone, prediction="velocty")
    with pytest.raises(ValueError, match=r"'velocity\+denoiser' needs a backbone with out_channels = 4"):
        InterpolantModule(backbone=backbone, prediction="velocity+denoiser")


def test_negative_learning_rate_is_named():
    model = InterpolantModule(backbone=MLP(data_shape=(2,)), optimizer=lambda p: torch.optim.AdamW(p, lr=-1.0))
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1.0.*expected lr >= 0"):
        model.configure_optimizers()
