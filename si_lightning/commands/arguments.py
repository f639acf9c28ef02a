"""The argument parser of ``sample`` and ``evaluate``: jsonargparse, like ``fit``, with one-line refusals.

Each option can be given on the command line (``--num-samples 64``) or in YAML files read with
``-c FILE`` / ``--config FILE`` (its key with underscores: ``num_samples: 64``); several files and
options overlay in order, the last one winning, and ``--print_config`` prints the full config (a file
``-c`` reads back). Values are typed (``PositiveInt``, ``PositiveFloat``, ...) and checked as they
are parsed.

jsonargparse reports a bad value as ``Parser key "batch_size": Not of type PositiveInt: ...``; here
each refusal becomes a ``ConfigurationError`` naming the option as it is typed on the command line,
printed as one line, ``error: --batch-size = 0: an integer >= 1``, with exit status 2
(``report_configuration_errors``).
"""

from __future__ import annotations

import re
import sys
import traceback
import types
import typing
from argparse import ArgumentError
from collections.abc import Callable
from typing import Any, Union

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt

from si_lightning.config_errors import from_parse_error
from si_lightning.errors import EXIT_CONFIGURATION_ERROR, ConfigurationError

# What a typed option expects, for its one-line refusal (a type missing here: jsonargparse's own words).
EXPECTED: dict[Any, str] = {
    PositiveInt: "an integer >= 1",
    NonNegativeInt: "an integer >= 0",
    PositiveFloat: "a finite number > 0",
    int: "an integer",
    float: "a finite number",
}
# A list given as one comma-separated word (``--ode-steps 5,10``) or, in a config file, as a YAML list.
CommaList = str | int | float | list[int | float | str]
_ARGUMENT = re.compile(r"^argument (?P<key>[^:]+): (?P<problem>.*)$", re.DOTALL)
_INVALID_CHOICE = re.compile(r"^invalid choice: (?P<value>'[^']*') \(choose from (?P<choices>.*)\)$")
_PARSER_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)"')
_GIVEN_VALUE = re.compile(r"(?:Given value|Got value):\s*(?P<value>.*)$", re.MULTILINE)
_NOT_AMONG_CHOICES = re.compile(r"'(?P<value>[^']*)' not among choices \((?P<choices>.*)\)")
_NOT_CONFORMING = re.compile(r"Not of type \w+: (?P<value>.*?) does not conform")


def comma_text(value: Any) -> str | None:
    """A ``CommaList`` value as the comma-separated text the commands read (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


class CommandParser(ArgumentParser):
    """A jsonargparse parser with ``-c/--config`` and ``--print_config`` that raises ConfigurationErrors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """jsonargparse builds parsers of this class for nested blocks (a sampler's init_args) too."""
        kwargs.setdefault("exit_on_error", False)
        super().__init__(*args, **kwargs)

    @classmethod
    def for_command(cls, prog: str, description: str) -> CommandParser:
        """The parser of a command, with ``-c/--config`` (and so ``--print_config``)."""
        parser = cls(prog=prog, description=description)
        parser.add_argument(
            "-c", "--config", action=ActionConfigFile, help="YAML file of options (keys with underscores); repeatable"
        )
        return parser

    def parse(self, arguments: list[str]) -> Namespace:
        """The parsed options, or a ConfigurationError naming the option that is wrong."""
        try:
            return self.parse_args(arguments)
        except ArgumentError as error:
            raise self.refusal(str(error), arguments) from None

    def option_of(self, name: str) -> str:
        """The command-line spelling (``--batch-size``) of a destination (``batch_size``) or an option."""
        for action in self._actions:
            if name == action.dest or name in action.option_strings:
                spellings = [option for option in action.option_strings if not option.endswith("+")]  # list appends
                return max(spellings, key=len, default=name)
        return name if name.startswith("-") else f"--{name.replace('_', '-')}"

    def expected_of(self, dest: str) -> str | None:
        """What the option ``dest`` expects, from its type (``PositiveInt | None``: an integer >= 1)."""
        action = next((action for action in self._actions if action.dest == dest), None)
        kind = getattr(action, "_typehint", None) or getattr(action, "type", None)
        if typing.get_origin(kind) in (Union, types.UnionType):
            members = [member for member in typing.get_args(kind) if member is not type(None)]
            kind = members[0] if len(members) == 1 else kind
        return EXPECTED.get(kind)

    def refusal(self, message: str, arguments: list[str]) -> ConfigurationError:
        """The ConfigurationError for one of jsonargparse's (or argparse's) error messages."""
        required = re.match(r"^the following arguments are required: (?P<keys>.+)$", message)
        if required:
            key = self.option_of(required.group("keys").split(",")[0].strip())
            return ConfigurationError(key, None, "a required option is missing")
        not_accepted = re.match(r"^Option '(?P<key>[^']+)' is not accepted", message)
        if not_accepted:  # a config file's key that is no option
            return ConfigurationError(not_accepted.group("key"), None, "an unknown option (see --help)")
        unknown = re.match(r"^unrecognized arguments: (?P<rest>.+)$", message, re.DOTALL)
        if unknown:
            words = unknown.group("rest").split()
            option, _, value = words[0].partition("=")
            if not value and len(words) > 1 and not words[1].startswith("-"):  # --option value
                value = words[1]
            return ConfigurationError(option, value or None, "an unknown option (see --help)")
        found = _ARGUMENT.match(message)
        if found:
            key = self.option_of(found.group("key").split("/")[-1].strip())
            problem = found.group("problem").strip()
            choice = _INVALID_CHOICE.match(problem)
            if choice:
                return ConfigurationError(key, choice.group("value").strip("'"), f"one of {choice.group('choices')}")
            return ConfigurationError(key, None, problem)
        parsed = _PARSER_KEY.match(message)
        if parsed and parsed.group("key") != "config":
            dest = parsed.group("key").split(".")[0]
            key = self.option_of(dest)
            choice = _NOT_AMONG_CHOICES.search(message)  # a config file's value outside the choices
            if choice:
                return ConfigurationError(key, choice.group("value"), f"one of {choice.group('choices')}")
            value = typed_value(key, arguments, message)
            expected = self.expected_of(dest) or from_parse_error(message, arguments).expected
            return ConfigurationError(key, value, expected)
        refused = from_parse_error(message, arguments)
        key = refused.key if refused.key != "config" or not parsed else "--config"
        key = key if key.startswith("-") else self.option_of(key)
        return ConfigurationError(key, refused.value, refused.expected)


def typed_value(key: str, arguments: list[str], message: str) -> str | None:
    """The value of ``key`` as typed (its last occurrence on the command line), else as the message shows it."""
    value = None
    for index, argument in enumerate(arguments):
        if argument == key and index + 1 < len(arguments):
            value = arguments[index + 1]
        elif argument.startswith(f"{key}="):
            value = argument.partition("=")[2]
    if value is not None:
        return value
    shown = _GIVEN_VALUE.search(message) or _NOT_CONFORMING.search(message)
    return shown.group("value").strip() if shown else None


def report_configuration_errors(run: Callable[[list[str]], int], arguments: list[str], debug: bool = False) -> int:
    """``run(arguments)``; a ConfigurationError becomes one stderr line and exit status 2.

    The line is ``error: key = value: expected`` (the value as typed, unquoted); with ``debug`` (the
    command line's ``--debug`` or ``SI_LIGHTNING_DEBUG``, see ``errors.split_debug_flag``) the
    traceback comes before it.
    """
    try:
        return run(arguments)
    except ConfigurationError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error.key} = {error.value}: {error.expected}", file=sys.stderr)
        return EXIT_CONFIGURATION_ERROR
