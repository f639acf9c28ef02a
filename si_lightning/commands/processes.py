"""The processes of a command: one, ``--devices N`` spawned here, or those torchrun started.

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


def _spawned(local_rank: int, world_size: int, accelerator: str, work: Callable[[Processes], Any]) -> None:
    processes = _start(local_rank, world_size, local_rank, accelerator)
    try:
        work(processes)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


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
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    multiprocessing.spawn(_spawned, args=(devices, accelerator, work), nprocs=devices, join=True)
