"""A module trained on a residual bridge: its loss reads the modulated targets, its samplers never move kept pixels."""

from __future__ import annotations

import pytest
import torch

from si_lightning.couplings import Rain
from si_lightning.interpolants import Bridge, interpolant_loss
from si_lightning.module import InterpolantModule
from si_lightning.nn import UNet
from si_lightning.sampling import ODESampler, SDESampler


def module(name: str, prediction: str = "velocity") -> InterpolantModule:
    torch.manual_seed(0)
    outputs = 2 if prediction == "velocity+denoiser" else 1
    backbone = UNet(
        data_shape=(1, 8, 8), out_channels=outputs, cond_channels=1, model_channels=16, channel_multipliers=(1, 2),
        num_res_blocks=1, attention_resolutions=(), norm_groups=8,
    )  # fmt: skip
    # Non-zero output weights: an untrained UNet starts at exactly 0, which would keep every pixel anyway.
    for parameter in backbone.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    return InterpolantModule(backbone, Bridge(name), prediction=prediction).eval()


def rainy_batch(count: int = 6):
    x1 = torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return Rain()(x1, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("prediction", ["velocity", "velocity+denoiser"])
def test_rdbm_samplers_return_kept_pixels_bit_for_bit_whatever_the_network(prediction):
    model, batch = module("rdbm", prediction), rainy_batch()
    keep = batch.cond.keep.bool().expand_as(batch.x0)
    samplers = [ODESampler(method="heun", steps=6)]
    if prediction == "velocity+denoiser":  # a score: the SDE runs too
        samplers.append(SDESampler(steps=8, diffusion="constant", scale=0.1, last_step_size=0.02))
    with torch.no_grad():
        for sampler in samplers:
            extra = {"generator": torch.Generator().manual_seed(3)} if isinstance(sampler, SDESampler) else {}
            restored = sampler.sample(model.fields(), batch.x0, batch.cond, **extra).x
            assert torch.equal(restored[keep], batch.x0[keep]), sampler
            assert (restored[~keep] - batch.x0[~keep]).abs().max() > 1e-3  # the streaks did move


def test_an_unmodulated_bridge_moves_kept_pixels_too():
    model, batch = module("goub"), rainy_batch()
    keep = batch.cond.keep.bool().expand_as(batch.x0)
    with torch.no_grad():
        restored = ODESampler(method="heun", steps=6).sample(model.fields(), batch.x0, batch.cond).x
    assert (restored[keep] - batch.x0[keep]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["rdbm", "goub"])
def test_the_training_loss_is_the_modulated_loss_for_rdbm_and_the_plain_one_otherwise(name):
    """rdbm: targets with m = 1 - keep and the velocity zero on kept pixels; goub: m = 1, nothing masked."""
    model, batch = module(name), rainy_batch()
    t = torch.linspace(0.1, 0.9, 6)
    z = torch.randn(batch.x0.shape, generator=torch.Generator().manual_seed(4))
    loss, _ = model.per_sample_loss(batch, noise=(t, z))
    keep = batch.cond.keep

    def network(x, s):
        output = model.backbone(x, s, batch.cond)
        return torch.where(keep.bool(), torch.zeros_like(output), output) if name == "rdbm" else output

    modulation = 1 - keep if name == "rdbm" else None
    expected = interpolant_loss(model.interpolant, "velocity", network, batch.x0, batch.x1, t, z, modulation=modulation)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_bridge_settings_are_checked():
    with pytest.raises(ValueError, match="expected a data-dependent coupling"):
        Bridge("rdbm", gaussian_base=True)
    with pytest.raises(ValueError, match="unknown bridge 'ddbm'; expected one of: bbdm, goub, plain, rdbm"):
        Bridge("ddbm")
    with pytest.raises(ValueError, match="gamma_scale must be a finite number > 0"):
        Bridge("bbdm", noise_scale=0.0)
