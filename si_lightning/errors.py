"""The errors a user is told about in one line, and the exit statuses of the `si-lightning` command.

A ``ConfigurationError`` names the setting (its full dotted key), the value given and what was
expected; the command prints it as ``error: <key> = <value>: <expected>`` and exits with status 2.
Any other failure at run time exits with status 1 after one ``error: ...`` line; Ctrl-C with 130.
The traceback is printed too with ``--debug`` on the command line or ``SI_LIGHTNING_DEBUG=1`` in the
environment.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TextIO

EXIT_SUCCESS = 0
EXIT_RUNTIME_ERROR = 1
EXIT_CONFIGURATION_ERROR = 2
EXIT_INTERRUPTED = 128 + 2  # the shell's status for a process ended by SIGINT (Ctrl-C)

DEBUG_FLAG = "--debug"
DEBUG_ENVIRONMENT_VARIABLE = "SI_LIGHTNING_DEBUG"


class ConfigurationError(ValueError):
    """A bad setting, found before any work is done: ``key = value: expected``."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key} = {value!r}: {expected}")


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss, gradient or weight; the message is one line saying where.

    It names the global step, the batch index and the t-range of the batch (or the tensor of a
    refused checkpoint) and the last finite checkpoint on disk. A runtime failure: exit status 1.
    """


def one_line(text: str, limit: int = 600) -> str:
    """``text`` on a single line: its lines joined by "; ", inner spaces collapsed, cut at ``limit`` characters."""
    joined = "; ".join(" ".join(line.split()) for line in str(text).splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def split_debug_flag(arguments: list[str]) -> tuple[list[str], bool]:
    """(the arguments without ``--debug``, whether tracebacks are wanted: the flag or SI_LIGHTNING_DEBUG set)."""
    environment = os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "").strip().lower()
    debug = DEBUG_FLAG in arguments or environment not in ("", "0", "false", "no", "off")
    return [argument for argument in arguments if argument != DEBUG_FLAG], debug


def run_reporting_errors(command: Callable[[], int | None], debug: bool = False, stream: TextIO | None = None) -> int:
    """Run ``command`` and turn its outcome into an exit status, with one ``error:`` line on failure.

    0 (or the command's own status) on success; 2 after a ``ConfigurationError``; 1 after any other
    exception, whose type and first line are printed. ``SystemExit`` keeps its status (``--help``).
    The error line is the last line written; with ``debug`` the traceback comes before it.
    """
    stream = sys.stderr if stream is None else stream
    try:
        status = command()
    except SystemExit as exit_request:
        code = exit_request.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        print(f"error: {one_line(str(code))}", file=stream)  # sys.exit("message"): a failure
        return EXIT_RUNTIME_ERROR
    except ConfigurationError as error:
        _report(error, f"error: {error.key} = {error.value!r}: {one_line(error.expected)}", debug, stream)
        return EXIT_CONFIGURATION_ERROR
    except KeyboardInterrupt as error:  # Ctrl-C outside training (training stops with a checkpoint instead)
        _report(error, "error: interrupted", debug, stream)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every failure becomes an exit status and one line
        hint = "" if debug else f" (rerun with {DEBUG_FLAG} for the traceback)"
        _report(error, f"error: {type(error).__name__}: {one_line(str(error))}{hint}", debug, stream)
        return EXIT_RUNTIME_ERROR
    return EXIT_SUCCESS if status is None else int(status)


def _report(error: BaseException, line: str, debug: bool, stream: TextIO) -> None:
    if debug:
        traceback.print_exception(error, file=stream)
    stream.flush()
    print(line, file=stream, flush=True)
