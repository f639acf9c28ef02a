"""Atomic file writes: nothing a user ran is lost to a half-written file.

The temporary file lives in the target's own directory, so the final ``os.replace`` is a rename on
one filesystem (never a copy from TMPDIR, which a kill could leave truncated). The file gets the
permissions any new file of the process gets (0o666 less the umask), not ``mkstemp``'s 0o600.

A kill during a write leaves its temporary file behind (a whole checkpoint's size). Temporary files
are named ``.{target}.{host}.{pid}.{random}.tmp``; after each successful write of a target, those
of the same target left by a process of this host that no longer runs are removed (a writer on
another host, or one still running, is never touched).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

NEW_FILE_MODE = 0o666  # what open(..., "w") asks for; the umask takes its bits away


@functools.cache
def process_umask() -> int:
    """The process's umask, read once (``/proc/self/status`` where it exists, which does not change it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)  # no read-only query elsewhere: set, then restore at once
    os.umask(umask)
    return umask


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform opens directories)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def open_atomically(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only when the block ends without an error.

    The data go to a temporary file next to ``path``; then fsync, the process's normal permissions,
    ``os.replace`` and an fsync of the directory. A reader sees the old file or the new one, never a
    partial one; an error (or a kill) leaves ``path`` as it was, and an error removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{socket.gethostname()}.{os.getpid()}."
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
            os.fchmod(file.fileno(), NEW_FILE_MODE & ~process_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)
    remove_stale_temporaries(path)


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by killed writers on this host; returns them."""
    host, removed = socket.gethostname(), []
    start = f".{path.name}."
    for entry in path.parent.iterdir():
        name = entry.name
        if not (name.startswith(start) and name.endswith(".tmp")):
            continue
        parts = name[len(start) : -len(".tmp")].rsplit(".", 2)  # host (may hold dots), pid, random part
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not _process_is_running(pid):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def write_atomically(path: Path, content: bytes | memoryview) -> Path:
    """Write ``content`` to ``path`` through ``open_atomically``; returns ``path``."""
    path = Path(path)
    with open_atomically(path) as file:
        file.write(content)
    return path
