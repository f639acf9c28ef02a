"""Fourier-space operators on the periodic square [0, 2 pi)^2 (docs/math.md section 8).

Fields are (..., H, W): H rows along y, W columns along x; velocity fields (..., 2, H, W) hold (u, v).
Wavenumbers are integers (the domain has side 2 pi): k_y from ``fftfreq`` (negative half included),
k_x from ``rfftfreq`` (the real FFT keeps k_x >= 0). A Nyquist mode (k_x or k_y = N/2 on an even grid) has no
derivative on the grid (cos(N x / 2) is sampled, sin(N x / 2) vanishes at every point); derivatives use
k = 0 there, and the Leray projection removes those modes, which keeps real fields real.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.lru_cache(maxsize=16)
def _wavenumbers(height: int, width: int, device: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    k_y = torch.fft.fftfreq(height, d=1.0 / height, dtype=dtype, device=device)
    k_x = torch.fft.rfftfreq(width, d=1.0 / width, dtype=dtype, device=device)
    return k_y[:, None].expand(height, k_x.numel()), k_x[None, :].expand(height, k_x.numel())


@functools.lru_cache(maxsize=16)
def _resolved(height: int, width: int, device: str) -> Tensor:
    k_y = torch.fft.fftfreq(height, d=1.0 / height, device=device).abs()
    k_x = torch.fft.rfftfreq(width, d=1.0 / width, device=device)
    not_nyquist_y = (k_y != height / 2) | (height % 2 == 1)
    not_nyquist_x = (k_x != width / 2) | (width % 2 == 1)
    return not_nyquist_y[:, None] & not_nyquist_x[None, :]


def resolved_modes(height: int, width: int, device: torch.device | str) -> Tensor:
    """(H, W // 2 + 1) bool: the wavenumbers of ``rfft2`` that are not Nyquist modes."""
    return _resolved(height, width, str(device))


def wavenumbers(height: int, width: int, device: torch.device | str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(k_y, k_x), each (H, W // 2 + 1): the integer wavenumbers of ``torch.fft.rfft2`` on an H x W grid."""
    real = torch.empty((), dtype=dtype).real.dtype  # float32 for complex64, etc.
    return _wavenumbers(height, width, str(device), real)


def derivative_wavenumbers(
    height: int, width: int, device: torch.device | str, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(k_y, k_x) as ``wavenumbers`` with the Nyquist ones set to 0: d/dy = i k_y, d/dx = i k_x on the grid."""
    k_y, k_x = wavenumbers(height, width, device, dtype)
    k_y = torch.where(k_y.abs() == height / 2, torch.zeros_like(k_y), k_y) if height % 2 == 0 else k_y
    k_x = torch.where(k_x == width / 2, torch.zeros_like(k_x), k_x) if width % 2 == 0 else k_x
    return k_y, k_x


def _check_velocity(velocity: Tensor, name: str = "velocity") -> None:
    if velocity.dim() < 3 or velocity.shape[-3] != 2 or not velocity.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of shape (..., 2, H, W), got {tuple(velocity.shape)}")


def leray_projection(velocity: Tensor) -> Tensor:
    """P u: the divergence-free part of u (..., 2, H, W), P = I - k k^T / |k|^2 on each wavenumber k.

    The mean (k = 0) passes unchanged and the Nyquist modes are removed (see the module docstring). P is
    an orthogonal projection (P^2 = P, symmetric); on an even N x N grid its trace over the 2 N^2 real
    degrees of freedom is (N - 1)^2 + 1: one per resolved non-zero wavenumber, two for the mean.
    """
    _check_velocity(velocity)
    height, width = velocity.shape[-2:]
    spectrum = torch.fft.rfft2(velocity)
    k_y, k_x = wavenumbers(height, width, velocity.device, spectrum.dtype)
    squared = k_x**2 + k_y**2
    inverse = torch.where(squared > 0, 1.0 / squared.clamp_min(1e-30), torch.zeros_like(squared))
    u_hat, v_hat = spectrum[..., 0, :, :], spectrum[..., 1, :, :]
    along_k = (k_x * u_hat + k_y * v_hat) * inverse  # (k . u_hat) / |k|^2
    resolved = resolved_modes(height, width, velocity.device)
    projected = torch.stack((u_hat - k_x * along_k, v_hat - k_y * along_k), dim=-3) * resolved
    return torch.fft.irfft2(projected, s=(height, width))


def divergence(velocity: Tensor) -> Tensor:
    """du/dx + dv/dy (..., H, W), spectrally."""
    _check_velocity(velocity)
    height, width = velocity.shape[-2:]
    spectrum = torch.fft.rfft2(velocity)
    k_y, k_x = derivative_wavenumbers(height, width, velocity.device, spectrum.dtype)
    return torch.fft.irfft2(1j * (k_x * spectrum[..., 0, :, :] + k_y * spectrum[..., 1, :, :]), s=(height, width))


def velocity_from_vorticity(vorticity: Tensor) -> Tensor:
    """(u, v) = (d psi/dy, -d psi/dx) with -Laplacian psi = omega; (..., H, W) -> (..., 2, H, W), zero mean."""
    height, width = vorticity.shape[-2:]
    spectrum = torch.fft.rfft2(vorticity)
    k_y, k_x = derivative_wavenumbers(height, width, vorticity.device, spectrum.dtype)
    squared = k_x**2 + k_y**2
    stream = torch.where(squared > 0, spectrum / squared.clamp_min(1e-30), torch.zeros_like(spectrum))
    u_hat, v_hat = 1j * k_y * stream, -1j * k_x * stream
    return torch.fft.irfft2(torch.stack((u_hat, v_hat), dim=-3), s=(height, width))


def vorticity_from_velocity(velocity: Tensor) -> Tensor:
    """omega = dv/dx - du/dy (..., H, W), spectrally."""
    _check_velocity(velocity)
    height, width = velocity.shape[-2:]
    spectrum = torch.fft.rfft2(velocity)
    k_y, k_x = derivative_wavenumbers(height, width, velocity.device, spectrum.dtype)
    return torch.fft.irfft2(1j * (k_x * spectrum[..., 1, :, :] - k_y * spectrum[..., 0, :, :]), s=(height, width))


def kinetic_energy(velocity: Tensor) -> Tensor:
    """K(u) = (1/2) mean over the grid of |u|^2: (..., 2, H, W) -> (...)."""
    _check_velocity(velocity)
    return 0.5 * velocity.pow(2).sum(dim=-3).mean(dim=(-2, -1))


def enstrophy(velocity: Tensor) -> Tensor:
    """Z(u) = (1/2) mean over the grid of omega^2: (..., 2, H, W) -> (...)."""
    return 0.5 * vorticity_from_velocity(velocity).pow(2).mean(dim=(-2, -1))


def projection_trace(height: int, width: int) -> int:
    """The trace of ``leray_projection`` over the 2 H W real degrees of freedom: E |P z|^2 for white noise z.

    One per resolved non-zero wavenumber and two for the mean; the Nyquist row/column of an even side is removed.
    """
    rows = height - 1 if height % 2 == 0 else height
    columns = width - 1 if width % 2 == 0 else width
    return rows * columns + 1
