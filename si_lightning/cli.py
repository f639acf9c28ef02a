"""The `si-lightning` command: LightningCLI with the data's shape linked into the backbone.

    si-lightning fit -c configs/experiments/digits.yaml [-c overlay.yaml] [--trainer.max_steps 100]

The data module decides the data shape, the class count and the extra conditioning channels of its
coupling; ``link_arguments`` carries them into the backbone (and the coupling's kind of base into
the interpolant) when the classes are built, so a config never states them twice. Every unknown key
is an error (jsonargparse), and the full config is written once, on rank 0, into the run directory.

With a W&B logger (``-c configs/logger/wandb.yaml``) the run is tracked: the full config and the git
commit are logged (``RunTracking``), the run goes offline when no ``WANDB_API_KEY`` is set, and
``fit --ckpt_path X`` continues the W&B run whose id is stored in X.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from collections.abc import Iterator
from operator import attrgetter
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from si_lightning.callbacks.artifacts import run_directory
from si_lightning.callbacks.preemption import Preemption, preemption_summary
from si_lightning.callbacks.tracking import RunTracking, choose_wandb_mode, resume_wandb_run
from si_lightning.commands import COMMANDS
from si_lightning.errors import EXIT_SUCCESS
from si_lightning.files import write_atomically
from si_lightning.module import InterpolantModule
from si_lightning.runs import resolve_last_checkpoint

LINKED_BACKBONE_ATTRIBUTES = ("data_shape", "num_classes", "cond_channels")


def _numbers_named(config: Any, key: str, path: str = "") -> Iterator[tuple[str, float]]:
    """Every (dotted path, value) under ``config`` whose last key is ``key`` and value a number.

    A jsonargparse Namespace yields flattened dotted keys from ``items()``; plain dicts nest.
    """
    items = config.items() if hasattr(config, "items") else ()
    for name, value in items:
        where = f"{path}.{name}" if path else str(name)
        if str(name).split(".")[-1] == key and isinstance(value, (int, float)) and not isinstance(value, bool):
            yield where, value
        elif hasattr(value, "items"):
            yield from _numbers_named(value, key, where)


class RunDirectorySaveConfig(SaveConfigCallback):
    """Writes the full config once, on rank 0, atomically, into the run directory (``run_directory``)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        directory = run_directory(trainer)  # a collective: every rank calls it
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            write_atomically(directory / self.config_filename, text.encode())
        self.already_saved = trainer.strategy.broadcast(True)


class InterpolantCLI(LightningCLI):
    """LightningCLI for InterpolantModule and any LightningDataModule of si_lightning.data."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for attribute in LINKED_BACKBONE_ATTRIBUTES:
            parser.link_arguments(
                "data",
                f"model.backbone.init_args.{attribute}",
                compute_fn=attrgetter(attribute),
                apply_on="instantiate",
            )
        parser.link_arguments(
            "data",
            "model.interpolant.init_args.gaussian_base",
            compute_fn=attrgetter("gaussian_base"),
            apply_on="instantiate",
        )

    def before_instantiate_classes(self) -> None:
        """Refuse a negative or non-finite learning rate at parse time, naming where it is.

        Then settle the W&B logger before it is built: offline without an API key, and on a resume
        the run id stored in the checkpoint.
        """
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        for where, value in _numbers_named(config.get("model", {}), "lr", "model"):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{where} = {value!r}: a learning rate must be a finite number >= 0")
        if self.subcommand == "fit":
            resolve_last_checkpoint(config)  # before the logger exists: it may take the run's version
        choose_wandb_mode(config)
        resume_wandb_run(config)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with a ``RunTracking`` callback that logs this run's full config and git commit."""
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config.get(str(self.subcommand), self.config)
        dump = json.loads(self._parser(self.subcommand).dump(config, format="json"))  # entries left None are omitted
        trackers = [callback for callback in trainer.callbacks if isinstance(callback, RunTracking)]
        for tracker in trackers:  # one listed in the config: give it the config rather than adding a second
            tracker.config = tracker.config if tracker.config is not None else dump
        if not trackers:
            trainer.callbacks.append(RunTracking(config=dump))
        if not any(isinstance(callback, Preemption) for callback in trainer.callbacks):
            trainer.callbacks.append(Preemption())  # SIGTERM / SLURM's SIGUSR1: checkpoint, then stop
        return trainer


def build_cli(args: list[str] | None = None, run: bool = True) -> InterpolantCLI:
    """The LightningCLI of ``si-lightning fit/validate/test`` (``run=False``: parse and build only)."""
    return InterpolantCLI(
        InterpolantModule,
        LightningDataModule,
        subclass_mode_data=True,
        save_config_callback=RunDirectorySaveConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> int:
    """Entry point of the `si-lightning` console script; returns the exit status (errors.EXIT_*).

    ``si-lightning <command> ...`` runs one of ``COMMANDS`` (sample, evaluate) when named, else LightningCLI.
    """
    arguments = list(sys.argv[1:] if args is None else args)
    if arguments and arguments[0] in COMMANDS:
        return importlib.import_module(COMMANDS[arguments[0]]).main(arguments[1:])
    try:
        build_cli(arguments)
    except SIGTERMException as stop:  # Lightning's clean exit on SIGTERM would report success
        status, line = preemption_summary(stop)
        print(f"si-lightning: {line}", file=sys.stderr)
        return status
    return EXIT_SUCCESS


if __name__ == "__main__":
    sys.exit(main())
