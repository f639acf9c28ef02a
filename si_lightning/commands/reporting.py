"""One line for a bad setting: ``error: key = value: expected`` on stderr and exit status 2.

Each subcommand's ``main`` goes through ``report_configuration_errors`` so that a user sees the
key, the value and what was expected, never a traceback (``--debug`` shows the traceback too).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from si_lightning.errors import EXIT_CONFIGURATION_ERROR, ConfigurationError


def report_configuration_errors(run: Callable[[list[str]], int], arguments: list[str]) -> int:
    """``run(arguments)``; a ConfigurationError becomes one stderr line and exit status 2."""
    try:
        return run(arguments)
    except ConfigurationError as error:
        if "--debug" in arguments:
            traceback.print_exc()
        print(f"error: {error.key} = {error.value}: {error.expected}", file=sys.stderr)
        return EXIT_CONFIGURATION_ERROR
