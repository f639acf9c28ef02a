"""Subcommands of `si-lightning` beside LightningCLI's fit/validate/test.

``COMMANDS`` maps a subcommand name to the module that implements it; each such module has
``main(arguments: list[str], debug: bool = False) -> int`` returning the exit status (errors.EXIT_*);
``debug`` prints the traceback of a refused setting before its one line.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "sample": "si_lightning.commands.sample",
    "evaluate": "si_lightning.commands.evaluate",
    "forecast": "si_lightning.commands.forecast",
}
