"""The pseudo-spectral Navier-Stokes solver against exact solutions and its invariants."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.physics import (
    KolmogorovFlow,
    divergence,
    enstrophy,
    kinetic_energy,
    taylor_green_vorticity,
    velocity_from_vorticity,
)


def test_taylor_green_vortex_decays_as_exp_minus_2_nu_k_squared_t() -> None:
    # Taylor-Green with k = 2 per direction: |k|^2 = 2 k^2 = 8, so omega(t) = omega(0) exp(-2 nu k^2 t) and
    # the energy decays as exp(-4 nu k^2 t). The integrating factor integrates the linear part exactly and
    # the advection of this vortex is zero, so the only error is rounding: about 1e-15 per step in float64,
    # 100 steps -> 1e-13; 1e-11 leaves room. A wrong sign or factor of the viscous term is off by > 1e-2.
    nu, k, duration = 0.05, 2, 1.0
    solver = KolmogorovFlow(size=16, viscosity=nu, drag=0.0, forcing_amplitude=0.0, time_step=0.01)
    initial = taylor_green_vorticity(16, k)
    final = solver.advance(initial, duration)
    expected = initial * math.exp(-2 * nu * k**2 * duration)
    assert torch.allclose(final, expected, rtol=0, atol=1e-11 * initial.abs().max())
    energy_ratio = kinetic_energy(velocity_from_vorticity(final)) / kinetic_energy(velocity_from_vorticity(initial))
    assert energy_ratio.item() == pytest.approx(math.exp(-4 * nu * k**2 * duration), rel=1e-11)


def test_velocity_of_taylor_green_is_the_closed_form() -> None:
    size, k = 16, 1
    coordinate = torch.arange(size, dtype=torch.float64) * (2 * math.pi / size)
    y, x = torch.meshgrid(coordinate, coordinate, indexing="ij")
    velocity = velocity_from_vorticity(taylor_green_vorticity(size, k))
    assert torch.allclose(velocity[0], torch.sin(k * x) * torch.cos(k * y), atol=1e-13)
    assert torch.allclose(velocity[1], -torch.cos(k * x) * torch.sin(k * y), atol=1e-13)
    assert kinetic_energy(velocity).item() == pytest.approx(0.25, rel=1e-13)


def test_laminar_kolmogorov_flow_approaches_its_steady_state() -> None:
    # From rest, omega(t) = omega_s (1 - exp(-r t)) with omega_s = -A k cos(k y) / r and r = nu k^2 + mu: the
    # advection of a y-only field is zero. The forcing goes through RK4 inside the integrating factor, whose
    # global error is about t h^4 r^5 / 2880 relative (r = 0.5, h = 0.05: < 1e-10); 1e-8 leaves room, while
    # a wrong sign or a missing factor k of the forcing is off by order 1.
    nu, mu, k, amplitude, duration = 0.025, 0.1, 2, 1.5, 2.0
    solver = KolmogorovFlow(size=16, viscosity=nu, drag=mu, forcing_wavenumber=k, forcing_amplitude=amplitude,
                            time_step=0.05)  # fmt: skip
    final = solver.advance(torch.zeros(16, 16, dtype=torch.float64), duration)
    rate = nu * k**2 + mu
    y = (torch.arange(16, dtype=torch.float64) * (2 * math.pi / 16))[:, None].expand(16, 16)
    expected = -amplitude * k * torch.cos(k * y) / rate * (1 - math.exp(-rate * duration))
    assert torch.allclose(final, expected, rtol=0, atol=1e-8 * expected.abs().max())


def _energy_drift(time_step: float, initial: torch.Tensor, duration: float) -> tuple[float, float]:
    solver = KolmogorovFlow(size=32, viscosity=0.0, drag=0.0, forcing_amplitude=0.0, time_step=time_step)
    start, end = velocity_from_vorticity(initial), velocity_from_vorticity(solver.advance(initial, duration))
    energy = (kinetic_energy(end) / kinetic_energy(start) - 1).abs().max().item()
    squared_vorticity = (enstrophy(end) / enstrophy(start) - 1).abs().max().item()
    return energy, squared_vorticity


def test_energy_and_enstrophy_conserved_without_forcing_and_viscosity_to_rk4_order() -> None:
    # The 2/3-truncated advection conserves energy and enstrophy exactly, so their drift is RK4's error:
    # O(h^4) in general, O(h^5) for a quadratic invariant of a skew-symmetric linear part (the energy error
    # of one RK4 step on y' = i w y is (h w)^6 / 72). Halving h must divide the drift by 2^4 to 2^5:
    # accept 12-40 (measured 28, 26, 23 for h = 0.08, 0.04, 0.02; a first- or second-order error gives 2-4).
    solver = KolmogorovFlow(size=32, viscosity=0.0, drag=0.0, forcing_amplitude=0.0)
    initial = torch.fft.irfft2(torch.fft.rfft2(solver.random_vorticity(2, torch.Generator().manual_seed(0)))
                               * solver.dealias, s=(32, 32))  # fmt: skip
    coarse = _energy_drift(0.04, initial, 2.0)
    fine = _energy_drift(0.02, initial, 2.0)
    for coarse_drift, fine_drift in zip(coarse, fine, strict=True):
        assert coarse_drift < 1e-5
        assert 12 < coarse_drift / fine_drift < 40


def test_trajectories_are_deterministic_per_seed_and_divergence_free() -> None:
    solver = KolmogorovFlow(size=16, viscosity=0.02, time_step=0.05)
    first = solver.trajectories(2, seed=3, spin_up=0.5, snapshots=3, interval=0.25)
    again = solver.trajectories(2, seed=3, spin_up=0.5, snapshots=3, interval=0.25)
    other = solver.trajectories(2, seed=4, spin_up=0.5, snapshots=3, interval=0.25)
    assert first.shape == (2, 3, 2, 16, 16)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert divergence(first).abs().max().item() < 1e-12


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"size": 15}, "size = 15: expected an even integer >= 8"),
        ({"viscosity": -1.0}, "viscosity = -1.0: expected nu >= 0"),
        ({"drag": -0.1}, "drag = -0.1: expected mu >= 0"),
        ({"size": 16, "forcing_wavenumber": 6}, "forcing_wavenumber = 6: expected an integer in [1, 5.3) for N = 16"),
        ({"time_step": 0.0}, "time_step = 0.0: expected h > 0"),
        ({"forcing_amplitude": math.nan}, "forcing_amplitude = nan: expected a finite number"),
    ],
)
def test_bad_settings_are_one_line_errors(settings: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        KolmogorovFlow(**settings)
    assert str(error.value) == message


def test_a_duration_off_the_step_grid_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^interval = 0.015: expected a multiple >= 0 of time_step = 0.01$"):
        solver = KolmogorovFlow(size=8, forcing_wavenumber=1, time_step=0.01)
        solver.trajectories(1, 0, spin_up=0.0, snapshots=2, interval=0.015)
