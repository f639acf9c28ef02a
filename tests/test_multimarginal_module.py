"""The multimarginal datamodule, backbones conditioned on alpha, and the module the model section builds."""

from __future__ import annotations

import pytest
import torch

from si_lightning.data import DigitsDataModule, MultimarginalBatch, MultimarginalDataModule
from si_lightning.interpolants import MultimarginalInterpolant
from si_lightning.module import InterpolantModule
from si_lightning.multimarginal_module import MultimarginalModule
from si_lightning.nn import DiT, UNet


def small_unet(num_marginals: int = 4, out_channels: int = 5) -> UNet:
    return UNet(
        (1, 8, 8), out_channels=out_channels, model_channels=16, channel_multipliers=(1, 2), num_res_blocks=1,
        norm_groups=8, num_marginals=num_marginals,
    )  # fmt: skip


def test_marginals_are_transforms_of_distinct_images_and_noise():
    datamodule = MultimarginalDataModule(DigitsDataModule(image_size=8), batch_size=16)
    datamodule.setup()
    raw = next(iter(datamodule.val_dataloader()))
    batch = datamodule.on_after_batch_transfer(raw)
    assert isinstance(batch, MultimarginalBatch) and len(batch.xs) == 4
    images = raw[0] if raw[0].is_floating_point() else raw[0].float() / 127.5 - 1
    noise, upright, rotated, inverted = batch.xs
    torch.testing.assert_close(upright, torch.roll(images, 1, dims=0), atol=0, rtol=0)
    torch.testing.assert_close(datamodule.inverse(2, rotated), torch.roll(images, 2, dims=0), atol=0, rtol=0)
    torch.testing.assert_close(datamodule.inverse(3, inverted), torch.roll(images, 3, dims=0), atol=0, rtol=0)
    # Each row pairs different images: the marginals are drawn independently of each other.
    assert not torch.equal(datamodule.inverse(2, rotated), upright)
    # rot90 is a rotation, not a transpose or a flip.
    torch.testing.assert_close(rotated[:, 0, 0, 0], torch.roll(images, 2, dims=0)[:, 0, 0, -1], atol=0, rtol=0)
    assert noise.shape == (16, 1, 8, 8) and abs(noise.std().item() - 1) < 0.2  # 1024 N(0, 1) draws: se 0.022
    assert datamodule.num_marginals == 4 and datamodule.gaussian_base


@pytest.mark.parametrize(
    ("marginals", "message"),
    [
        (["gaussian"], "at least 2 marginals"),
        (["identity", "gaussian"], "'gaussian' may only be the first"),
        (["gaussian", "rotate45"], "unknown marginal transform 'rotate45'"),
    ],
)
def test_bad_marginals_are_refused(marginals, message):
    with pytest.raises(ValueError, match=message):
        MultimarginalDataModule(DigitsDataModule(), marginals=marginals)


def test_backbones_take_alpha_instead_of_t():
    alpha = torch.distributions.Dirichlet(torch.ones(4)).sample((3,))
    x = torch.randn(3, 1, 8, 8)
    dit = DiT((1, 8, 8), out_channels=5, preset=None, depth=1, hidden_size=32, num_heads=4, num_marginals=4)
    for backbone in (small_unet(), dit):
        assert backbone(x, alpha).shape == (3, 5, 8, 8)
        with pytest.raises(ValueError, match=r"alpha \(the simplex coordinates\).*shape \(3, 4\)"):
            backbone(x, torch.rand(3))
    with pytest.raises(ValueError, match="num_marginals 0 \\(time\\) or >= 2"):
        small_unet(num_marginals=1)


def test_the_model_section_builds_a_multimarginal_module_and_checks_the_backbone():
    interpolant = MultimarginalInterpolant(4, gamma="brownian")
    module = InterpolantModule(backbone=small_unet(), interpolant=interpolant)
    assert type(module) is MultimarginalModule
    assert type(InterpolantModule(backbone=small_unet(0, None))) is InterpolantModule
    with pytest.raises(ValueError, match=r"out_channels = 5 \(5 x 1 data channels\), got out_channels = 4"):
        InterpolantModule(backbone=small_unet(out_channels=4), interpolant=interpolant)
    with pytest.raises(ValueError, match="backbone takes num_marginals = 3 but the interpolant has num_marginals = 4"):
        InterpolantModule(backbone=small_unet(num_marginals=3), interpolant=interpolant)
    with pytest.raises(ValueError, match="antithetic = True does not apply"):
        InterpolantModule(backbone=small_unet(), interpolant=interpolant, antithetic=True)
    gamma_free = MultimarginalInterpolant(4, gamma="zero")
    assert InterpolantModule(backbone=small_unet(out_channels=4), interpolant=gamma_free).interpolant.outputs == 4


def test_network_fields_split_the_outputs_in_the_interpolant_order():
    """A backbone that emits [1, 2, 3, 4, 5] x ones gives g_k = k + 1 and eta = 5: the velocity along the
    edge 1 -> 3 at s is g_3 - g_1 + gamma' eta = 2 + 5 gamma'(s)."""
    interpolant = MultimarginalInterpolant(4, gamma="quadratic", gamma_scale=2.0)

    class Constant(torch.nn.Module):
        def forward(self, x, alpha, cond=None):
            return torch.cat([(k + 1) * torch.ones_like(x) for k in range(5)], 1)

    module = InterpolantModule(backbone=Constant(), interpolant=interpolant)
    fields = module.path_fields(1, 3, ema=False)
    s = torch.tensor([0.25, 0.5])
    velocity = fields.velocity(s, torch.zeros(2, 1, 8, 8))
    gamma_rate = 2.0 * (1 - 2 * s)  # a q' with q = s (1 - s) on an edge
    torch.testing.assert_close(velocity[:, 0, 0, 0], 2 + 5 * gamma_rate)
