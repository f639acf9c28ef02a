"""Kill training with SIGKILL while it writes checkpoints; report whether each last.ckpt left loads.

    python tests/integration/kill_during_checkpoints.py ROOT --tries 20 [--plain-io] -- FIT ARGUMENTS...

The trainer, model and data are built once by the `si-lightning` CLI (``build_cli([...],
run=False)``: the same parsing, instantiation and checkpoint IO as the console script); each try
forks a child that runs ``trainer.fit`` with its checkpoints in ``ROOT/try-N`` (so the 20 kills do
not pay 20 interpreter and CLI start-ups). The parent waits for the start of the child's k-th
checkpoint write (k random in 1..6: step checkpoints and last.ckpt alternate), that is a temporary
file next to the checkpoints (or, for Lightning's own IO with ``--plain-io``, fsspec's in TMPDIR),
waits a random 0-20 ms more and sends SIGKILL if that write is still under way (at the start of the
next write otherwise). A temporary file left after the kill records that the kill cut a write short.
Afterwards every ``last.ckpt`` is loaded with ``torch.load(weights_only=True)``. Prints one JSON
object with a record per try.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path


def write_in_progress(directory: Path, tmpdir: Path) -> str | None:
    """The temporary file of a checkpoint write under way, next to the checkpoints or in TMPDIR."""
    for folder in (directory, tmpdir):
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.is_file() and (folder == tmpdir or entry.name.endswith(".tmp")):
                    return entry.name
    return None


def run_child(cli, directory: Path, log: Path, plain_io: bool) -> None:
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    try:
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

        if plain_io:  # Lightning's own TorchCheckpointIO, for comparison
            cli.trainer.strategy.checkpoint_io = TorchCheckpointIO()
        cli.trainer.checkpoint_callback.dirpath = str(directory)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain-io", action="store_true")
    parser.add_argument("--patience", type=float, default=120.0, help="seconds to wait for a write per try")
    split = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    options = parser.parse_args(sys.argv[1:split])
    tmpdir = Path(tempfile.gettempdir())
    import torch

    torch.set_num_threads(1)  # no thread pool before fork: a forked child would wait on the parent's threads
    from si_lightning.cli import build_cli

    cli = build_cli([*sys.argv[split + 1 :], "--trainer.default_root_dir", str(options.root)], run=False)
    chance = random.Random(options.seed)
    tries = []
    for index in range(options.tries):
        directory = options.root / f"try-{index}"
        directory.mkdir(parents=True)
        target = chance.randint(1, 6)
        delay = chance.uniform(0.0, 0.02)
        pid = os.fork()
        if pid == 0:
            run_child(cli, directory, directory / "log.txt", options.plain_io)
        deadline, writes, writing, killed_in = time.monotonic() + options.patience, 0, None, None
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                pid = 0  # it ended by itself
                break
            now = write_in_progress(directory, tmpdir)
            if now is not None and now != writing:
                writes += 1
                if writes >= target:
                    time.sleep(delay)
                    if write_in_progress(directory, tmpdir) is not None:
                        break
                    # The write was shorter than the delay (small models write in a few ms on an idle
                    # machine): kill at the start of the next write instead.
                    delay, now = 0.0, None
            writing = now
            time.sleep(0.0002)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            # A temporary file outliving the process is the proof that the kill cut a write short.
            killed_in = write_in_progress(directory, tmpdir)
        for leftover in tmpdir.iterdir():  # fsspec's temporary files die with the process
            if leftover.is_file():
                leftover.unlink()
        tries.append({"directory": str(directory), "killed": bool(pid), "write": target, "killed_in": killed_in})

    for record in tries:
        last = Path(record["directory"]) / "last.ckpt"
        record["last_exists"] = last.is_file()
        if last.is_file():
            try:
                record["global_step"] = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
                record["loads"] = True
            except Exception as error:  # a truncated file: what this script counts
                record["loads"], record["error"] = False, f"{type(error).__name__}: {error}"[:200]
    json.dump({"tries": tries}, sys.stdout)


if __name__ == "__main__":
    main()
