"""The Leray projection of velocity fields onto divergence-free fields, in Fourier space."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.physics import divergence, leray_projection, projection_trace


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_is_divergence_free_and_idempotent(dtype: torch.dtype) -> None:
    # The divergence of P u is zero in exact arithmetic; what is left is the rounding of the FFTs, about
    # eps * |k|_max * max |u| * log2(N): 2e-16 * 16 * 4 * 5 < 1e-13 in float64 (well below the 1e-6 asked of
    # the model's states) and 1.2e-7 * 16 * 4 * 5 = 4e-5 in float32 on white noise, whose energy sits at the
    # largest wavenumbers (a smooth flow field does better).
    generator = torch.Generator().manual_seed(0)
    field = torch.randn(3, 2, 32, 32, generator=generator, dtype=dtype)
    projected = leray_projection(field)
    tolerance = 1e-12 if dtype == torch.float64 else 4e-5
    assert divergence(field).abs().max() > 1.0  # the raw field is far from divergence-free
    assert divergence(projected).abs().max().item() < tolerance
    assert torch.allclose(leray_projection(projected), projected, atol=tolerance)
    # orthogonal projection: the removed part is orthogonal to the kept part
    assert (projected * (field - projected)).sum().abs().item() < tolerance * field.numel()


def test_projection_keeps_a_divergence_free_field_and_removes_a_gradient() -> None:
    size = 16
    coordinate = torch.arange(size, dtype=torch.float64) * (2 * math.pi / size)
    y, x = torch.meshgrid(coordinate, coordinate, indexing="ij")
    solenoidal = torch.stack((torch.sin(x) * torch.cos(2 * y), -0.5 * torch.cos(x) * torch.sin(2 * y)))
    gradient = torch.stack((torch.cos(x + 3 * y), 3 * torch.cos(x + 3 * y)))  # grad of sin(x + 3y)
    mean = torch.stack((torch.full_like(x, 0.3), torch.full_like(x, -0.2)))
    assert torch.allclose(leray_projection(solenoidal + gradient + mean), solenoidal + mean, atol=1e-13)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (6, 10), (5, 8)])
def test_trace_of_the_projection_is_one_per_nonzero_wavenumber_plus_two(height: int, width: int) -> None:
    # Exact trace over the 2 N^2 real degrees of freedom: project every basis vector. The (N - 1)^2 - 1 resolved
    # non-zero wavenumbers keep one direction each, the mean keeps two, Nyquist modes none: (N - 1)^2 + 1,
    # the expected energy of projected white noise.
    basis = torch.eye(2 * height * width, dtype=torch.float64).reshape(-1, 2, height, width)
    trace = (leray_projection(basis) * basis).sum().item()
    assert trace == pytest.approx(projection_trace(height, width), abs=1e-9)
    assert projection_trace(8, 8) == 7**2 + 1


def test_a_field_of_the_wrong_shape_is_refused() -> None:
    expected = r"velocity must be a floating tensor of shape \(\.\.\., 2, H, W\), got \(4, 3, 8, 8\)"
    with pytest.raises(ValueError, match=expected):
        leray_projection(torch.zeros(4, 3, 8, 8))
