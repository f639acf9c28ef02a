"""Work for ``run_on_processes`` in tests: module-level callables, so spawned processes can unpickle them."""

from __future__ import annotations

import os
from pathlib import Path

from si_lightning.commands.processes import Processes
from si_lightning.errors import ConfigurationError


def record_rank(directory: Path, processes: Processes) -> None:
    """Writes ``rank-R`` holding this process's id and the world size, after a barrier."""
    processes.barrier()
    (directory / f"rank-{processes.rank}").write_text(f"{os.getpid()} {processes.world_size}")


def fail_on_rank(failing_rank: int, directory: Path, processes: Processes) -> None:
    """``failing_rank`` raises before the barrier the others wait in; the others would then record their rank."""
    (directory / f"started-{processes.rank}").write_text(str(os.getpid()))
    if processes.rank == failing_rank:
        if failing_rank == 0:
            raise ConfigurationError("--seeds", "x", f"a refusal of rank {failing_rank}")
        raise ValueError(f"a failure of rank {failing_rank}")
    record_rank(directory, processes)
