"""The `si-lightning` command: LightningCLI with the data's shape linked into the backbone.

    si-lightning fit -c configs/experiments/digits.yaml [-c overlay.yaml] [--trainer.max_steps 100]

The data module decides the data shape, the class count and the extra conditioning channels of its
coupling; ``link_arguments`` carries them into the backbone (and the coupling's kind of base into
the interpolant) when the classes are built, so a config never states them twice. Every unknown key
is an error (jsonargparse), and the full config is written once, on rank 0, into the run directory.

With a W&B logger (``-c configs/logger/wandb.yaml``) the run is tracked: the full config and the git
commit are logged (``RunTracking``), the run goes offline when no ``WANDB_API_KEY`` is set, and
``fit --ckpt_path X`` continues the W&B run whose id is stored in X.

Exit statuses: 0 on success, 2 for a bad setting, 1 for a failure while running. A bad setting is
reported as one line, the last on stderr: ``error: <full.key.path> = <value>: <what was expected>``;
this covers parse errors, every ValueError/TypeError a class raises when it is built, a checkpoint
(``--ckpt_path``) that cannot be read, and what the data module refuses at setup, before training
starts. A failure during training prints ``error: <exception type>: <message>``. Tracebacks are
printed only with ``--debug`` (anywhere on the command line) or ``SI_LIGHTNING_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import json
import math
import pickle
import shutil
import sys
from argparse import ArgumentError
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from si_lightning.build_errors import missing_package_error, optimizer_error, unavailable_accelerator_error
from si_lightning.callbacks.artifacts import run_directory
from si_lightning.callbacks.guard import add_default_guard
from si_lightning.callbacks.preemption import Preemption, preemption_summary
from si_lightning.callbacks.tracking import RunTracking, choose_wandb_mode, resume_wandb_run
from si_lightning.checkpoint_fit import check_checkpoint_fits
from si_lightning.checkpoint_io import drop_checkpoints_in_dev_run, install_atomic_checkpoint_io
from si_lightning.checkpoints import SPECIAL_CHECKPOINTS, check_checkpoint
from si_lightning.checks import is_number
from si_lightning.commands import COMMANDS
from si_lightning.config_errors import from_exception, from_parse_error
from si_lightning.errors import (
    EXIT_INTERRUPTED,
    EXIT_SUCCESS,
    ConfigurationError,
    one_line,
    run_reporting_errors,
    split_debug_flag,
)
from si_lightning.files import write_atomically
from si_lightning.module import InterpolantModule
from si_lightning.retention import follow_retention_after_resume
from si_lightning.runs import adopt_run_directory, resolve_last_checkpoint

LINKED_BACKBONE_ATTRIBUTES = ("data_shape", "num_classes", "cond_channels")


def _numbers_named(config: Any, key: str, path: str = "") -> Iterator[tuple[str, float]]:
    """Every (dotted path, value) under ``config`` whose last key is ``key`` and value a number.

    A jsonargparse Namespace yields flattened dotted keys from ``items()``; plain dicts nest.
    """
    items = config.items() if hasattr(config, "items") else ()
    for name, value in items:
        where = f"{path}.{name}" if path else str(name)
        if str(name).split(".")[-1] == key and is_number(value):
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


def _count_or_fraction(value: Any) -> bool:
    """A positive batch count, or a fraction of the batches in (0, 1]."""
    if isinstance(value, float):
        return 0.0 < value <= 1.0
    return isinstance(value, int) and value > 0


def _limit(value: Any) -> bool:
    """A batch count >= 0 or a fraction in [0, 1]."""
    if isinstance(value, float):
        return 0.0 <= value <= 1.0
    return isinstance(value, int) and value >= 0


def _devices(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1 or value == -1
    if isinstance(value, str):
        text = value.strip()
        return text == "auto" or not text.lstrip("-").isdigit() or int(text) >= 1 or int(text) == -1
    return not isinstance(value, (list, tuple)) or (len(value) > 0 and all(int(item) >= 0 for item in value))


# Trainer settings that Lightning would accept silently or refuse only deep inside fit: (valid, expected).
TRAINER_CHECKS: dict[str, tuple[Any, str]] = {
    "gradient_clip_val": (lambda v: is_number(v) and math.isfinite(v) and v >= 0, "a finite number >= 0 (0: none)"),
    "val_check_interval": (_count_or_fraction, "a number of training batches >= 1 or a fraction in (0, 1]"),
    "max_steps": (lambda v: isinstance(v, int) and (v >= 0 or v == -1), "an integer >= 0, or -1 for no limit"),
    "min_steps": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "max_epochs": (lambda v: isinstance(v, int) and (v >= 0 or v == -1), "an integer >= 0, or -1 for no limit"),
    "min_epochs": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "devices": (_devices, "a number of devices >= 1, -1 for all, 'auto', or a list of device indices"),
    "num_nodes": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "log_every_n_steps": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "check_val_every_n_epoch": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1, or null"),
    "accumulate_grad_batches": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "num_sanity_val_steps": (lambda v: isinstance(v, int) and v >= -1, "an integer >= 0, or -1 for all"),
    "limit_train_batches": (_limit, "a number of batches >= 0 or a fraction in [0, 1]"),
    "limit_val_batches": (_limit, "a number of batches >= 0 or a fraction in [0, 1]"),
    "limit_test_batches": (_limit, "a number of batches >= 0 or a fraction in [0, 1]"),
    "limit_predict_batches": (_limit, "a number of batches >= 0 or a fraction in [0, 1]"),
}


def check_trainer_settings(trainer: Any) -> None:
    """Raise a ConfigurationError for the first trainer setting of ``TRAINER_CHECKS`` out of its range."""
    if not hasattr(trainer, "get"):
        return
    for name, (valid, expected) in TRAINER_CHECKS.items():
        value = trainer.get(name)
        if value is not None and not isinstance(value, bool) and not valid(value):
            raise ConfigurationError(f"trainer.{name}", value, expected)


class InterpolantCLI(LightningCLI):
    """LightningCLI for InterpolantModule and any LightningDataModule of si_lightning.data.

    Every problem with the config becomes a ``ConfigurationError`` naming its full key (see the
    module docstring); the parsers raise instead of printing usage and exiting.
    """

    def __init__(self, *args: Any, only_subcommand: str | None = None, **kwargs: Any) -> None:
        """``only_subcommand``: build the parser of that subcommand alone (``build_cli`` passes the one named
        first on the command line). Each subcommand's parser introspects the trainer, model and data
        signatures again; without the two unused ones a refused fit costs a quarter less CPU."""
        if only_subcommand is not None:
            chosen = {only_subcommand: type(self).subcommands()[only_subcommand]}
            self.subcommands = lambda: chosen  # the instance's view; the class still lists all three
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate and test: there is no predict step (samples come from ``si-lightning sample``)."""
        return {name: skipped for name, skipped in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The documented default interpolant (linear, gamma = 0) when a config names none.
        parser.set_defaults({"model.interpolant": {"class_path": "si_lightning.interpolants.Interpolant"}})
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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, turning jsonargparse's errors into one-line ConfigurationErrors; check ``ckpt_path``."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            raise from_parse_error(str(error), args if isinstance(args, list) else []) from error
        config = self.subcommand_config()
        ckpt_path = config.get("ckpt_path") if hasattr(config, "get") else None
        if ckpt_path is not None and str(ckpt_path) not in SPECIAL_CHECKPOINTS:
            check_checkpoint(ckpt_path)

    def subcommand_config(self) -> Any:
        """The parsed config of the running subcommand (the whole config without one)."""
        subcommand = self.config.get("subcommand") if hasattr(self.config, "get") else None
        return self.config.get(subcommand, self.config) if subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Refuse a negative or non-finite learning rate and out-of-range trainer settings, naming them.

        Then settle the W&B logger before it is built: offline without an API key, and on a resume
        the run id stored in the checkpoint. A checkpoint is loaded with ``weights_only=True``
        unless the config says otherwise.
        """
        config = self.subcommand_config()
        for where, value in _numbers_named(config.get("model", {}), "lr", "model"):
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(where, value, "a learning rate must be a finite number >= 0")
        check_trainer_settings(config.get("trainer"))
        if "weights_only" in config and config.get("weights_only") is None:
            config["weights_only"] = True
        if self.subcommand == "fit":
            resolve_last_checkpoint(config)  # before the logger exists: it may take the run's version
            adopt_run_directory(config)
        choose_wandb_mode(config)
        resume_wandb_run(config)

    def instantiate_classes(self) -> None:
        """Build the classes; a ValueError/TypeError of a constructor becomes a ConfigurationError naming its key."""
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException, AssertionError) as error:
            base = "trainer" if getattr(self, "config_init", None) is not None and self.trainer_not_built() else None
            accelerator = unavailable_accelerator_error(error, self.subcommand_config()) if base else None
            raise (accelerator or from_exception(error, self.subcommand_config(), base)) from error
        except ImportError as error:  # an accelerator, strategy or plugin whose package is not installed
            if not self.trainer_not_built():
                raise
            raise missing_package_error(error, self.subcommand_config()) from error

    def trainer_not_built(self) -> bool:
        return getattr(self, "model", None) is not None and not isinstance(getattr(self, "trainer", None), Trainer)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with a ``RunTracking`` callback that logs this run's full config and git commit.

        Also a ``NonFiniteGuard`` (stop) unless the config lists one, atomic checkpoint writes
        (``AtomicCheckpointIO``), and no checkpoint callbacks under fast_dev_run.
        """
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
        add_default_guard(trainer)  # a non-finite loss or gradient stops the run, naming the step
        install_atomic_checkpoint_io(trainer)
        drop_checkpoints_in_dev_run(trainer)
        follow_retention_after_resume(trainer)  # a resumed run keeps the checkpoints an uninterrupted one would
        return trainer

    def check_before_run(self, subcommand: str) -> None:
        """What Lightning would find only at setup, found before any run directory exists.

        The data module is set up now (unless it still has to download: that is ``prepare_data``'s
        job, on one process), and for ``fit`` the optimizer is built once from the model's settings.
        """
        datamodule = getattr(self, "datamodule", None)
        if datamodule is not None and not getattr(datamodule, "download", False):
            try:
                datamodule.setup(stage=subcommand)
            except (FileNotFoundError, pickle.UnpicklingError) as error:  # missing or unreadable files under root
                root = ConfigurationError("root", str(getattr(datamodule, "root", "")), one_line(str(error)))
                raise from_exception(root, self.subcommand_config(), "data") from error
            except (ValueError, TypeError) as error:
                raise from_exception(error, self.subcommand_config(), "data") from error
        if subcommand == "fit" and isinstance(self.model, InterpolantModule):
            try:
                self.model.configure_optimizers()
            except ValueError as error:
                raise optimizer_error(error, self.subcommand_config()) from error
            except TypeError as error:
                raise from_exception(error, self.subcommand_config(), "model.optimizer") from error
        ckpt_path = self.subcommand_config().get("ckpt_path")
        if ckpt_path is not None and str(ckpt_path) not in SPECIAL_CHECKPOINTS and self.model is not None:
            check_checkpoint_fits(ckpt_path, self.model, training=subcommand == "fit")

    def _run_subcommand(self, subcommand: str) -> None:
        """Run ``subcommand``; a ValueError from Lightning's setup hooks (before training) is a bad setting.

        The run directories that such a failure leaves (the logger creates its folder before the
        setup hooks run) are removed again when this run created them.
        """
        self.check_before_run(subcommand)
        new_directories = [path for path in run_directories(self.trainer) if not path.exists()]
        try:
            super()._run_subcommand(subcommand)
        except ValueError as error:
            if not _raised_in_setup(error):
                raise
            if self.trainer.is_global_zero:
                for path in new_directories:
                    shutil.rmtree(path, ignore_errors=True)
            raise from_exception(error, self.subcommand_config(), None) from error


def run_directories(trainer: Trainer) -> list[Path]:
    """The folders a run may create: the root directory, each logger's, the checkpoint folder (none created)."""
    paths = [trainer.default_root_dir]
    for logger in trainer.loggers:
        paths += [getattr(logger, "save_dir", None), getattr(logger, "root_dir", None)]
        if isinstance(logger, (CSVLogger, TensorBoardLogger)):
            paths.append(logger.log_dir)  # computed from the folder listing, without creating it
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    paths.append(getattr(checkpoint, "dirpath", None))
    return [Path(path).resolve() for path in paths if isinstance(path, (str, Path)) and str(path)]


def _raised_in_setup(error: BaseException) -> bool:
    """Whether ``error`` came from Lightning's setup hooks (data module, callbacks, module) or the optimizer set-up."""
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_name in ("_call_setup_hook", "_call_configure_model", "setup_optimizers"):
            return True
        traceback = traceback.tb_next
    return False


def build_cli(args: list[str] | None = None, run: bool = True) -> InterpolantCLI:
    """The LightningCLI of ``si-lightning fit/validate/test`` (``run=False``: parse and build only).

    When the command line starts with a subcommand, only that subcommand's parser is built.
    """
    arguments = sys.argv[1:] if args is None else args
    first = arguments[0] if arguments else None
    return InterpolantCLI(
        InterpolantModule,
        LightningDataModule,
        subclass_mode_data=True,
        save_config_callback=RunDirectorySaveConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        only_subcommand=first if first in InterpolantCLI.subcommands() else None,
    )


def main(args: list[str] | None = None) -> int:
    """Entry point of the `si-lightning` console script; returns the exit status (errors.EXIT_*).

    ``si-lightning <command> ...`` runs one of ``COMMANDS`` (sample, evaluate) when named, else LightningCLI.
    Errors end in one ``error:`` line on stderr (``errors.run_reporting_errors``); ``--debug`` adds the traceback.
    """
    arguments, debug = split_debug_flag(list(sys.argv[1:] if args is None else args))
    if arguments and arguments[0] in COMMANDS:
        command = importlib.import_module(COMMANDS[arguments[0]]).main
        return run_reporting_errors(lambda: command(arguments[1:], debug), debug)

    def fit_validate_or_test() -> int:
        known = [*InterpolantCLI.subcommands(), *COMMANDS]
        if arguments and not arguments[0].startswith("-") and arguments[0] not in known:
            expected = f"one of: {', '.join(known)} (samples of a checkpoint come from 'si-lightning sample')"
            raise ConfigurationError("subcommand", arguments[0], expected)
        try:
            if args is None:  # LightningCLI reads sys.argv itself (it warns when given both)
                sys.argv[1:] = arguments
            build_cli(None if args is None else arguments)
        except SIGTERMException as stop:  # Lightning's clean exit on SIGTERM would report success
            status, line = preemption_summary(stop)
            print(f"si-lightning: {line}", file=sys.stderr)
            return status
        except SystemExit as exit_request:
            # Lightning answers a Ctrl-C it catches (a second one, or one before training starts) with
            # sys.exit(1) inside its handler, so the KeyboardInterrupt is the exit's context.
            interrupt = exit_request.__context__
            if not isinstance(interrupt, KeyboardInterrupt):
                raise
            step = getattr(interrupt, "global_step", None)
            where = f" at global step {step}" if step is not None else ""
            print(f"si-lightning: interrupted{where}; stopped at once, without a checkpoint", file=sys.stderr)
            return EXIT_INTERRUPTED
        return EXIT_SUCCESS

    return run_reporting_errors(fit_validate_or_test, debug)


if __name__ == "__main__":
    sys.exit(main())
