"""Free-energy estimators from work values (docs/math.md section 10): exponential averages and BAR.

Works are in kT. With forward works W_F (from rho_a) and reverse works W_R (from rho_b) that satisfy
the Crooks relation p_F(W) / p_R(-W) = exp(W - Delta F):

    Zwanzig / Jarzynski:  Delta F = -log E[exp(-W_F)]        (and  Delta F = log E[exp(-W_R)])
    Jensen bounds:        -E[W_R] <= Delta F <= E[W_F]
    BAR (Bennett):        sum_F f(W_F + M - Delta F) = sum_R f(W_R - M + Delta F),  f(x) = 1 / (1 + e^x),
                          M = log(n_F / n_R),

BAR's standard error is Bennett's asymptotic one, the same formula as pymbar's ``bar`` with
``uncertainty_method="BAR"`` (tests/test_free_energy_baselines.py checks the two agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp
from torch import Tensor


@dataclass(frozen=True)
class Estimate:
    """One estimate of Delta F (kT) and its standard error (nan with a single work value)."""

    delta_f: float
    stderr: float


def _works(name: str, works: Tensor | np.ndarray) -> np.ndarray:
    values = np.asarray(works.detach().cpu().double() if isinstance(works, Tensor) else works, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"{name} must be a non-empty 1-D array of finite works, got shape {values.shape}")
    return values


def exponential_average(works: Tensor | np.ndarray) -> Estimate:
    """-log mean exp(-W) over works (n,), with the delta-method standard error.

    The standard error is std(e^{-W}) / (sqrt(n) mean(e^{-W})), the first-order error of the log of a
    mean; it is itself noisy (and too small) when a few works dominate the average.
    """
    values = _works("works", works)
    shift = values.min()  # e^{-(W - min W)} <= 1: no overflow
    weights = np.exp(-(values - shift))
    mean = weights.mean()
    stderr = float(weights.std(ddof=1) / (mean * math.sqrt(values.size))) if values.size > 1 else math.nan
    return Estimate(float(shift - math.log(mean)), stderr)


def forward_estimate(forward_works: Tensor | np.ndarray) -> Estimate:
    """Delta F = -log E[exp(-W_F)] from works (n,) of samples of rho_a."""
    return exponential_average(forward_works)


def backward_estimate(reverse_works: Tensor | np.ndarray) -> Estimate:
    """Delta F = log E[exp(-W_R)] from works (n,) of samples of rho_b."""
    estimate = exponential_average(reverse_works)
    return Estimate(-estimate.delta_f, estimate.stderr)


def _log_fermi(x: np.ndarray) -> np.ndarray:
    """log f(x) = -log(1 + e^x), stable for any x."""
    return -np.logaddexp(0.0, x)


def bennett(forward_works: Tensor | np.ndarray, reverse_works: Tensor | np.ndarray) -> Estimate:
    """Bennett's acceptance ratio: the Delta F that balances the two sides, and its asymptotic error.

    Args:
        forward_works: W_F (n_F,), works of samples of rho_a (rho_a -> rho_b).
        reverse_works: W_R (n_R,), works of samples of rho_b (rho_b -> rho_a).
    """
    forward = _works("forward_works", forward_works)
    reverse = _works("reverse_works", reverse_works)
    shift = math.log(forward.size / reverse.size)

    def balance(delta_f: float) -> float:
        # Increasing in Delta F: the forward side grows, the reverse side shrinks.
        forward_side = logsumexp(_log_fermi(forward + shift - delta_f))
        return float(forward_side - logsumexp(_log_fermi(reverse - shift + delta_f)))

    low = min(forward.min(), -reverse.max()) - abs(shift) - 40.0
    high = max(forward.max(), -reverse.min()) + abs(shift) + 40.0
    delta_f = float(brentq(balance, low, high, xtol=1e-12, rtol=1e-14, maxiter=500))
    forward_fermi = np.exp(_log_fermi(forward + shift - delta_f))
    reverse_fermi = np.exp(_log_fermi(reverse - shift + delta_f))
    variance = forward_fermi.var() / (forward.size * forward_fermi.mean() ** 2) + reverse_fermi.var() / (
        reverse.size * reverse_fermi.mean() ** 2
    )
    return Estimate(delta_f, float(math.sqrt(max(variance, 0.0))))


def pymbar_bennett(forward_works: Tensor | np.ndarray, reverse_works: Tensor | np.ndarray) -> Estimate:
    """BAR through pymbar (the optional extra ``free-energy``): ``pymbar.other_estimators.bar``."""
    try:
        from pymbar.other_estimators import bar
    except ImportError as error:
        raise ImportError(
            "bar_solver = 'pymbar' needs pymbar: pip install 'si_lightning[free-energy]' (or pip install pymbar)"
        ) from error
    forward = _works("forward_works", forward_works)
    reverse = _works("reverse_works", reverse_works)
    result = bar(forward, reverse, uncertainty_method="BAR")
    return Estimate(float(result["Delta_f"]), float(result["dDelta_f"]))


BAR_SOLVERS = {"own": bennett, "pymbar": pymbar_bennett}
