"""Subcommands of `si-lightning` beside LightningCLI's fit/validate/test.

``COMMANDS`` maps a subcommand name to the module that implements it; each such module has
``main(arguments: list[str]) -> int`` returning the exit status (errors.EXIT_*).
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "sample": "si_lightning.commands.sample",
    "evaluate": "si_lightning.commands.evaluate",
    "forecast": "si_lightning.commands.forecast",
}
