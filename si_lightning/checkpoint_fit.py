"""Whether a checkpoint fits the run that is about to use it: Lightning's keys, the model's tensor shapes.

``fit --ckpt_path X`` of a foreign file (a bare ``state_dict`` saved with ``torch.save``) fails deep
inside Lightning with a KeyError, and a checkpoint of another architecture with a size-mismatch
message hundreds of characters long, after the run directory was made. ``check_checkpoint_fits``
finds both before anything is created and names the first key that does not fit and both shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from si_lightning.checkpoints import read_weights_only
from si_lightning.errors import ConfigurationError

# What Lightning reads from a checkpoint to restore a run (fit) or only its weights (validate, test).
LIGHTNING_KEYS = ("pytorch-lightning_version", "state_dict")
TRAINING_KEYS = ("loops", "optimizer_states")


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def first_mismatch(model_state: dict[str, Any], checkpoint_state: dict[str, Any]) -> str | None:
    """The first key (in the model's order) missing, extra or of another shape, said in words; None if all fit."""
    for name, value in model_state.items():
        if name not in checkpoint_state:
            return f"the model's {name} {_shape(value)} is not in the checkpoint"
        stored = _shape(checkpoint_state[name])
        if stored != _shape(value):
            return f"{name} has shape {stored} in the checkpoint but {_shape(value)} in the model"
    extra = [name for name in checkpoint_state if name not in model_state]
    if extra:
        return f"the checkpoint's {extra[0]} {_shape(checkpoint_state[extra[0]])} is not in the model"
    return None


def check_checkpoint_fits(path: str | Path, model: nn.Module, training: bool, key: str = "ckpt_path") -> None:
    """Raise a ConfigurationError unless ``path`` is a Lightning checkpoint whose weights fit ``model``.

    ``training``: the run resumes training (fit), so the loops' and the optimizers' state must be there too.
    """
    file = Path(path)
    content = read_weights_only(file)  # memory-mapped: the shapes are read, not the data
    wanted = (*LIGHTNING_KEYS, *TRAINING_KEYS) if training else LIGHTNING_KEYS
    missing = [name for name in wanted if not isinstance(content, dict) or name not in content]
    if missing:
        found = sorted(map(str, content))[:4] if isinstance(content, dict) else type(content).__name__
        raise ConfigurationError(
            key,
            str(path),
            f"a checkpoint written by Lightning (si-lightning fit); {file.name} lacks {', '.join(missing)} "
            f"(it holds {found}: a bare state_dict?)",
        )
    mismatch = first_mismatch(model.state_dict(), content["state_dict"])
    if mismatch is not None:
        raise ConfigurationError(key, str(path), f"a checkpoint of this model: {mismatch}")
