"""Backbones (si_lightning/nn/): shapes, zero-initialised outputs, learning, conditioning, input checks."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.condition import Condition
from si_lightning.nn import (
    BACKBONES,
    DIT_MODELS,
    MLP,
    DiT,
    FourierTimeFeatures,
    SinusoidalTimeFeatures,
    UNet,
    ZigMa,
    count_parameters,
)
from si_lightning.nn.dit import sincos_position_embedding

# Small hyper-parameters per backbone, and the data shape each is tested on.
SMALL = {
    "unet": (
        (3, 8, 8),
        dict(
            model_channels=16,
            channel_multipliers=(1, 2),
            num_res_blocks=1,
            attention_resolutions=(4,),
            num_heads=2,
            norm_groups=8,
        ),
    ),
    "dit": ((3, 8, 8), dict(preset=None, patch_size=2, depth=2, hidden_size=64, num_heads=4)),
    "zigma": ((3, 8, 8), dict(preset=None, patch_size=2, depth=2, hidden_size=64, chunk_size=8)),
    "mlp": ((2,), dict(hidden_size=32, num_layers=3)),
}
IMAGE_BACKBONES = ["unet", "dit", "zigma"]


def build(name: str, **kwargs) -> torch.nn.Module:
    data_shape, hyperparameters = SMALL[name]
    return BACKBONES[name](data_shape=data_shape, **{**hyperparameters, **kwargs})


def make_inputs(model, batch: int, generator: torch.Generator, dtype=torch.float32):
    """x, t and a Condition matching the model; labels cycle through every class and the null class."""
    x = torch.randn(batch, *model.data_shape, generator=generator, dtype=dtype)
    t = torch.rand(batch, generator=generator, dtype=dtype)
    labels = torch.arange(batch) % (model.num_classes + 1) if model.num_classes > 0 else None
    channels = None
    if model.cond_channels > 0:
        channels = torch.randn(batch, model.cond_channels, *model.data_shape[1:], generator=generator, dtype=dtype)
    cond = None if labels is None and channels is None else Condition(labels=labels, channels=channels)
    return x, t, cond


def perturb(model: torch.nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    """Move every parameter off its initial value so zero-initialised paths carry signal."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def train(model: torch.nn.Module, steps: int, generator: torch.Generator) -> set[str]:
    """Adam steps on a random regression target; returns the names of parameters never given a gradient."""
    x, t, cond = make_inputs(model, 6, generator)
    target = torch.randn(6, model.out_channels, *model.data_shape[1:], generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    untouched = {name for name, _ in model.named_parameters()}
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(x, t, cond) - target).pow(2).mean()
        loss.backward()
        untouched -= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().max() > 0}
        optimizer.step()
    return untouched


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("num_classes", [0, 5])
@pytest.mark.parametrize("cond_channels", [0, 2])
@pytest.mark.parametrize("double_output", [False, True])
def test_output_shape(name, num_classes, cond_channels, double_output, generator):
    data_channels = SMALL[name][0][0]
    out_channels = 2 * data_channels if double_output else None
    model = build(name, num_classes=num_classes, cond_channels=cond_channels, out_channels=out_channels)
    x, t, cond = make_inputs(model, 3, generator)
    output = model(x, t, cond)
    expected_channels = 2 * data_channels if double_output else data_channels
    assert output.shape == (3, expected_channels, *model.data_shape[1:])
    assert output.dtype == x.dtype


def test_dit_s_preset_on_small_patch_grid(generator):
    torch.manual_seed(0)
    model = DiT(data_shape=(3, 8, 8), num_classes=10, preset="S", patch_size=4)
    assert (model.depth, model.hidden_size, model.num_heads, model.grid) == (12, 384, 6, (2, 2))
    x, t, cond = make_inputs(model, 2, generator)
    assert model(x, t, cond).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("name", IMAGE_BACKBONES)
