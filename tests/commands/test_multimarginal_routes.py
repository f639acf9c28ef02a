"""What ``si-lightning sample`` checks on a multimarginal checkpoint: the route (--path, or two edges via
--via) and a sampler the model's fields can drive."""

from __future__ import annotations

import argparse

import pytest

from si_lightning.commands.multimarginal import check_sampler, legs_of, requested
from si_lightning.commands.samplers import sampler_spec
from si_lightning.errors import ConfigurationError
from si_lightning.interpolants import MultimarginalInterpolant


def options(path: str | None = None, via: int | None = None, to_marginal: int = 3) -> argparse.Namespace:
    return argparse.Namespace(path=path, via=via, to_marginal=to_marginal)


def vertices(legs: list) -> list[int]:
    return [leg.start for leg in legs] + [legs[-1].end]


@pytest.mark.parametrize(
    ("path", "via", "expected"),
    [(None, None, [1, 3]), ("edge", None, [1, 3]), ("through-base", None, [1, 0, 3]), (None, 2, [1, 2, 3])],
)
def test_the_route_visits_the_named_vertices(path: str | None, via: int | None, expected: list[int]) -> None:
    assert vertices(legs_of(options(path, via), count=4, start=1)) == expected


@pytest.mark.parametrize(
    ("path", "via", "message"),
    [
        (None, 3, "--via = 3: a vertex other than the start 1 and the end 3"),
        (None, 1, "--via = 1: a vertex other than the start 1 and the end 3"),
        (None, 7, "--via = 7: a marginal of this model, 0..3"),
        ("edge", 2, "--path = 'edge': unset with --via (the route is the two edges via that vertex)"),
    ],
)
def test_a_bad_via_names_its_key(path: str | None, via: int, message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        legs_of(options(path, via), count=4, start=1)
    assert str(error.value) == message


def test_an_sde_needs_latent_noise() -> None:
    sde = sampler_spec("sde-euler-sigma-100")
    check_sampler(sde, MultimarginalInterpolant(num_marginals=4, gamma="brownian"), "sde-euler-sigma-100")
    check_sampler(sampler_spec("ode-heun-20"), MultimarginalInterpolant(num_marginals=4, gamma="zero"), "ode-heun-20")
    with pytest.raises(ConfigurationError) as error:
        check_sampler(sde, MultimarginalInterpolant(num_marginals=4, gamma="zero"), "sde-euler-sigma-100")
    assert str(error.value) == (
        "--sampler = 'sde-euler-sigma-100': an ODE sampler (ode-heun-cosine-50, dopri5, ...): the model has "
        "gamma = 0, no score"
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [({"path": "through-base"}, True), ({"via": 2}, True), ({"path": "linear"}, False), ({}, False)],
)
def test_sample_hands_a_route_to_the_multimarginal_command(settings: dict, expected: bool) -> None:
    # --path is shared with the two-marginal checkpoints' SCHEDULE[:GAMMA]: only a route name is multimarginal.
    names = {"path": None, "via": None, "from_marginal": None, "to_marginal": None}
    assert requested(argparse.Namespace(**{**names, **settings})) is expected
