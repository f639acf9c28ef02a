"""The argument parser of ``sample`` and ``evaluate``: argparse's refusals in the one-line form of every other.

argparse prints usage and ``si-lightning sample: error: argument --seeds: expected one argument``
and exits 2 by itself; here its refusal becomes a ``ConfigurationError`` for the option it names,
printed like any other bad setting: ``error: --seeds = None: expected one argument``.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from si_lightning.errors import ConfigurationError

_ARGUMENT = re.compile(r"^argument (?P<key>[^:]+): (?P<problem>.*)$", re.DOTALL)
_INVALID_VALUE = re.compile(r"^invalid (?P<kind>\w+) value: (?P<value>.*)$")
_INVALID_CHOICE = re.compile(r"^invalid choice: (?P<value>'[^']*') \(choose from (?P<choices>.*)\)$")
KINDS = {"int": "an integer", "float": "a number"}


def refusal(message: str, arguments: list[str]) -> ConfigurationError:
    """The ConfigurationError for one of argparse's error messages, naming the option and the value typed."""
    required = re.match(r"^the following arguments are required: (?P<keys>.+)$", message)
    if required:
        key = required.group("keys").split(",")[0].strip()
        return ConfigurationError(key, None, "a required option is missing")
    unknown = re.match(r"^unrecognized arguments: (?P<rest>.+)$", message)
    if unknown:
        key = unknown.group("rest").split()[0]
        value = key.partition("=")[2] or None
        return ConfigurationError(key.partition("=")[0], value, "an unknown option (see --help)")
    found = _ARGUMENT.match(message)
    if not found:
        return ConfigurationError("arguments", " ".join(arguments), message)
    key = found.group("key").split("/")[-1].strip()
    problem = found.group("problem").strip()
    invalid = _INVALID_VALUE.match(problem)
    if invalid:
        return ConfigurationError(key, invalid.group("value").strip("'"), KINDS.get(invalid.group("kind"), problem))
    choice = _INVALID_CHOICE.match(problem)
    if choice:
        return ConfigurationError(key, choice.group("value").strip("'"), f"one of {choice.group('choices')}")
    return ConfigurationError(key, None, problem)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that raises a ConfigurationError where argparse would print usage and exit."""

    def error(self, message: str) -> NoReturn:
        raise refusal(message, sys.argv[1:])
