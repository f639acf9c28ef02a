"""Refusals found while the run is built, each turned into a ConfigurationError naming the setting typed.

torch refuses optimizer settings with messages such as "Invalid beta parameter at index 0: 1.5",
which name no config key (and mention "lr" nowhere near the fault); Lightning refuses an
accelerator whose package is missing with a ModuleNotFoundError. Both become one line naming the
full key and the value the user gave.
"""

from __future__ import annotations

from typing import Any

from si_lightning.config_errors import from_exception
from si_lightning.errors import ConfigurationError, one_line

# Words of torch's optimizer refusals ("Invalid beta parameter at index 0: 1.5") and the setting they are about.
OPTIMIZER_WORDS = {
    "beta": "betas",
    "learning rate": "lr",
    "epsilon": "eps",
    "weight_decay": "weight_decay",
    "momentum": "momentum",
    "dampening": "dampening",
}


def optimizer_error(error: ValueError, config: Any) -> ConfigurationError:
    """A ConfigurationError naming the optimizer setting torch refused (betas, lr, eps, ...), with its value."""
    message = str(error)
    for word, name in OPTIMIZER_WORDS.items():
        if f"invalid {word}" in message.lower():
            arguments = config.get("model", {}).get("optimizer", {}).get("init_args", {}) or {}
            value = arguments.get(name) if hasattr(arguments, "get") else None
            value = list(value) if isinstance(value, tuple) else value
            return ConfigurationError(f"model.optimizer.init_args.{name}", value, one_line(message))
    return from_exception(error, config, "model.optimizer")


USUAL_ACCELERATORS = (None, "auto", "cpu", "gpu", "cuda", "mps")


def missing_package_error(error: ImportError, config: Any) -> ConfigurationError:
    """The trainer setting that needs a package this environment lacks (``accelerator: tpu`` needs torch_xla).

    The accelerator, unless it is one every install has; then the strategy it was given.
    """
    trainer = config.get("trainer") if hasattr(config, "get") else None
    trainer = trainer if hasattr(trainer, "get") else {}
    strategy = trainer.get("strategy")
    usual = trainer.get("accelerator") in USUAL_ACCELERATORS
    key = "strategy" if usual and isinstance(strategy, str) and strategy != "auto" else "accelerator"
    message = one_line(str(error)).split(" HINT:")[0]
    return ConfigurationError(f"trainer.{key}", trainer.get(key), f"one this environment supports ({message})")


def unavailable_accelerator_error(error: Exception, config: Any) -> ConfigurationError | None:
    """``trainer.accelerator`` when Lightning's refusal names its value ("No supported gpu backend found!").

    The generic path finds no leaf named in such a message (it names the value, not the key) and would
    report the bare ``trainer``; None when the message does not mention the accelerator given.
    """
    trainer = config.get("trainer") if hasattr(config, "get") else None
    accelerator = trainer.get("accelerator") if hasattr(trainer, "get") else None
    message = one_line(str(error))
    if not isinstance(accelerator, str) or accelerator.lower() not in message.lower().replace("!", " ").split():
        return None
    return ConfigurationError("trainer.accelerator", accelerator, f"an accelerator this machine has ({message})")
