"""The `si-lightning` command: LightningCLI with the data's shape linked into the backbone.

    si-lightning fit -c configs/experiments/digits.yaml [-c overlay.yaml] [--trainer.max_steps 100]

The data module decides the data shape, the class count and the extra conditioning channels of its
coupling; ``link_arguments`` carries them into the backbone (and the coupling's kind of base into
the interpolant) when the classes are built, so a config never states them twice. Every unknown key
is an error (jsonargparse), and the full config is written once, on rank 0, into the run directory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from operator import attrgetter
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from si_lightning.module import InterpolantModule

LINKED_BACKBONE_ATTRIBUTES = ("data_shape", "num_classes", "cond_channels")


def _numbers_named(config: Any, key: str, path: str = "") -> Iterator[tuple[str, float]]:
    """Every (dotted path, value) under ``config`` whose last key is ``key`` and value a number."""
    items = config.items() if hasattr(config, "items") else ()
    for name, value in items:
        where = f"{path}.{name}" if path else str(name)
        if name == key and isinstance(value, (int, float)) and not isinstance(value, bool):
            yield where, value
        elif hasattr(value, "items"):
            yield from _numbers_named(value, key, where)


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
        """Refuse a negative or non-finite learning rate at parse time, naming where it is."""
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        for where, value in _numbers_named(config.get("model", {}), "lr"):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{where} = {value!r}: a learning rate must be a finite number >= 0")


def main(args: list[str] | None = None, run: bool = True) -> InterpolantCLI:
    """Entry point of the `si-lightning` console script."""
    return InterpolantCLI(
        InterpolantModule,
        LightningDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
