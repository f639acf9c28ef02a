"""The errors a user is told about in one line, and the exit statuses of the `si-lightning` command.

A ``ConfigurationError`` names the setting (its full dotted key), the value given and what was
expected; the command prints it as ``error: <key> = <value>: <expected>`` and exits with status 2.
Any other failure at run time exits with status 1.
"""

from __future__ import annotations

from typing import Any

EXIT_SUCCESS = 0
EXIT_RUNTIME_ERROR = 1
EXIT_CONFIGURATION_ERROR = 2


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
