"""``run_on_processes`` with ``--devices 2`` on the CPU: rank 0 is the launching process, failures end every rank."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest
import torch.multiprocessing as multiprocessing

from si_lightning.commands.processes import run_on_processes
from si_lightning.errors import ConfigurationError
from tests.commands.process_work import fail_on_rank, record_rank


def process_is_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(120)
def test_rank_0_runs_here_and_rank_1_in_a_spawned_process(tmp_path: Path) -> None:
    run_on_processes(functools.partial(record_rank, tmp_path), devices=2, accelerator="cpu")
    first, second = ((tmp_path / f"rank-{rank}").read_text().split() for rank in (0, 1))
    assert first == [str(os.getpid()), "2"]
    assert second[1] == "2" and second[0] != str(os.getpid())


@pytest.mark.timeout(120)
def test_a_failure_of_the_spawned_rank_is_reported_with_its_own_message(tmp_path: Path) -> None:
    # Rank 0 waits in the barrier; rank 1's exit breaks it, and the error raised is rank 1's.
    with pytest.raises(multiprocessing.ProcessRaisedException, match="a failure of rank 1"):
        run_on_processes(functools.partial(fail_on_rank, 1, tmp_path), devices=2, accelerator="cpu")
    assert not (tmp_path / "rank-0").exists()


@pytest.mark.timeout(120)
def test_a_refusal_on_rank_0_ends_the_spawned_rank(tmp_path: Path) -> None:
    # Rank 1 waits in the barrier for rank 0, which refuses: the refusal is raised as it is (one line for
    # the user) and rank 1 does not outlive it.
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="a refusal of rank 0"):
        run_on_processes(functools.partial(fail_on_rank, 0, tmp_path), devices=2, accelerator="cpu")
    assert time.monotonic() - started < 60
    spawned = tmp_path / "started-1"
    if spawned.exists():  # rank 1 may not have started its work before it was ended
        assert process_is_gone(int(spawned.read_text()))
    assert not (tmp_path / "rank-1").exists()
