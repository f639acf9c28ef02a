"""The shipped configs read as the CLI reads them, for tests that change a copy of one.

An experiment may give ``trainer.callbacks`` as a path to a YAML list (configs/callbacks/digits-generation.yaml),
which jsonargparse reads relative to the config's folder; ``load_config`` does the same, so a test
sees the list the run gets.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def load_config(path: Path) -> dict | list:
    """The YAML at ``path`` (a dict, or a list file's list), with a ``trainer.callbacks`` path replaced by
    the list it names.

    The result shares no objects (a YAML anchor in the list file gives one dict in two places; a test
    that changes one callback must not change the other).
    """
    config = yaml.safe_load(path.read_text()) or {}
    trainer = config.get("trainer") if isinstance(config, dict) else None
    if isinstance(trainer, dict) and isinstance(trainer.get("callbacks"), str):
        trainer["callbacks"] = yaml.safe_load((path.parent / trainer["callbacks"]).read_text())
    return json.loads(json.dumps(config))