def test_fresh_output_is_exactly_zero(name, generator):
    """Zero-initialised output layer (adaLN-Zero for DiT): a fresh model predicts exactly 0."""
    torch.manual_seed(0)
    model = build(name, num_classes=5, cond_channels=2, out_channels=6)
    x, t, cond = make_inputs(model, 4, generator)
    assert torch.equal(model(x, t, cond), torch.zeros(4, 6, 8, 8))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_reaches_every_parameter(name, generator):
    """One step already makes the output non-zero; within three steps every parameter has had a gradient
    (zero-initialised layers hold back the ones behind them for one step each, never for good)."""
    torch.manual_seed(0)
    model = build(name, num_classes=5, cond_channels=2)
    train(model, 1, generator)
    x, t, cond = make_inputs(model, 4, generator)
    assert model(x, t, cond).abs().min() > 0
    model = build(name, num_classes=5, cond_channels=2)
    assert train(model, 3, generator) == set()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_null_class_differs_from_real_class_after_training(name, generator):
    """The label reaches the output through zero-initialised layers (adaLN-Zero): five steps open them."""
    torch.manual_seed(0)
    model = build(name, num_classes=5)
    train(model, 5, generator)
    x, t, _ = make_inputs(model, 4, generator)
    real = model(x, t, Condition(labels=torch.full((4,), 2)))
    null = model(x, t, Condition(labels=torch.full((4,), 5)))
    assert (real - null).abs().max() > 1e-4


@pytest.mark.parametrize("name", sorted(SMALL))
def test_missing_labels_mean_the_null_class(name, generator):
    torch.manual_seed(0)
    model = build(name, num_classes=5, cond_channels=2)
    perturb(model, generator)
    x, t, cond = make_inputs(model, 4, generator)
    null = model(x, t, Condition(labels=torch.full((4,), 5), channels=cond.channels))
    assert torch.equal(model(x, t, Condition(channels=cond.channels)), null)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_conditioning_channels_change_the_output(name, generator):
    torch.manual_seed(0)
    model = build(name, cond_channels=2)
    perturb(model, generator)
    x, t, cond = make_inputs(model, 4, generator)
    other = Condition(channels=torch.randn(cond.channels.shape, generator=generator))
    assert (model(x, t, cond) - model(x, t, other)).abs().max() > 1e-4


@pytest.mark.parametrize("name", sorted(SMALL))
def test_samples_are_independent_of_the_rest_of_the_batch(name, generator):
    torch.manual_seed(0)
    extra = {"dropout": 0.3} if name == "unet" else {}
    model = build(name, num_classes=5, cond_channels=2, **extra).double().eval()
    perturb(model, generator)
    x, t, cond = make_inputs(model, 5, generator, dtype=torch.float64)
    together = model(x, t, cond)
    for index in range(5):
        part = slice(index, index + 1)
        alone = model(x[part], t[part], cond.select(part))
        torch.testing.assert_close(alone, together[part], rtol=0, atol=1e-6)
    assert (together[0] - together[1]).abs().max() > 1e-4  # a constant output would pass trivially


@pytest.mark.parametrize(
    ("name", "published_millions"), [("DiT-S/2", 33.0), ("DiT-B/2", 130.5), ("DiT-L/2", 458.0), ("DiT-XL/2", 675.1)]
)
def test_dit_parameter_counts_match_published_sizes(name, published_millions):
    """ImageNet 256x256 latents (4, 32, 32), 1000 classes; built on the meta device, nothing allocated."""
    with torch.device("meta"):
        model = DiT.from_name(name, data_shape=(4, 32, 32), num_classes=1000, out_channels=8)
    assert next(model.parameters()).is_meta
    assert count_parameters(model) / 1e6 == pytest.approx(published_millions, rel=0.02)


