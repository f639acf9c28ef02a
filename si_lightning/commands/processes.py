"""The processes of a command: one, ``--devices N`` (this one and N - 1 spawned), or those torchrun started.

``Processes`` gives the rank, the world size and the device of this process, and a barrier; the
sample engine needs nothing more (each rank writes its own shards, rank 0 assembles them). CPU
processes talk over gloo, CUDA processes over NCCL.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing

from si_lightning.errors import ConfigurationError

ACCELERATORS = ("auto", "cpu", "cuda")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def resolve_accelerator(accelerator: str) -> str:
    if accelerator not in ACCELERATORS:
        raise ConfigurationError("--accelerator", accelerator, f"one of {', '.join(ACCELERATORS)}")
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("--accelerator", accelerator, "cpu or auto: CUDA is not available here")
    return accelerator


@dataclass
class Processes:
    """This process's place among the command's processes."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_done(self, ok: bool) -> bool:
        """True when every process reports ``ok`` (a collective: every rank must call it)."""
        if self.world_size == 1:
            return ok
        flag = torch.tensor([1.0 if ok else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)


def _start(rank: int, world_size: int, local_rank: int, accelerator: str) -> Processes:
    if accelerator == "cpu" and world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Processes sharing the cores: more threads than cores makes each of them spin, many times slower.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if accelerator == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if accelerator == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Processes(rank, world_size, device)


def _run_as(local_rank: int, world_size: int, accelerator: str, work: Callable[[Processes], Any]) -> None:
    processes = _start(local_rank, world_size, local_rank, accelerator)
    try:
        work(processes)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawned(index: int, world_size: int, accelerator: str, work: Callable[[Processes], Any]) -> None:
    """The spawned process ``index`` is rank ``index + 1``: rank 0 is the launching process."""
    _run_as(index + 1, world_size, accelerator, work)


def _lost_a_peer(error: BaseException) -> bool:
    """True for the error a collective raises when another rank's process ended (gloo: connection closed)."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("gloo" in text or "connection closed" in text)


def _failure_of_a_spawned_process(context: multiprocessing.ProcessContext) -> BaseException | None:
    """The error a spawned process ended with, if one did (waits up to 30 s for it to end: a process that
    raised is still shutting down its interpreter when its peers see the connection close)."""
    try:
        context.join(timeout=30)
    except (multiprocessing.ProcessRaisedException, multiprocessing.ProcessExitedException) as failure:
        return failure
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_on_processes(work: Callable[[Processes], Any], devices: int, accelerator: str) -> None:
    """``work(processes)`` on each process: those of torchrun, else ``devices`` spawned ones, else this one."""
    accelerator = resolve_accelerator(accelerator)
    if launched_by_torchrun():
        world_size = int(os.environ["WORLD_SIZE"])
        processes = _start(int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]), accelerator)
        try:
            work(processes)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        return
    if devices < 1:
        raise ConfigurationError("--devices", devices, "an integer >= 1")
    if accelerator == "cuda" and devices > torch.cuda.device_count():
        raise ConfigurationError("--devices", devices, f"at most the {torch.cuda.device_count()} visible GPUs")
    if devices == 1:
        work(_start(0, 1, 0, accelerator))
        return
    # A rendezvous address of the caller's is kept; otherwise a free port for this run alone (rank 0 hosts
    # the store in this process, so a second run here must not reuse the first one's port).
    chosen = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    added = [name for name in chosen if name not in os.environ]
    os.environ.update({name: chosen[name] for name in added})
    try:
        _run_on_spawned_and_this_process(work, devices, accelerator)
    finally:
        for name in added:
            os.environ.pop(name, None)


def _run_on_spawned_and_this_process(work: Callable[[Processes], Any], devices: int, accelerator: str) -> None:
    """Ranks 1 .. N-1 spawned and rank 0 here, as Lightning's DDP does: one interpreter start fewer."""
    context = multiprocessing.start_processes(
        _spawned, args=(devices, accelerator, work), nprocs=devices - 1, join=False, start_method="spawn"
    )
    try:
        _run_as(0, devices, accelerator, work)
    except BaseException as error:
        # A spawned rank that failed first leaves this one a bare "connection closed" from its collective:
        # then the spawned rank's error, which names the cause, is reported. No spawned rank outlives this one.
        failure = _failure_of_a_spawned_process(context) if _lost_a_peer(error) else None
        for process in context.processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=10)  # reaped, not left as a zombie
        if failure is not None:
            raise failure from error
        raise
    while not context.join():
        pass
