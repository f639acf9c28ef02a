"""Atomic writes: the temporary file in the target's folder, the process's normal permissions, nothing left behind."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import pytest
import torch

from si_lightning.checkpoint_io import AtomicCheckpointIO
from si_lightning.files import open_atomically, process_umask, write_atomically


@pytest.fixture
def umask(request):
    """Run with the umask given as the test's parameter; the cached value is re-read before and after."""
    previous = os.umask(request.param)
    process_umask.cache_clear()
    yield request.param
    os.umask(previous)
    process_umask.cache_clear()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], indirect=["umask"])
def test_written_files_get_the_mode_of_the_umask(tmp_path, umask, mode):
    assert process_umask() == umask
    path = write_atomically(tmp_path / "nested" / "config.yaml", b"seed_everything: 0\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")  # what open() gives, for comparison
    assert stat.S_IMODE(plain.stat().st_mode) == mode
    checkpoint = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, checkpoint)
    assert stat.S_IMODE(checkpoint.stat().st_mode) == mode


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_atomically(path, b"one\n")
    write_atomically(path, memoryview(b"two\n"))
    assert path.read_bytes() == b"two\n"
    assert [entry.name for entry in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "last.ckpt"
    write_atomically(path, b"finite")
    with pytest.raises(RuntimeError, match="interrupted"), open_atomically(path) as file:
        file.write(b"half a checkp")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"finite"
    assert [entry.name for entry in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_temporary_file_is_in_the_target_folder(tmp_path, monkeypatch):
    """Not in TMPDIR: a rename within one folder is never a copy across filesystems."""
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    target = tmp_path / "run" / "last.ckpt"
    seen = []
    with open_atomically(target) as file:
        seen = sorted(entry.name for entry in target.parent.iterdir())
        file.write(b"data")
    assert len(seen) == 1 and seen[0].startswith(".last.ckpt.") and seen[0].endswith(".tmp")
    assert list(elsewhere.iterdir()) == []


def test_checkpoint_io_round_trip_loads_with_weights_only(tmp_path):
    checkpoint = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "global_step": 7}
    io = AtomicCheckpointIO()
    io.save_checkpoint(checkpoint, tmp_path / "a" / "step.ckpt")
    loaded = torch.load(tmp_path / "a" / "step.ckpt", weights_only=True)
    assert loaded["global_step"] == 7 and torch.equal(loaded["state_dict"]["w"], checkpoint["state_dict"]["w"])


def test_a_write_removes_what_killed_writers_of_the_same_file_left(tmp_path):
    """A temporary of this host from a process that no longer runs goes; a running writer's, another host's,
    and another file's stay."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)  # a process that has ended (its pid is not reused within this test)
    host = socket.gethostname()
    stale = tmp_path / f".last.ckpt.{host}.{dead}.abc123.tmp"
    running = tmp_path / f".last.ckpt.{host}.{os.getppid()}.def456.tmp"
    remote = tmp_path / f".last.ckpt.other-node.{dead}.ghi789.tmp"
    other_file = tmp_path / f".step.ckpt.{host}.{dead}.jkl012.tmp"
    for leftover in (stale, running, remote, other_file):
        leftover.write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    left = sorted(entry.name for entry in tmp_path.iterdir())
    assert left == sorted(["last.ckpt", running.name, remote.name, other_file.name])
