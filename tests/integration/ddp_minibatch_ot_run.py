"""One rank of a 2-process gloo group coupling its slice of a global batch with MinibatchOT(distributed=True).

    python ddp_minibatch_ot_run.py RANK WORLD_SIZE INIT_FILE OUT_DIR METHOD BATCH_PER_RANK

Rank r couples x1[r B:(r + 1) B] (the global x1 and labels come from ``global_batch``) with a generator
seeded r, and saves its x0 and x1 to OUT_DIR/rank-r.pt; a ValueError is saved as its message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from si_lightning.couplings import ClassLabels, MinibatchOT


def global_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x1 (size, 2) from a fixed seed, shifted by class, and labels (size,) in 0..2."""
    generator = torch.Generator().manual_seed(1234)
    labels = torch.randint(3, (size,), generator=generator)
    return torch.randn(size, 2, generator=generator) + 3.0 * labels[:, None], labels


def coupling(method: str) -> ClassLabels:
    return ClassLabels(0.0, 3, inner=MinibatchOT(method=method, distributed=True))


def main() -> None:
    rank, world, init_file, out, method, per_rank = sys.argv[1:7]
    rank, world, per_rank = int(rank), int(world), int(per_rank)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x1, labels = global_batch(world * per_rank)
    mine = slice(rank * per_rank, (rank + 1) * per_rank - (1 if rank == 1 and method == "unequal" else 0))
    generator = torch.Generator().manual_seed(rank)
    try:
        batch = coupling("exact" if method == "unequal" else method)(x1[mine], labels[mine], generator)
        result = {"x0": batch.x0, "x1": batch.x1}
    except ValueError as error:
        result = {"error": str(error)}
    torch.save(result, Path(out) / f"rank-{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
