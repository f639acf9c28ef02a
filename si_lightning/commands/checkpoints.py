"""Loading a trained model for the commands: a checkpoint written by ``si-lightning fit``.

The checkpoint is read with ``torch.load(weights_only=True)`` (tensors and plain values only, no
code runs). Its ``state_dict`` holds the weights the model samples with: under the EMA callback
(``si_lightning.callbacks.EMA``) the *averaged* weights are stored there and the raw weights under
``current_model_state``; ``--weights raw`` picks the latter.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from si_lightning.checkpoints import CheckpointFileError, load_checkpoint_file
from si_lightning.errors import ConfigurationError
from si_lightning.module import InterpolantModule

WEIGHTS = ("ema", "raw")
CHECKPOINT_EXPECTED = "a checkpoint file written by si-lightning fit (a .ckpt with state_dict and hyper_parameters)"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path, key: str = "--ckpt") -> dict[str, Any]:
    """The checkpoint's content (on the CPU); a missing file or one that is no checkpoint is a ConfigurationError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(key, str(path), f"an existing file: {CHECKPOINT_EXPECTED}")
    try:
        content = load_checkpoint_file(path)
    except (FileNotFoundError, CheckpointFileError) as error:
        # the shared reason names a refused global and leaves out torch's advice on loading options
        reason = getattr(error, "reason", "no such file")
        raise ConfigurationError(key, str(path), f"{reason}; expected {CHECKPOINT_EXPECTED}") from None
    if not isinstance(content, dict) or not {"state_dict", "hyper_parameters"} <= set(content):
        raise ConfigurationError(key, str(path), CHECKPOINT_EXPECTED)
    return content


def load_model(path: str | Path, weights: str = "ema", key: str = "--ckpt") -> InterpolantModule:
    """The InterpolantModule of a CLI-trained checkpoint on the CPU, in evaluation mode.

    ``weights``: ``ema`` (the checkpoint's ``state_dict``: the EMA average when training used the EMA
    callback, else the trained weights) or ``raw`` (``current_model_state``, the weights the
    optimiser was updating; only in checkpoints written with an EMA).
    """
    if weights not in WEIGHTS:
        raise ConfigurationError("--weights", weights, f"one of {', '.join(WEIGHTS)}")
    content = read_checkpoint(path, key)
    try:
        module = InterpolantModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigurationError(key, str(path), f"{CHECKPOINT_EXPECTED}; it does not rebuild: {reason}") from None
    if weights == "raw":
        if "current_model_state" not in content:
            raise ConfigurationError("--weights", weights, "ema: this checkpoint was written without an EMA callback")
        module.load_state_dict(content["current_model_state"])
    return module.eval().requires_grad_(False)
