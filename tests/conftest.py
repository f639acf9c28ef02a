"""Shared fixtures: every interpolant of docs/math.md section 1 and a 2-D Gaussian mixture oracle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from si_lightning.analytic import GaussianMixture
from si_lightning.interpolants import Interpolant

# (schedule, gamma, gamma_scale): every schedule with each gamma family it accepts.
INTERPOLANT_CASES = [
    ("linear", "brownian", 1.0),
    ("linear", "quadratic", 1.0),
    ("linear", "sine-squared", 0.5),
    ("linear", "zero", 1.0),
    ("trig", "brownian", 0.5),
    ("trig", "quadratic", 2.0),
    ("trig", "sine-squared", 1.0),
    ("trig", "zero", 1.0),
    ("vp-trig", "brownian", 1.0),
    ("vp-trig", "quadratic", 1.0),
    ("vp-trig", "sine-squared", 0.5),
    ("vp-trig", "zero", 1.0),
    ("encoder-decoder", "sine-squared", 1.0),
    ("one-sided-linear", "zero", 1.0),
    ("one-sided-trig", "zero", 1.0),
    ("sbdm", "zero", 1.0),
    ("vp", "zero", 1.0),
    ("mirror", "brownian", 1.0),
    ("mirror", "quadratic", 1.0),
    ("mirror", "sine-squared", 0.5),
    ("goub", "goub", 0.5),
]


def case_id(case: tuple[str, str, float]) -> str:
    return f"{case[0]}-{case[1]}-{case[2]}"


def make_interpolant(case: tuple[str, str, float], **kwargs) -> Interpolant:
    schedule, gamma, scale = case
    return Interpolant(schedule=schedule, gamma=gamma, gamma_scale=scale, **kwargs)


def mixture_2d(interpolant: Interpolant, dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """Three anisotropic components in 2-D, well separated."""
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=dtype)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.5], [0.5, -2.0]], dtype=dtype)
    covariances = torch.tensor(
        [[[0.30, 0.10], [0.10, 0.20]], [[0.20, -0.05], [-0.05, 0.40]], [[0.25, 0.0], [0.0, 0.15]]], dtype=dtype
    )
    return GaussianMixture(weights, means, covariances, interpolant)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# `make test` runs two workers with --dist loadgroup: every test is scheduled on its own, except
# those sharing an expensive module- or session-scoped fixture (a training run through the
# executable, Inception weights), which stay together on one worker so the fixture runs once.
# The first matching prefix decides. The commands' tests are two groups, each training its own digits
# checkpoint once (about 15 s), so neither worker runs all of them.
SHARED_FIXTURE_GROUPS = {
    "tests/commands/test_checkpoint_refusal.py": None,  # no shared fixture
    "tests/commands/test_decoding.py": None,
    "tests/commands/test_evaluate.py": "commands-evaluate",
    "tests/commands/test_command_fuzz.py": "commands-evaluate",
    "tests/commands/": "commands",
    "tests/integration/test_jobs.py": "jobs",
    "tests/integration/test_wandb.py": "wandb",
    "tests/test_metrics_digits.py": "metrics-digits",
    "tests/test_metrics_inception.py": "metrics-inception",
}
REPOSITORY = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: the workers already fill the cores
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        relative = item.path.resolve().relative_to(REPOSITORY).as_posix()
        group = next((group for prefix, group in SHARED_FIXTURE_GROUPS.items() if relative.startswith(prefix)), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
