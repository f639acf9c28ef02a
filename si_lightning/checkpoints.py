"""Reading a checkpoint file safely, and one line naming the file and what is wrong when it is no checkpoint.

Checkpoints are always read with ``torch.load(..., weights_only=True)``: tensors, numbers, strings
and plain containers only, so a file that would run code when unpickled is refused, never run. The
refusal names the global the file needs (``posix.system``, ``builtins.eval``, a class); torch's own
message advises loading with ``weights_only=False``, which would run that code, so it is not passed on.
"""

from __future__ import annotations

import _compat_pickle
import errno
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import torch

from si_lightning.errors import ConfigurationError, one_line

# Values of ``ckpt_path`` that the Trainer resolves itself (newest, best, HPC checkpoint, registry).
SPECIAL_CHECKPOINTS = ("last", "best", "hpc", "registry")
CHECKPOINT_FILE = "a Lightning checkpoint (.ckpt) from si-lightning fit"
# What ``LightningModule.load_from_checkpoint`` reads from a checkpoint besides the weights.
LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
# The name in torch's refusal: "unsupported GLOBAL posix.system whose module ..." or "GLOBAL eval was not ...".
REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# A legacy (non-zip) torch file: magic number, protocol, system info, the object, the storage keys.
LEGACY_PICKLES = 5
# Lines of torch's refusals that describe torch's options rather than the file (they advise
# ``weights_only=False``, which would run the file's code).
TORCH_ADVICE = ("weights_only", "weights only", "check the documentation", "please file an issue", "add_safe_globals")


class CheckpointFileError(ValueError):
    """A file that is no readable checkpoint: ``<path>: <reason>; expected <expected>`` on one line.

    ``reason`` and ``expected`` are kept apart so a command can print them after its own setting
    (``error: --ckpt = <path>: <reason>``) without naming the file twice.
    """

    def __init__(self, path: str | Path, reason: str, expected: str = CHECKPOINT_FILE) -> None:
        self.path, self.reason, self.expected = str(path), reason, expected
        super().__init__(f"{path}: {reason}; expected {expected}")


