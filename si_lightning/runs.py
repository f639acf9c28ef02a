"""Which run ``--ckpt_path last`` continues, found from the parsed config before anything is built.

A run lives in one directory: ``save_dir/name/version`` of its first logger (``checkpoints/`` inside
it), or ``default_root_dir`` without a logger, or the ModelCheckpoint's own ``dirpath``. Lightning
gives each launch a new ``version_N`` and resolves ``last`` only inside the new, empty one, so a
requeued job would start over. Here ``last`` is resolved first:

- the logger names its version (``version: my-run``, or ``$SLURM_JOB_ID``): its ``last.ckpt``;
- it does not: the newest ``last.ckpt`` among the versions of ``save_dir/name``, whose version the
  logger then takes, so the run goes on writing into the same directory (and the same W&B run: the
  id stored in the checkpoint is reused);
- no checkpoint: the run starts fresh and says so in one line.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

CHECKPOINT_CALLBACK = "ModelCheckpoint"
LAST_NAME = "last.ckpt"
VERSION_PATTERN = re.compile(r"version_(\d+)")


def _get(namespace: Any, key: str, default: Any = None) -> Any:
    if namespace is None or not hasattr(namespace, "get"):
        return default
    value = namespace.get(key)
    return default if value is None else value


def _class_default(class_path: str, argument: str) -> Any:
    """The default of ``argument`` in the constructor of the class at ``class_path`` (None if none)."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        constructor = getattr(importlib.import_module(module_name), class_name)
        parameter = inspect.signature(constructor).parameters.get(argument)
    except (ImportError, AttributeError, ValueError, TypeError):
        return None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _first_logger(config: Any) -> Any:
    logger = _get(_get(config, "trainer"), "logger")
    if isinstance(logger, list):
        return logger[0] if logger else None
    return logger


def _checkpoint_dirpath(config: Any) -> str | None:
    """The ``dirpath`` of the first ModelCheckpoint in the config's callbacks, if it sets one."""
    for callback in _get(_get(config, "trainer"), "callbacks", []) or []:
        if str(_get(callback, "class_path", "")).endswith(CHECKPOINT_CALLBACK):
            dirpath = _get(_get(callback, "init_args"), "dirpath")
            if dirpath is not None:
                return str(dirpath)
    return None


def _logger_location(logger: Any) -> tuple[Path, Any, str]:
    """(save_dir/name, the version the logger was given or None, the init_args key holding it)."""
    class_path = str(_get(logger, "class_path", ""))
    arguments = _get(logger, "init_args")

    def setting(name: str) -> Any:
        value = _get(arguments, name)
        return value if value is not None else _class_default(class_path, name)

    if class_path.endswith("WandbLogger"):
        save_dir = setting("save_dir") or setting("dir") or "."
        name = setting("project") or "lightning_logs"
        version_key = "id" if _get(arguments, "id") is not None else "version"
    else:
        save_dir, name, version_key = setting("save_dir") or ".", setting("name"), "version"
    root = Path(save_dir) / str(name) if name else Path(save_dir)
    return root, _get(arguments, version_key), version_key


def _version_folder(version: Any) -> str:
    return f"version_{version}" if isinstance(version, int) else str(version)


def _newest(paths: list[Path]) -> Path | None:
    existing = [path for path in paths if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def resolve_last_checkpoint(config: Any) -> Path | None:
    """Replace ``ckpt_path: last`` in a parsed ``fit`` config by the run's newest last checkpoint (or None).

    Edits ``config`` in place (``ckpt_path``, and the logger's version when it had none) and returns
    the checkpoint, or None (with a line on stderr) when the run has none yet.
    """
    if _get(config, "ckpt_path") != "last":
        return None
    trainer = _get(config, "trainer")
    dirpath, logger = _checkpoint_dirpath(config), _first_logger(config)
    has_logger = logger not in (None, False) and _get(logger, "class_path") is not None
    if dirpath is not None:
        searched, found = Path(dirpath), _newest([Path(dirpath) / LAST_NAME])
    elif not has_logger:
        root = Path(_get(trainer, "default_root_dir", "."))
        if logger is True or logger is None:  # Lightning's default logger: save_dir/lightning_logs/version_N
            root = root / "lightning_logs"
            searched, found = root, _newest(list(root.glob(f"*/checkpoints/{LAST_NAME}")))
        else:
            searched = root / "checkpoints"
            found = _newest([searched / LAST_NAME])
    else:
        root, version, version_key = _logger_location(logger)
        if version is not None:
            searched = root / _version_folder(version) / "checkpoints"
            found = _newest([searched / LAST_NAME])
        else:
            searched, found = root, _newest(list(root.glob(f"*/checkpoints/{LAST_NAME}")))
            if found is not None:
                folder = found.parent.parent.name
                match = VERSION_PATTERN.fullmatch(folder)
                arguments = _get(logger, "init_args")
                if arguments is not None:
                    arguments[version_key] = int(match.group(1)) if match else folder
    config["ckpt_path"] = None if found is None else str(found)
    if rank_zero_only.rank == 0:  # every process of a multi-process launch resolves it; one says so
        if found is None:
            print(f"ckpt_path = last: no checkpoint of this run in {searched}; starting a new run", file=sys.stderr)
        else:
            print(f"ckpt_path = last: continuing from {found}", file=sys.stderr)
    return found
