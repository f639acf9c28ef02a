"""``--path SCHEDULE[:GAMMA]``: sample a checkpoint along another interpolant, exactly.

A model trained on one Gaussian-base interpolant determines the fields of every other one with the
same N(0, I) base and data (``si_lightning.sampling.convert_interpolant``: match the log-SNR, rescale),
at one network evaluation per field evaluation. ``--path trig`` keeps the schedule's default gamma,
``--path linear:brownian`` names it. The path is recorded in ``record.json`` as
``{"schedule": ..., "gamma": ...}``.
"""

from __future__ import annotations

from typing import Any

from si_lightning.errors import ConfigurationError
from si_lightning.interpolants import GAMMAS, SCHEDULES, Interpolant
from si_lightning.sampling.conversion import convert_interpolant
from si_lightning.sampling.fields import Fields


def path_interpolant(path: dict[str, Any]) -> Interpolant:
    """The target interpolant of a recorded path ``{"schedule": name, "gamma": name}``."""
    return Interpolant(schedule=path["schedule"], gamma=path["gamma"])


def parse_path(text: str | None, key: str = "--path") -> dict[str, Any] | None:
    """``SCHEDULE[:GAMMA]`` as the recorded mapping, its names checked (None: the checkpoint's own path)."""
    if text is None:
        return None
    schedule, _, gamma = str(text).partition(":")
    expected = f"SCHEDULE[:GAMMA] with a schedule of {', '.join(SCHEDULES)} and a gamma of {', '.join(GAMMAS)}"
    if schedule not in SCHEDULES or (gamma and gamma not in GAMMAS):
        raise ConfigurationError(key, text, expected)
    try:
        interpolant = Interpolant(schedule=schedule, gamma=gamma or None)
    except ValueError as error:
        raise ConfigurationError(key, text, f"a valid interpolant ({error})") from None
    return {"schedule": schedule, "gamma": interpolant.gamma_name}  # the schedule's default gamma, named


def check_path(fields: Fields, path: dict[str, Any] | None, text: str | None, key: str = "--path") -> None:
    """Refuse a path the checkpoint's fields cannot be converted to (not a Gaussian base, no monotone SNR)."""
    if path is None:
        return
    try:
        convert_interpolant(fields, path_interpolant(path))
    except ValueError as error:
        raise ConfigurationError(key, text, f"a path the checkpoint converts to ({error})") from None


def along_path(fields: Fields, path: dict[str, Any] | None) -> Fields:
    """``fields`` converted to the recorded path (unchanged for None)."""
    return fields if path is None else convert_interpolant(fields, path_interpolant(path))