def load_checkpoint_file(path: str | Path) -> Any:
    """The content of the checkpoint file ``path``, read on the CPU with ``weights_only=True``.

    Memory-mapped when the file allows it (a zip archive), so gigabytes of weights are not copied.
    Raises FileNotFoundError (no such file) or CheckpointFileError (a directory, an empty file, not
    a PyTorch file, a truncated archive, or a pickle that needs a global outside torch's allowlist:
    the global is named); either message is one line naming the file.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", str(file))
    if not file.is_file():
        raise CheckpointFileError(file, "not a file")
    if file.stat().st_size == 0:
        raise CheckpointFileError(file, "an empty file")
    with open(file, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK") and not zipfile.is_zipfile(file):
        raise CheckpointFileError(file, "a truncated or corrupt checkpoint (incomplete zip archive)")
    if not head.startswith((b"PK", b"\x80")):  # torch.save writes a zip archive, or a pickle in the legacy format
        raise CheckpointFileError(file, "not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        return read_weights_only(file)
    except pickle.UnpicklingError as error:  # not chained: torch's message advises unpickling anyway
        refused = refused_global(file, error)
        if refused is not None:
            raise CheckpointFileError(
                file,
                f"refused by the safe loader: unpickling it would call {refused} (code, not weights)",
                "tensors and plain values only",
            ) from None
        if f"Unsupported operand {pickle.FRAME[0]}" in str(error):  # no global to name: a protocol torch cannot read
            reason = "written with pickle protocol 4 or 5, which the safe loader cannot read (save with protocol 2)"
            raise CheckpointFileError(file, reason) from None
        raise CheckpointFileError(file, f"not a readable PyTorch checkpoint ({torch_reason(error)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, zipfile.BadZipFile) as error:
        reason = f"not a readable PyTorch checkpoint (truncated or corrupt?): {torch_reason(error)}"
        raise CheckpointFileError(file, reason) from error  # kept for --debug: no unpickling advice in these


def check_checkpoint(path: str | Path, key: str = "ckpt_path") -> None:
    """Raise a ConfigurationError (for setting ``key``) unless ``path`` is a readable Lightning checkpoint.

    The file is read as by ``load_checkpoint_file`` and must hold a ``state_dict``.
    """
    try:
        checkpoint = load_checkpoint_file(path)
    except FileNotFoundError:
        raise ConfigurationError(key, str(path), "no such checkpoint file") from None
    except CheckpointFileError as error:
        raise ConfigurationError(key, str(path), f"{error.reason}; expected {error.expected}") from None
    problem = checkpoint_content_problem(checkpoint, ("state_dict",))
    if problem is not None:
        raise ConfigurationError(key, str(path), f"{problem}; expected {CHECKPOINT_FILE}")


def checkpoint_content_problem(checkpoint: Any, keys: tuple[str, ...] = LIGHTNING_KEYS) -> str | None:
    """What a loaded file lacks to be a Lightning checkpoint (it must be a dict holding ``keys``), or None."""
    if not isinstance(checkpoint, dict):
        return f"holds a {type(checkpoint).__name__}, not a checkpoint's dict"
    missing = [name for name in keys if name not in checkpoint]
    if not missing:
        return None
    lacking = " or ".join(repr(name) for name in missing)
    if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        count = f"{len(checkpoint)} tensor" + ("s" if len(checkpoint) > 1 else "")
        return f"holds no {lacking}: a dict of {count} (a bare state_dict?)"
    names = sorted(map(str, checkpoint))
    if not names:
        return f"holds no {lacking}: an empty dict"
    shown = ", ".join(repr(one_line(name, 40)) for name in names[:3]) + (", ..." if len(names) > 3 else "")
    return f"holds no {lacking} (found {len(names)} keys: {shown})"


def explain_unloadable_checkpoint(path: Any, weights_only: bool | None) -> Exception | None:
    """Why ``LightningModule.load_from_checkpoint(path)`` failed when the cause is the file itself, else None.

    Called after a failure, so a loadable checkpoint costs nothing: a FileNotFoundError or a
    CheckpointFileError (one line naming the file and what was expected) when ``path`` is a local
    file that is missing, no PyTorch file, refused by the safe loader, or not a Lightning checkpoint;
    None for a readable Lightning checkpoint (its own error then stands), for an open file or a URL,
    and under ``weights_only=False`` (the caller chose to unpickle anything; the safe loader's view
    of the file does not apply).
    """
    if weights_only is False or not isinstance(path, (str, os.PathLike)) or "://" in str(path):
        return None
    try:
        checkpoint = load_checkpoint_file(path)
    except (FileNotFoundError, CheckpointFileError) as error:
        return error
    problem = checkpoint_content_problem(checkpoint)
    return None if problem is None else CheckpointFileError(Path(path).expanduser(), problem)


def refused_global(file: Path, error: pickle.UnpicklingError) -> str | None:
    """The globals (``module.name``) outside torch's allowlist that ``file`` needs, or None when it needs none.

    Found by reading the pickle's opcodes without unpickling (``pickled_globals``), so a file that torch
    stops reading early (pickle protocol 4 or 5: "Unsupported operand 149") is named too; else the name
    in torch's refusal.
    """
    try:
        named = pickled_globals(file)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):  # an archive that cannot be read: torch's name
        named = []
    allowed = torch_allowed_globals()
    unsafe = [name for name in named if name not in allowed]
    if unsafe:
        return ", ".join(unsafe[:3]) + (f" (and {len(unsafe) - 3} more)" if len(unsafe) > 3 else "")
    match = REFUSED_GLOBAL.search(str(error))
    return None if match is None else match.group(1)


def pickled_globals(file: Path) -> list[str]:
    """Every global (``module.name``) the pickles of a torch file name, in order of appearance, unpickling nothing.

    A zip checkpoint's pickle is its ``data.pkl``; a legacy file is a sequence of pickles followed by raw
    storage bytes (the scan stops at the first thing that is not a whole pickle, whose bytes are not read
    as names). Protocols 4 and 5 name a global with STACK_GLOBAL on the two strings pushed (or fetched
    from the memo) just before it.
    """
    found: list[str] = []
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            members = [name for name in archive.namelist() if name.endswith("data.pkl")]
            found += (_scan_pickle(io.BytesIO(archive.read(members[0]))) or []) if members else []
    else:
        with open(file, "rb") as stream:  # read as far as the pickles go, not the storages after them
            for _ in range(LEGACY_PICKLES):
                names = _scan_pickle(stream)
                if names is None:
                    break
                found += names
    return list(dict.fromkeys(found))


def _scan_pickle(stream: IO[bytes]) -> list[str] | None:
    """The globals of the pickle at the stream's position; None when no whole pickle is there."""
    found: list[str] = []
    recent: list[str | None] = []  # the last two values pushed: strings, or None for anything else
    memo: dict[int, str | None] = {}
    try:
        for opcode, argument, _ in pickletools.genops(stream):
            name = opcode.name
            if name in ("GLOBAL", "INST"):  # protocols 0-2 write Python 2 names, which unpickling maps
                module, _, attribute = str(argument).partition(" ")
                module, attribute = _compat_pickle.NAME_MAPPING.get((module, attribute), (module, attribute))
                found.append(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attribute}")
            elif name == "STACK_GLOBAL" and len(recent) == 2 and None not in recent:
                found.append(f"{recent[0]}.{recent[1]}")
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                recent.append(str(argument))
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(int(argument)))
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(argument)] = recent[-1] if recent else None
            elif name not in ("PROTO", "FRAME", "STOP"):
                recent.append(None)
            recent = recent[-2:]
    except Exception:  # noqa: BLE001 - not a whole pickle (the raw storages of a legacy file, garbage)
        return None
    return found


def torch_allowed_globals() -> set[str]:
    """The globals torch's safe loader accepts: its defaults and those a program added with ``add_safe_globals``."""
    allowed: set[str] = set()
    # The defaults have no public accessor; without them every global is reported, torch's own included.
    # The private function's result is pinned in tests/test_library_contracts.py.
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed.update(_get_allowed_globals())
    except (ImportError, AttributeError):
        pass
    for entry in torch.serialization.get_safe_globals():
        if isinstance(entry, tuple):
            allowed.add(entry[1])
        else:
            allowed.add(f"{entry.__module__}.{entry.__qualname__}")
    return allowed


def torch_reason(error: BaseException, limit: int = 160) -> str:
    """The line of a torch loading error that describes the file, without torch's advice about loading options."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    relevant = [line for line in lines if not any(advice in line.lower() for advice in TORCH_ADVICE)]
    return one_line(relevant[0], limit) if relevant else type(error).__name__


def read_weights_only(file: Path) -> object:
    """``torch.load(file, weights_only=True)`` on the CPU, memory-mapped when the file is a zip archive.

    torch warns about a pickle protocol above 2 with advice about its unpickler; a file it cannot read
    gets this module's own one-line reason instead, and one it can read needs no warning.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d+ in the checkpoint")
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
        return torch.load(file, map_location="cpu", weights_only=True)  # a legacy (non-zip) file cannot be mapped
