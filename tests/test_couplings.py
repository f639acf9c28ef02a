"""Couplings against their formulas (docs/math.md section 6); statistics within 5 standard errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from si_lightning.condition import Condition
from si_lightning.couplings import (
    COUPLINGS,
    Batch,
    ClassLabels,
    IndependentCoupling,
    Inpainting,
    SuperResolution,
    get_coupling,
    mask_velocity,
)
from si_lightning.interpolants import Interpolant


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(batch: int = 64, channels: int = 3, size: int = 16, seed: int = 99) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=seeded(seed))


def assert_standard_normal(sample: torch.Tensor, std: float = 1.0) -> None:
    """Mean 0 and standard deviation ``std`` within 5 standard errors."""
    n = sample.numel()
    assert abs(sample.mean().item()) < 5 * std / math.sqrt(n)
    # s.e. of the sample std of a Gaussian: std / sqrt(2 n)
    assert abs(sample.std().item() - std) < 5 * std / math.sqrt(2 * n)


# ----------------------------------------------------------------------------------------- independent
def test_independent_base_is_standard_normal_and_ignores_x1():
    x1 = images()
    batch = IndependentCoupling()(x1, generator=seeded(1))
    assert isinstance(batch, Batch) and batch.x1 is x1 and batch.cond == Condition()
    assert_standard_normal(batch.x0)
    # Independence: the draw does not read x1, so another x1 gets the same x0 from the same seed.
    other = IndependentCoupling()(x1 * 5 + 3, generator=seeded(1))
    assert torch.equal(batch.x0, other.x0)
    coupling = IndependentCoupling()
    assert coupling.gaussian_base and coupling.num_classes == 0 and coupling.cond_channels(3) == 0


def test_coupling_rejects_bad_data():
    with pytest.raises(ValueError, match=r"x1 must be a floating tensor of shape \(batch, \.\.\.\), got \(5,\)"):
        IndependentCoupling()(torch.zeros(5))
    with pytest.raises(ValueError, match="x1 must be a floating tensor"):
        IndependentCoupling()(torch.zeros(5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(4,\), got torch.int64 \(3,\)"):
        IndependentCoupling()(torch.zeros(4, 2), labels=torch.zeros(3, dtype=torch.long))


def test_batch_unpacks_and_moves():
    x0, x1, cond = Batch(torch.zeros(2, 2), torch.ones(2, 2), Condition(labels=torch.tensor([0, 1])))
    assert torch.equal(x1, torch.ones(2, 2)) and torch.equal(cond.labels, torch.tensor([0, 1]))
    moved = Batch(x0, x1, cond).to("cpu")
    assert torch.equal(moved.cond.labels, cond.labels)


# ------------------------------------------------------------------------------------ super-resolution
def test_super_resolution_nearest_is_block_mean():
    x1 = images(batch=4, size=12)
    factor = 3
    low = SuperResolution(factor=factor, sigma=0.0, mode="nearest").low_resolution(x1)
    blocks = x1.reshape(4, 3, 4, factor, 4, factor).mean(dim=(3, 5))  # D: mean of each factor x factor block
    expected = blocks.repeat_interleave(factor, 2).repeat_interleave(factor, 3)  # U: repeat it
    torch.testing.assert_close(low, expected, rtol=0, atol=1e-6)


def test_super_resolution_bilinear_reproduces_a_ramp_inside():
    # D then bilinear U (half-pixel centres) maps the ramp a h + b w to itself away from the border.
    height = torch.arange(16.0).view(16, 1)
    width = torch.arange(16.0).view(1, 16)
    ramp = (0.3 * height - 0.7 * width).expand(2, 1, 16, 16)
    low = SuperResolution(factor=2, sigma=0.0, mode="bilinear").low_resolution(ramp)
    torch.testing.assert_close(low[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.0, 0.25])
def test_super_resolution_base_is_low_resolution_plus_sigma_noise(sigma):
    coupling = SuperResolution(factor=4, sigma=sigma)
    x1 = images(batch=256, channels=3, size=16)  # 196,608 noise values: 5 s.e. of the std is 0.8% of sigma
    batch = coupling(x1, generator=seeded(2))
    mean = coupling.low_resolution(x1)
    torch.testing.assert_close(batch.cond.channels, mean, rtol=0, atol=0)
    assert batch.cond.labels is None
    if sigma == 0.0:
        torch.testing.assert_close(batch.x0, mean, rtol=0, atol=0)
    else:
        assert_standard_normal(batch.x0 - mean, std=sigma)
    assert not coupling.gaussian_base and coupling.cond_channels(3) == 3 and coupling.num_classes == 0


def test_super_resolution_rejects_bad_settings():
    with pytest.raises(ValueError, match="image size 10x10 is not divisible by the super-resolution factor 4"):
        SuperResolution(factor=4)(images(size=10))
    with pytest.raises(ValueError, match="factor must be an integer >= 2, got 1"):
        SuperResolution(factor=1)
    with pytest.raises(ValueError, match="factor must be an integer >= 2, got 2.0"):
        SuperResolution(factor=2.0)
    with pytest.raises(ValueError, match="sigma must be >= 0, got -0.1"):
        SuperResolution(sigma=-0.1)
    with pytest.raises(ValueError, match="unknown up-sampling mode 'bicubic'; expected one of: nearest, bilinear"):
        SuperResolution(mode="bicubic")
    with pytest.raises(ValueError, match=r"needs image data of shape \(channels, height, width\), got .*\(2,\)"):
        SuperResolution(factor=2)(torch.zeros(3, 2))


# ------------------------------------------------------------------------------------------ in-painting
def test_inpainting_keeps_visible_pixels_and_noises_hidden_ones():
    coupling = Inpainting(tiles=16, hide_probability=0.3, sigma=0.5)
    x1 = images(batch=128, channels=3, size=16)
    batch = coupling(x1, generator=seeded(3))
    mask, kept = batch.cond.channels[:, :1], batch.cond.channels[:, 1:]
    assert batch.cond.channels.shape == (128, 4, 16, 16) == (128, coupling.cond_channels(3), 16, 16)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    keep = mask.bool().expand_as(x1)
    assert torch.equal(batch.x0[keep], x1[keep])  # exactly x1 where kept
    assert torch.equal(kept, mask * x1)
    assert_standard_normal(batch.x0[~keep], std=0.5)  # sigma zeta where hidden
    # The mask is constant on each of the 4 x 4 tiles of 4 x 4 pixels.
    tiles = mask.reshape(128, 1, 4, 4, 4, 4)
    assert torch.equal(tiles.amax(dim=(3, 5)), tiles.amin(dim=(3, 5)))


def test_inpainting_hides_each_tile_with_the_given_probability():
    coupling = Inpainting(tiles=64, hide_probability=0.3)
    x1 = torch.zeros(500, 1, 8, 8)
    mask = coupling.keep_mask(x1, seeded(4))
    hidden = 1 - mask.mean().item()  # one pixel per tile at 8x8: 32,000 tiles
    standard_error = math.sqrt(0.3 * 0.7 / mask.numel())
    assert abs(hidden - 0.3) < 5 * standard_error


def test_inpainting_velocity_vanishes_on_kept_pixels():
    coupling = Inpainting(tiles=16)
    x1 = images(batch=8, channels=3, size=8)
    batch = coupling(x1, generator=seeded(5))
    interpolant = Interpolant(schedule="linear", gamma="zero", gaussian_base=False)
    sample = interpolant.sample(batch.x0, batch.x1, torch.rand(8, generator=seeded(6)))
    mask = batch.cond.channels[:, :1]
    # The target velocity alpha' x0 + beta' x1 = x1 - x0 is zero on kept pixels, which mask_velocity enforces.
    assert torch.equal(sample.velocity * mask, torch.zeros_like(sample.velocity))
    masked = mask_velocity(sample.velocity, batch.cond)
    torch.testing.assert_close(masked, sample.velocity, rtol=0, atol=0)
    network_output = torch.randn(8, 3, 8, 8, generator=seeded(7))
    masked = mask_velocity(network_output, batch.cond)
    assert torch.equal(masked * mask, torch.zeros_like(masked))
    assert torch.equal(masked * (1 - mask), network_output * (1 - mask))


def test_inpainting_rejects_bad_settings():
    with pytest.raises(ValueError, match="tiles must be a positive perfect square .* got 50"):
        Inpainting(tiles=50)
    with pytest.raises(ValueError, match="hide_probability must be in \\[0, 1\\], got 1.5"):
        Inpainting(hide_probability=1.5)
    with pytest.raises(ValueError, match="sigma must be >= 0 .* got -0.5"):
        Inpainting(sigma=-0.5)
    with pytest.raises(ValueError, match="a likelihood needs base noise"):
        coupling = Inpainting(sigma=0.0)
        batch = coupling(images(size=8), generator=seeded(0))
        coupling.base_log_prob(batch.x0, batch.cond)
    with pytest.raises(ValueError, match="image size 12x12 is not divisible by the 8x8 grid of 64 tiles"):
        Inpainting(tiles=64)(images(size=12))
    with pytest.raises(ValueError, match="mask_velocity needs in-painting cond.channels"):
        mask_velocity(torch.zeros(2, 3, 8, 8), Condition())


# ------------------------------------------------------------------------------------------ class labels
def test_class_labels_drop_at_the_given_rate():
    coupling = ClassLabels(drop_probability=0.2, num_classes=10)
    labels = torch.arange(20000) % 10
    x1 = torch.zeros(20000, 2)
    batch = coupling(x1, labels, generator=seeded(8))
    dropped = batch.cond.labels == 10
    standard_error = math.sqrt(0.2 * 0.8 / labels.numel())
    assert abs(dropped.float().mean().item() - 0.2) < 5 * standard_error
    assert torch.equal(batch.cond.labels[~dropped], labels[~dropped])  # the rest pass through unchanged
    # x0 comes from the inner coupling, drawn first from the same generator.
    assert torch.equal(batch.x0, IndependentCoupling()(x1, generator=seeded(8)).x0)


@pytest.mark.parametrize("probability, expected", [(0.0, "kept"), (1.0, "null")])
def test_class_labels_extreme_probabilities(probability, expected):
    labels = torch.arange(50) % 5
    out = ClassLabels(probability, num_classes=5)(torch.zeros(50, 2), labels, generator=seeded(9)).cond.labels
    assert torch.equal(out, labels if expected == "kept" else torch.full_like(labels, 5))


def test_class_labels_wrap_an_inner_coupling():
    coupling = ClassLabels(drop_probability=0.1, num_classes=3, inner=SuperResolution(factor=2, sigma=0.0))
    x1 = images(batch=6, channels=3, size=8)
    batch = coupling(x1, torch.tensor([0, 1, 2, 0, 1, 2]), generator=seeded(10))
    torch.testing.assert_close(batch.cond.channels, coupling.inner.low_resolution(x1), rtol=0, atol=0)
    assert batch.cond.labels.shape == (6,)
    assert coupling.num_classes == 3 and coupling.cond_channels(3) == 3 and not coupling.gaussian_base
    assert ClassLabels(0.1, 3).gaussian_base


def test_class_labels_reject_bad_settings():
    with pytest.raises(ValueError, match="drop_probability must be in \\[0, 1\\], got 1.5"):
        ClassLabels(drop_probability=1.5)
    with pytest.raises(ValueError, match="drop_probability must be in \\[0, 1\\], got -0.1"):
        ClassLabels(drop_probability=-0.1)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        ClassLabels(num_classes=0)
    with pytest.raises(ValueError, match="cannot wrap another ClassLabels"):
        ClassLabels(inner=ClassLabels())
    with pytest.raises(ValueError, match="ClassLabels needs labels, got None"):
        ClassLabels()(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="needs image data"):
        ClassLabels(inner=Inpainting())(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- registry
def test_registry_builds_by_name_and_lists_names_on_a_miss():
    assert set(COUPLINGS) == {
        "independent",
        "super-resolution",
        "inpainting",
        "class-labels",
        "minibatch-ot",
        "denoising",
        "blur",
        "rain",
        "next-state",
    }
    coupling = get_coupling("inpainting", tiles=16, hide_probability=0.5)
    assert isinstance(coupling, Inpainting) and coupling.tiles_per_side == 4
    with pytest.raises(
        ValueError, match="unknown coupling 'inpaint'; expected one of: blur, class-labels, denoising, independent"
    ):
        get_coupling("inpaint")


def test_generator_makes_couplings_reproducible():
    x1 = images(batch=4, size=8)
    for coupling in (SuperResolution(2, 0.3), Inpainting(16), IndependentCoupling()):
        first, second = coupling(x1, generator=seeded(11)), coupling(x1, generator=seeded(11))
        assert torch.equal(first.x0, second.x0)
        assert not torch.equal(first.x0, coupling(x1, generator=seeded(12)).x0)


def test_super_resolution_mean_preserves_block_averages():
    # D(U(D(x))) = D(x) for nearest U: the base carries exactly the low-resolution information.
    x1 = images(batch=2, size=8)
    coupling = SuperResolution(factor=2, sigma=0.0, mode="nearest")
    torch.testing.assert_close(F.avg_pool2d(coupling.low_resolution(x1), 2), F.avg_pool2d(x1, 2))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_super_resolution_from_a_given_low_resolution_image_equals_coupling_its_high_resolution_one(mode):
    coupling = SuperResolution(factor=4, sigma=0.3, mode=mode)
    x1 = images(batch=3)
    batch = coupling(x1, generator=seeded(7))
    x0, cond = coupling.couple_low_resolution(coupling.downsample(x1), seeded(7))
    # Same U(D(x1)) and the same zeta: equal to the last bit, and U(low) is (batch, C, H, W).
    torch.testing.assert_close(x0, batch.x0, rtol=0, atol=0)
    torch.testing.assert_close(cond.channels, batch.cond.channels, rtol=0, atol=0)
    zeta = (x0 - coupling.upsample(coupling.downsample(x1))) / 0.3
    assert_standard_normal(zeta)
    with pytest.raises(ValueError, match="low-resolution images must be a floating tensor"):
        coupling.couple_low_resolution(torch.zeros(3, 4, 4, dtype=torch.uint8))
