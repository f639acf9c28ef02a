"""A pseudo-spectral solver of the 2-D incompressible Navier-Stokes equations in vorticity form.

On the periodic square [0, 2 pi)^2 (docs/math.md section 8):

    d omega / dt + u . grad omega = nu Laplacian omega - mu omega + f,    f = -A k cos(k y),

u = (d psi/dy, -d psi/dx) with -Laplacian psi = omega; f is the curl of Kolmogorov's body force
(A sin(k y), 0) and mu a linear drag that keeps the forced flow statistically stationary. The
advection term is computed in physical space and truncated by the 2/3 rule (wavenumbers with
|k_x| or |k_y| >= N/3 are zeroed), so the spatially discrete system is a Galerkin truncation: without
forcing, viscosity and drag it conserves energy and enstrophy exactly, and only the time integrator
changes them. Time stepping: fourth-order Runge-Kutta with an integrating factor (IF-RK4): the linear
part -(nu |k|^2 + mu) is integrated exactly, the advection and forcing by RK4.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from si_lightning.physics.spectral import velocity_from_vorticity, wavenumbers


def taylor_green_vorticity(size: int, wavenumber: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    """The Taylor-Green vortex omega = 2 k sin(k x) sin(k y) (H = W = size): u = sin(kx) cos(ky), v = -cos(kx) sin(ky).

    An exact solution with u . grad omega = 0: under viscosity alone omega(t) = omega(0) exp(-2 nu k^2 t).
    """
    coordinate = torch.arange(size, dtype=dtype) * (2 * math.pi / size)
    y, x = torch.meshgrid(coordinate, coordinate, indexing="ij")
    return 2 * wavenumber * torch.sin(wavenumber * x) * torch.sin(wavenumber * y)


def _check(name: str, value: float, valid: bool, expected: str) -> None:
    if not valid:
        raise ValueError(f"{name} = {value!r}: expected {expected}")


class KolmogorovFlow:
    """Forced 2-D turbulence on an N x N grid (see the module docstring).

    Args:
        size: grid points N per side (even, >= 8).
        viscosity: nu >= 0.
        drag: linear drag mu >= 0.
        forcing_wavenumber: k of the forcing, an integer in [1, N/3) (inside the de-aliased band).
        forcing_amplitude: A (0 for no forcing).
        time_step: the step h > 0 of IF-RK4.
        dtype: float64 (default) or float32.
    """

    def __init__(
        self,
        size: int = 64,
        viscosity: float = 1e-3,
        drag: float = 0.1,
        forcing_wavenumber: int = 4,
        forcing_amplitude: float = 1.0,
        time_step: float = 0.01,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        integer = isinstance(size, int) and not isinstance(size, bool)
        _check("size", size, integer and size >= 8 and size % 2 == 0, "an even integer >= 8")
        _check("viscosity", viscosity, isinstance(viscosity, (int, float)) and 0 <= viscosity < math.inf, "nu >= 0")
        _check("drag", drag, isinstance(drag, (int, float)) and 0 <= drag < math.inf, "mu >= 0")
        band = size / 3
        wavenumber_ok = isinstance(forcing_wavenumber, int) and 1 <= forcing_wavenumber < band
        _check("forcing_wavenumber", forcing_wavenumber, wavenumber_ok, f"an integer in [1, {band:.1f}) for N = {size}")
        _check("forcing_amplitude", forcing_amplitude, math.isfinite(forcing_amplitude), "a finite number")
        _check("time_step", time_step, isinstance(time_step, (int, float)) and 0 < time_step < math.inf, "h > 0")
        _check("dtype", dtype, dtype in (torch.float32, torch.float64), "torch.float32 or torch.float64")
        self.size, self.viscosity, self.drag = size, float(viscosity), float(drag)
        self.forcing_wavenumber, self.forcing_amplitude = forcing_wavenumber, float(forcing_amplitude)
        self.time_step, self.dtype = float(time_step), dtype
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.k_y, self.k_x = wavenumbers(size, size, "cpu", complex_dtype)
        self.k_squared = self.k_x**2 + self.k_y**2
        self.dealias = ((self.k_x.abs() < band) & (self.k_y.abs() < band)).to(dtype)
        linear = -(self.viscosity * self.k_squared + self.drag)
        self.half_step_factor = torch.exp(linear * self.time_step / 2)  # e^{L h/2}
        coordinate = torch.arange(size, dtype=dtype) * (2 * math.pi / size)
        y = coordinate[:, None].expand(size, size)
        forcing = -self.forcing_amplitude * forcing_wavenumber * torch.cos(forcing_wavenumber * y)
        self.forcing_spectrum = torch.fft.rfft2(forcing)

    def settings(self) -> dict[str, float | int | str]:
        """The solver's settings as plain values (for the data cache's key)."""
        return {
            "size": self.size,
            "viscosity": self.viscosity,
            "drag": self.drag,
            "forcing_wavenumber": self.forcing_wavenumber,
            "forcing_amplitude": self.forcing_amplitude,
            "time_step": self.time_step,
            "dtype": str(self.dtype),
        }

    def nonlinear(self, spectrum: Tensor) -> Tensor:
        """The de-aliased -u . grad omega + f in Fourier space: (..., N, N/2 + 1) -> same."""
        size = self.size
        k_squared = self.k_squared
        stream = torch.where(k_squared.real > 0, spectrum / k_squared.real.clamp_min(1e-30), torch.zeros_like(spectrum))
        u = torch.fft.irfft2(1j * self.k_y * stream, s=(size, size))
        v = torch.fft.irfft2(-1j * self.k_x * stream, s=(size, size))
        omega_x = torch.fft.irfft2(1j * self.k_x * spectrum, s=(size, size))
        omega_y = torch.fft.irfft2(1j * self.k_y * spectrum, s=(size, size))
        advection = torch.fft.rfft2(u * omega_x + v * omega_y)
        return -advection * self.dealias + self.forcing_spectrum

    def step(self, spectrum: Tensor) -> Tensor:
        """One IF-RK4 step of the vorticity spectrum (..., N, N/2 + 1)."""
        h, factor = self.time_step, self.half_step_factor
        k1 = h * self.nonlinear(spectrum)
        k2 = h * self.nonlinear(factor * (spectrum + k1 / 2))
        k3 = h * self.nonlinear(factor * spectrum + k2 / 2)
        k4 = h * self.nonlinear(factor**2 * spectrum + factor * k3)
        return factor**2 * spectrum + (factor**2 * k1 + 2 * factor * (k2 + k3) + k4) / 6

    def steps_for(self, duration: float, name: str = "duration") -> int:
        """The whole number of steps that make ``duration`` (which must be a multiple of the step)."""
        count = round(duration / self.time_step)
        if duration < 0 or abs(count * self.time_step - duration) > 1e-9 * max(1.0, duration):
            raise ValueError(f"{name} = {duration!r}: expected a multiple >= 0 of time_step = {self.time_step}")
        return count

    def advance(self, vorticity: Tensor, duration: float) -> Tensor:
        """omega after ``duration`` (a multiple of the step): (..., N, N) -> (..., N, N), de-aliased."""
        spectrum = torch.fft.rfft2(vorticity.to(self.dtype)) * self.dealias
        for _ in range(self.steps_for(duration)):
            spectrum = self.step(spectrum)
        result = torch.fft.irfft2(spectrum, s=(self.size, self.size))
        if not bool(torch.isfinite(result).all()):
            raise FloatingPointError(f"the solver diverged within {duration} time units; reduce time_step")
        return result

    def random_vorticity(self, count: int, generator: torch.Generator, peak: float = 4.0) -> Tensor:
        """(count, N, N) random initial vorticity: Gaussian Fourier modes with amplitude exp(-(|k| - peak)^2 / 2)."""
        shape = (count, *self.k_squared.shape)
        noise = torch.complex(
            torch.randn(shape, generator=generator, dtype=self.dtype),
            torch.randn(shape, generator=generator, dtype=self.dtype),
        )
        amplitude = torch.exp(-0.5 * (self.k_squared.real.sqrt() - peak) ** 2) * self.dealias
        vorticity = torch.fft.irfft2(noise * amplitude, s=(self.size, self.size))
        return vorticity / vorticity.std(dim=(-2, -1), keepdim=True) * 2.0

    def trajectories(self, count: int, seed: int, spin_up: float, snapshots: int, interval: float) -> Tensor:
        """(count, snapshots, 2, N, N) velocity fields every ``interval`` after a discarded ``spin_up``.

        Trajectory i starts from ``random_vorticity`` of a generator seeded by ``seed`` (all at once, so
        the result depends on (seed, count) and the settings only).
        """
        if snapshots < 1:
            raise ValueError(f"snapshots = {snapshots!r}: expected an integer >= 1")
        interval_steps = self.steps_for(interval, "interval")
        if interval_steps < 1:
            raise ValueError(f"interval = {interval!r}: expected a positive multiple of time_step = {self.time_step}")
        generator = torch.Generator().manual_seed(seed)
        vorticity = self.advance(self.random_vorticity(count, generator), spin_up)
        frames = [velocity_from_vorticity(vorticity)]
        for _ in range(snapshots - 1):
            vorticity = self.advance(vorticity, interval)
            frames.append(velocity_from_vorticity(vorticity))
        return torch.stack(frames, dim=1)