def test_sinusoidal_time_features_closed_form():
    """dim 8: frequencies 10000^(-k/4) = 1, 0.1, 0.01, 0.001, applied to 1000 t."""
    t = torch.tensor([0.0, 0.37, 1.0], dtype=torch.float64)
    features = SinusoidalTimeFeatures(8).double()(t)
    angles = t[:, None] * torch.tensor([1000.0, 100.0, 10.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(features, torch.cat([angles.cos(), angles.sin()], dim=1), rtol=0, atol=1e-9)


def test_fourier_time_features_closed_form_and_seed():
    module = FourierTimeFeatures(4000, scale=16.0, seed=3)
    frequencies = module.frequencies
    # Sample std of 2000 normal draws: relative standard error 1 / sqrt(2 * 2000) ~ 1.6%; allow 5 of them.
    assert frequencies.std().item() == pytest.approx(16.0, rel=0.08)
    assert torch.equal(FourierTimeFeatures(4000, scale=16.0, seed=3).frequencies, frequencies)
    assert not torch.equal(FourierTimeFeatures(4000, scale=16.0, seed=4).frequencies, frequencies)
    assert "frequencies" in module.state_dict()
    t = torch.tensor([0.2, 0.9])
    angles = 2 * math.pi * t[:, None] * frequencies[None, :]
    torch.testing.assert_close(module(t), torch.cat([angles.cos(), angles.sin()], dim=1))


def test_position_embedding_gives_every_patch_its_own_code():
    for height, width in [(4, 4), (2, 6)]:
        embedding = sincos_position_embedding(32, height, width)
        assert embedding.shape == (height * width, 32)
        distances = torch.cdist(embedding, embedding) + torch.eye(height * width) * 1e3
        assert distances.min() > 1e-3


def test_unpatchify_puts_each_token_at_its_patch():
    """Token n (row-major over a 2 x 3 grid of 4 x 4 patches) must fill pixels (n // 3 * 4.., n % 3 * 4..)."""
    model = DiT(data_shape=(2, 8, 12), preset=None, patch_size=4, depth=1, hidden_size=16, num_heads=2)
    tokens = torch.arange(6.0)[None, :, None].expand(1, 6, 4 * 4 * 2)
    image = model.unpatchify(tokens)
    assert image.shape == (1, 2, 8, 12)
    rows, columns = torch.meshgrid(torch.arange(8), torch.arange(12), indexing="ij")
    expected = (rows // 4 * 3 + columns // 4).float()
    assert torch.equal(image[0, 0], expected) and torch.equal(image[0, 1], expected)


def test_dit_from_name_covers_presets_and_patch_sizes():
    assert len(DIT_MODELS) == 12
    model = DiT.from_name("DiT-S/4", data_shape=(3, 8, 8), num_classes=0)
    assert (model.depth, model.hidden_size, model.patch_size) == (12, 384, 4)


CONSTRUCTION_ERRORS = [
    (lambda: UNet(data_shape=(3, 30, 30)), r"divisible by 4; got data_shape \(3, 30, 30\)"),
    (lambda: UNet(data_shape=(30, 30)), r"UNet expects data_shape \(C, H, W\) .* got \(30, 30\)"),
    (lambda: build("unet", attention_resolutions=(16,)), r"include \[16\].*heights are \[8, 4\]"),
    (lambda: build("unet", norm_groups=5), r"norm_groups=5 must divide model_channels=16"),
    (lambda: build("unet", num_heads=3), r"num_heads=3 must divide every level's width, got 16"),
    (lambda: build("unet", dropout=1.5), r"dropout in \[0, 1\), got 1.5"),
    (lambda: build("dit", patch_size=3), r"patch_size=3 must divide the image size, got height 8 and width 8"),
    (lambda: DiT(data_shape=(3, 8, 12), patch_size=8), r"patch_size=8 .* got height 8 and width 12"),
    (lambda: DiT(data_shape=(3, 8, 8), preset="M"), r"unknown DiT preset 'M'; expected one of: B, L, S, XL"),
    (lambda: build("dit", num_heads=None), r"missing \['num_heads'\]"),
    (lambda: build("dit", num_heads=5), r"hidden_size=64, num_heads=5"),
    (lambda: DiT.from_name("DiT-M/2", data_shape=(3, 8, 8)), r"unknown DiT model 'DiT-M/2'; expected one of: DiT-B/2"),
    (lambda: build("zigma", patch_size=3), r"ZigMa patch_size=3 must divide the image size, got height 8"),
    (lambda: ZigMa(data_shape=(3, 8, 8), preset="M"), r"unknown ZigMa preset 'M'; expected one of: B, L, S, XL"),
    (lambda: build("zigma", hidden_size=None), r"ZigMa with preset=None needs depth and hidden_size; missing"),
    (lambda: build("zigma", hidden_size=30), r"ZigMa hidden_size must be divisible by 4, got hidden_size=30"),
    (lambda: build("zigma", chunk_size=0), r"ZigMa expects chunk_size to be an int >= 1, got 0"),
    (lambda: build("zigma", chunk_size=64), r"ZigMa expects chunk_size <= 32 \(the scan's float64 range\), got 64"),
    (lambda: ZigMa.from_name("ZigMa-S/3", data_shape=(3, 8, 8)), r"unknown ZigMa model 'ZigMa-S/3'"),
    (lambda: MLP(data_shape=(3, 8, 8)), r"MLP expects data_shape \(d,\) .* got \(3, 8, 8\)"),
    (lambda: build("mlp", num_classes=-1), r"num_classes to be an int >= 0, got -1"),
    (lambda: build("dit", out_channels=0), r"out_channels to be None or an int >= 1, got 0"),
    (lambda: build("mlp", time_embedding="gaussian"), r"unknown time embedding 'gaussian'; expected one of: fourier"),
]


@pytest.mark.parametrize(("make", "message"), CONSTRUCTION_ERRORS)
def test_bad_construction_is_a_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def call(name: str, x_shape=None, t=None, cond="default", **kwargs):
    """Run a small backbone on inputs where one part (x's shape, t, or cond) is replaced."""
    model = build(name, **kwargs)
    generator = torch.Generator().manual_seed(0)
    x, good_t, good_cond = make_inputs(model, 4, generator)
    if x_shape is not None:
        x = torch.randn(x_shape)
    return model(x, good_t if t is None else t, good_cond if cond == "default" else cond)


FORWARD_ERRORS = [
    (lambda: call("dit", x_shape=(4, 2, 8, 8)), r"DiT expects x of shape \(batch, 3, 8, 8\) .* got \(4, 2, 8, 8\)"),
    (lambda: call("zigma", x_shape=(4, 3, 8, 4)), r"ZigMa expects x of shape \(batch, 3, 8, 8\) .* \(4, 3, 8, 4\)"),
    (lambda: call("unet", x_shape=(4, 3, 16, 16)), r"UNet expects x of shape \(batch, 3, 8, 8\) .*\(4, 3, 16, 16\)"),
    (lambda: call("mlp", x_shape=(4, 3)), r"MLP expects x of shape \(batch, 2\) .* got \(4, 3\)"),
    (lambda: call("mlp", t=torch.rand(4, 1)), r"t to be a floating-point tensor of shape \(4,\), got shape \(4, 1\)"),
    (lambda: call("dit", t=torch.arange(4)), r"shape \(4,\), got shape \(4,\) and dtype torch.int64"),
    (lambda: call("unet", cond=Condition(labels=torch.zeros(4, dtype=torch.long))), r"num_classes=0 .* class labels"),
    (
        lambda: call("dit", num_classes=5, cond=Condition(labels=torch.tensor([0, 1, 6, 2]))),
        r"labels in \[0, 5\] \(5 = null class\), got 6",
    ),
    (
        lambda: call("mlp", num_classes=5, cond=Condition(labels=torch.zeros(4))),
        r"labels of shape \(4,\) and an integer dtype, got shape \(4,\) and dtype torch.float32",
    ),
    (lambda: call("unet", cond_channels=2, cond=None), r"cond_channels=2 but cond.channels is missing"),
    (
        lambda: call("dit", cond_channels=2, cond=Condition(channels=torch.zeros(4, 1, 8, 8))),
        r"cond.channels of shape \(4, 2, 8, 8\) \(cond_channels=2\), got \(4, 1, 8, 8\)",
    ),
    (lambda: call("mlp", cond=Condition(channels=torch.zeros(4, 1))), r"cond_channels=0 but received .*\(4, 1\)"),
    (lambda: call("mlp", cond=torch.zeros(4)), r"cond to be a Condition or None, got Tensor"),
]


@pytest.mark.parametrize(("make", "message"), FORWARD_ERRORS)
def test_bad_input_is_a_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
