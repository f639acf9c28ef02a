"""Reading pickled data files (the CIFAR-10 batches) without running whatever code a pickle names.

``pickle.load`` calls any function a file names; a file planted in a data folder could run anything.
``load_numpy_pickle`` resolves only the globals that numpy arrays and plain containers need and
refuses every other one with an error naming the file and the global.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

# What a pickled dict of numpy arrays, lists, strings and numbers references: the array and dtype
# reconstruction (numpy 1 wrote ``numpy.core``, numpy 2 writes ``numpy._core``), and the encoding of
# bytes by Python 3 pickles of protocol 2.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named a global outside ``ALLOWED_GLOBALS``; nothing it named was run."""


class NumpyUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` resolves only ``ALLOWED_GLOBALS``."""

    def __init__(self, file: Any, path: Path, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.path}: refused to unpickle {module}.{name}; this file may hold only numpy arrays, "
                "lists, dicts, strings and numbers (a tampered or foreign file?)"
            )
        if module.startswith("numpy.core."):  # numpy 2 keeps numpy.core only as a deprecated alias
            try:
                return getattr(importlib.import_module("numpy._core." + module.split(".", 2)[2]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


# What unpickling a file that is no pickle raises; MemoryError and OverflowError when its bytes happen to
# read as a length of gigabytes.
UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, MemoryError, OverflowError)


def load_numpy_pickle(path: Path, encoding: str = "latin1") -> Any:
    """Unpickle ``path`` allowing numpy arrays and plain containers only (``encoding`` for Python 2 pickles)."""
    path = Path(path)
    with open(path, "rb") as file:
        try:
            return NumpyUnpickler(file, path, encoding=encoding).load()
        except UnsafePickleError:
            raise
        except UNREADABLE as error:
            raise UnsafePickleError(f"{path}: not a readable pickle of numpy arrays ({error})") from error
