"""Conditional generation through the real Trainer: in-painting keeps known pixels exactly, restoration metrics,
samples from held-out data through a data-dependent coupling, labels and guidance checked at setup."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio

from si_lightning.callbacks import ClassAccuracyCallback, RestorationCallback, SamplingCallback
from si_lightning.callbacks.artifacts import METRICS_FILE
from si_lightning.couplings import ClassLabels, Inpainting, SuperResolution
from si_lightning.data import DigitsDataModule
from si_lightning.interpolants import Interpolant
from si_lightning.module import InterpolantModule
from si_lightning.nn import UNet
from si_lightning.sampling import ODESampler
from tests.integration.test_callbacks import digits_model, fit


def conditional_model(cond_channels: int, num_classes: int = 0) -> InterpolantModule:
    torch.manual_seed(0)
    backbone = UNet(
        data_shape=(1, 8, 8),
        cond_channels=cond_channels,
        num_classes=num_classes,
        model_channels=16,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        norm_groups=8,
    )
    interpolant = Interpolant("linear", gaussian_base=cond_channels == 0)
    return InterpolantModule(backbone=backbone, interpolant=interpolant, loss_bins=0)


def randomise(model: InterpolantModule) -> None:
    """Weights far from the zero-initialised output layer, so the network moves every pixel unless masked."""
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_inpainting_samples_keep_every_known_pixel_bit_for_bit(tmp_path):
    model = conditional_model(cond_channels=2)
    data = DigitsDataModule(batch_size=16, coupling=Inpainting(tiles=16, hide_probability=0.5))
    euler = ODESampler("euler", steps=4)
    restoration = RestorationCallback(
        num_samples=20, samples_per_image=2, rows=3, samplers={"ode-euler": euler}, extractor="digits"
    )
    trainer = fit(model, data, [restoration], tmp_path, max_steps=1)
    randomise(model)
    seeds = list(range(20))
    reference = restoration.data.inputs(seeds, torch.device("cpu"))
    keep = reference.cond.keep.bool().expand_as(reference.x1)
    assert 0 < int(keep.sum()) < keep.numel()
    restored, nfe, draws = restoration.restore(trainer, model, euler)
    assert nfe == 4 and draws.shape == (3, 2, 1, 8, 8)
    assert torch.equal(restored[keep], reference.x1[keep])
    assert (restored[~keep] - reference.x0[~keep]).abs().max() > 1e-3  # the hidden pixels did move
    second = restoration.data.inputs(seeds[:3], torch.device("cpu"), draw=1)
    assert torch.equal(second.cond.keep, reference.cond.keep[:3])  # draw 1: the same mask, other noise
    assert torch.equal(draws[:, 1][keep[:3]], reference.x1[:3][keep[:3]])
    # An adaptive solver through the module's fields, and the same fields unmasked (which do move them).
    with torch.no_grad():
        adaptive = ODESampler("dopri5", atol=1e-2, rtol=1e-2).sample(model.fields(), reference.x0, reference.cond).x
        unmasked = euler.sample(model.fields().fields, reference.x0, reference.cond).x
    assert torch.equal(adaptive[keep], reference.x1[keep])
    assert (unmasked[keep] - reference.x1[keep]).abs().max() > 1e-3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_restoration_metrics_keys_baseline_and_picture(tmp_path):
    model = conditional_model(cond_channels=1)
    coupling = SuperResolution(factor=2, sigma=0.1)
    data = DigitsDataModule(batch_size=16, coupling=coupling)
    heun = ODESampler("heun", steps=3)
    restoration = RestorationCallback(
        num_samples=24, samples_per_image=2, rows=4, samplers={"ode-heun": heun}, posterior_draws=3
    )
    trainer = fit(model, data, [restoration], tmp_path, max_steps=2)
    (record,) = [json.loads(line) for line in (Path(trainer.log_dir) / METRICS_FILE).read_text().splitlines()]
    metrics = record["metrics"]
    assert set(metrics) == {
        "psnr/bicubic/n24",
        "ssim/bicubic/n24",
        "psnr/knn-1/n24",
        "ssim/knn-1/n24",
        "psnr/knn-5/n24",
        "ssim/knn-5/n24",
        "psnr/ode-heun-mean3/n24",
        "ssim/ode-heun-mean3/n24",
        "psnr/ode-heun-nfe5/n24",
        "ssim/ode-heun-nfe5/n24",
        "fid-digits/ode-heun-nfe5/n24",
        "nfe/ode-heun/n24",
    }
    assert all(np.isfinite(value) for value in metrics.values())
    truth = restoration.data.x1  # 24 of 180 validation digits, in seed order (first_seed = 0)
    per_image = peak_signal_noise_ratio(
        coupling.bicubic(truth), truth, data_range=2.0, reduction="none", dim=(1, 2, 3)
    ).mean()
    assert metrics["psnr/bicubic/n24"] == pytest.approx(float(per_image), rel=1e-6)
    # kNN-5 written out: the 5 training images (of the callback's 2000) closest in block means, averaged.
    training, low = restoration.training_images, coupling.downsample(truth)
    chosen = []
    for image in low:
        distances = [float(((coupling.downsample(other[None])[0] - image) ** 2).sum()) for other in training]
        chosen.append(training[sorted(range(len(distances)), key=distances.__getitem__)[:5]].mean(0))
    knn = peak_signal_noise_ratio(torch.stack(chosen), truth, data_range=2.0, reduction="none", dim=(1, 2, 3))
    assert metrics["psnr/knn-5/n24"] == pytest.approx(float(knn.mean()), rel=1e-5)
    # The mean of 3 draws: draw d of image i keeps its block means and takes the noise of (seed i, d).
    with torch.no_grad():
        draws = []
        for draw in range(3):
            inputs = restoration.data.inputs(list(range(24)), torch.device("cpu"), draw=draw)
            draws.append(heun.sample(model.fields(), inputs.x0, inputs.cond).x)
    mean = peak_signal_noise_ratio(sum(draws) / 3, truth, data_range=2.0, reduction="none", dim=(1, 2, 3))
    assert metrics["psnr/ode-heun-mean3/n24"] == pytest.approx(float(mean.mean()), rel=1e-5)
    (picture,) = (Path(trainer.log_dir) / "restoration" / "ode-heun").glob("step-*.png")
    assert np.asarray(Image.open(picture)).shape[:2] == (4 * 10 + 2, 4 * 10 + 2)  # rows x (input | 2 | truth)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_samples_from_held_out_data_do_not_depend_on_the_batch_size(tmp_path):
    model = conditional_model(cond_channels=1)
    data = DigitsDataModule(batch_size=16, coupling=SuperResolution(factor=2, sigma=0.1))
    sampler = ODESampler("euler", steps=3)
    small = SamplingCallback(num_samples=7, every_n_steps=None, samplers={"ode": sampler}, batch_size=3)
    trainer = fit(model, data, [small], tmp_path, max_steps=1)
    randomise(model)
    large = SamplingCallback(num_samples=7, every_n_steps=None, samplers={"ode": sampler}, batch_size=7)
    large.prepare(trainer, model, "fit")
    torch.testing.assert_close(small.generate(trainer, model, sampler), large.generate(trainer, model, sampler))
    assert (Path(trainer.log_dir) / "samples" / "ode").is_dir()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bad_conditional_setups_are_one_line_at_setup(tmp_path):
    labelled = DigitsDataModule(batch_size=16, coupling=ClassLabels(drop_probability=0.0))
    with pytest.raises(ValueError, match=r"labels = \[3, 12\]: expected class labels in \[0, 9\], got \[12\]"):
        fit(conditional_model(0, 10), labelled, [SamplingCallback(labels=[3, 12])], tmp_path)
    with pytest.raises(ValueError, match="guidance_scale = 2.0 needs a model trained with label drop"):
        fit(conditional_model(0, 10), labelled, [ClassAccuracyCallback(guidance_scales=[1.0, 2.0])], tmp_path)
    with pytest.raises(ValueError, match="RestorationCallback needs a data-dependent image coupling"):
        fit(digits_model(), DigitsDataModule(batch_size=16), [RestorationCallback()], tmp_path)
    with pytest.raises(ValueError, match="image size 8x8 is not divisible by the super-resolution factor 3"):
        DigitsDataModule(coupling=SuperResolution(factor=3))
    with pytest.raises(ValueError, match=r"hide_probability must be in \[0, 1\], got 1.5"):
        Inpainting(hide_probability=1.5)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("coupling", [SuperResolution(factor=2, sigma=0.2), Inpainting(tiles=16, hide_probability=0.5)])
def test_conditional_likelihood_equals_a_direct_computation(tmp_path, coupling):
    """bits/dim of log p(x1 | cond) with the coupling's base density; in-painting counts hidden dimensions only."""
    from si_lightning.callbacks import LikelihoodCallback
    from si_lightning.callbacks.likelihood import dequantize
    from si_lightning.sampling import log_likelihood

    model = conditional_model(cond_channels=coupling.cond_channels(1))
    data = DigitsDataModule(batch_size=16, coupling=coupling)
    callback = LikelihoodCallback(num_samples=6, method="rk4", steps=3, batch_size=4)
    trainer = fit(model, data, [callback], tmp_path, max_steps=1)
    held = callback.data
    truth = data.real_samples(6, torch.Generator().manual_seed(0), split="val")  # the callback's 6 points
    torch.testing.assert_close(held.x1, dequantize(truth, torch.Generator().manual_seed(0)))
    inputs = held.inputs(list(range(6)), torch.device("cpu"))
    with torch.no_grad():
        direct = log_likelihood(
            model.fields(),
            inputs.x1,
            lambda x0: coupling.base_log_prob(x0, inputs.cond)[0],
            divergence="hutchinson",
            method="rk4",
            steps=3,
            cond=inputs.cond,
            seeds=list(range(6)),
        )
    dims = coupling.base_log_prob(inputs.x0, inputs.cond)[1]
    if isinstance(coupling, Inpainting):
        assert torch.equal(dims, (1 - inputs.cond.keep).flatten(1).sum(1))
    expected = (-direct.log_prob.double() / (dims.double() * np.log(2)) + 7).mean()
    value = trainer.callback_metrics["bits-per-dim-val/ode-rk4-3/n6"]
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
