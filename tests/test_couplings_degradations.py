"""Restoration degradations for the bridges: exactness of the untouched pixels, the operators, bad settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter as scipy_gaussian_filter

from si_lightning.couplings import Blur, Denoising, Inpainting, Rain, SuperResolution, gaussian_filter
from si_lightning.data.digits import load_digit_images


def digits() -> torch.Tensor:
    return load_digit_images(8)[0]


@pytest.mark.parametrize(
    "coupling",
    [Blur(0.8), Blur(0.4), Rain(), Rain(streaks=1, width=0.3), SuperResolution(2, 0.0, keep_floor=True)],
    ids=["blur-0.8", "blur-0.4", "rain", "rain-wide", "super-resolution-x2"],
)
def test_pixels_marked_untouched_are_the_clean_pixels_to_the_bit(coupling):
    """On all 1,797 digits: x0 = x1 exactly where cond.keep = 1, and the mark is not empty."""
    x1 = digits()
    batch = coupling(x1, generator=torch.Generator().manual_seed(0))
    keep = batch.cond.keep.bool().expand_as(x1)
    assert torch.equal(batch.x0[keep], x1[keep])
    assert int(keep.sum()) > 0
    assert torch.equal(batch.x0, batch.cond.channels)  # sigma = 0: the base is the degraded image


def test_gaussian_filter_matches_scipy_with_replicated_edges():
    """Independent baseline: scipy.ndimage.gaussian_filter, mode 'nearest', truncated at the same radius."""
    images = torch.randn(3, 2, 9, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    width = 0.8
    radius = math.ceil(2 * width)
    ours = gaussian_filter(images, width).numpy()
    theirs = np.stack(
        [
            np.stack(
                [scipy_gaussian_filter(channel, width, mode="nearest", truncate=radius / width) for channel in image]
            )
            for image in images.numpy()
        ]
    )
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_denoising_adds_noise_of_the_given_level_everywhere():
    """std of x0 - x1 over 1,797 x 64 pixels within 5 standard errors (s sqrt(1 / (2 n))) of s; no pixel kept."""
    x1 = digits()
    batch = Denoising(noise_std=0.3)(x1, generator=torch.Generator().manual_seed(2))
    residual = batch.x0 - x1
    count = residual.numel()
    assert abs(float(residual.std()) - 0.3) < 5 * 0.3 / math.sqrt(2 * count)
    assert batch.cond.keep is None


def test_rain_brightens_streaks_only_and_is_fixed_by_the_seed():
    x1 = digits()[:64]
    rain = Rain(intensity=0.75)
    first = rain(x1, generator=torch.Generator().manual_seed(3))
    again = rain(x1, generator=torch.Generator().manual_seed(3))
    other = rain(x1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first.x0, again.x0) and not torch.equal(first.x0, other.x0)
    streak = ~first.cond.keep.bool()
    assert torch.equal(first.x0[streak], (x1[streak] + 0.75).clamp(max=1.0))
    assert 0.05 < float(streak.double().mean()) < 0.4  # streaks cover a part of the image, not all of it


def test_base_noise_removes_the_kept_mark():
    """With sigma > 0 every pixel of x0 is noised, so no pixel is known (the plain coupling)."""
    x1 = digits()[:512]
    assert SuperResolution(2, 0.1, keep_floor=True)(x1).cond.keep is None
    batch = Rain(sigma=0.2)(x1, generator=torch.Generator().manual_seed(5))
    assert batch.cond.keep is None
    extra = batch.x0 - batch.cond.channels
    assert abs(float(extra.std()) - 0.2) < 5 * 0.2 / math.sqrt(2 * extra.numel())


def test_inpainting_with_sigma_zero_starts_hidden_pixels_at_zero():
    x1 = digits()[:16]
    batch = Inpainting(tiles=64, hide_probability=0.3, sigma=0.0)(x1, generator=torch.Generator().manual_seed(6))
    hidden = ~batch.cond.keep.bool().expand_as(x1)
    assert bool((batch.x0[hidden] == 0).all()) and torch.equal(batch.x0[~hidden], x1[~hidden])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Denoising(noise_std=0.0), "noise_std = 0.0: expected a finite number > 0"),
        (lambda: Blur(blur=-1), "blur = -1: expected a finite number > 0"),
        (lambda: Blur(sigma=-0.1), "sigma = -0.1: expected a finite number >= 0"),
        (lambda: Rain(streaks=0), "streaks = 0: expected an integer >= 1"),
        (lambda: Rain(width=1.5), r"width = 1.5: expected a number in \(0, 1\]"),
        (lambda: Rain(slant=2.0), r"slant = 2.0: expected an angle in \[-pi/2, pi/2\]"),
        (lambda: SuperResolution(2, 0.0, keep_floor=1), "keep_floor = 1: expected true or false"),
    ],
)
def test_bad_settings_are_one_line_errors(build, message):
    with pytest.raises(ValueError, match=message) as error:
        build()
    assert "\n" not in str(error.value)


def test_degradations_need_images():
    with pytest.raises(ValueError, match="needs image data of shape"):
        Blur()(torch.zeros(4, 64))
