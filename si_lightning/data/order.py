"""The training order: one global permutation per epoch, split into global batches, resumable mid-epoch.

Epoch e visits the data in the order of a permutation drawn from (seed, e). Global batch b is the
slice [b G, (b + 1) G) of it, G = batch size x world size, and rank r takes the contiguous part
[b G + r B, b G + (r + 1) B). So the samples of a global batch, and where each sits in it, are the
same on 1 device or 8 (what makes a 2-device run equal a 1-device run with twice the batch). The
last incomplete global batch is dropped.

Resume: the loader is stateful (``state_dict``/``load_state_dict``, which Lightning stores in the
checkpoint): it records the epoch and how many batches of it the training loop consumed, and a
restored loader starts the epoch at the next batch, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from si_lightning.seeding import derived_seed


class GlobalOrderSampler(DistributedSampler):
    """Indices of rank ``rank``'s batches, in order, for the epoch set by ``set_epoch``.

    A DistributedSampler, so Lightning does not wrap it again; it is one with ``num_replicas = 1`` too.

    Args:
        dataset: anything with ``len``.
        batch_size: per-device batch size B.
        rank, world_size: this device's global rank and the number of devices.
        seed: the order of epoch e is ``randperm`` drawn from a generator seeded by (seed, e).
    """

    def __init__(self, dataset: Dataset, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.batches_per_epoch = len(dataset) // (batch_size * world_size)  # type: ignore[arg-type]
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"batch_size {batch_size} x {world_size} devices exceeds the {len(dataset)} training samples; "  # type: ignore[arg-type]
                "every epoch would be empty (the last incomplete batch is dropped)"
            )
        self.skip_batches = 0  # batches of the current epoch already consumed before a resume
        self._positions_epoch, self._positions = -1, torch.empty(0, dtype=torch.long)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The global permutation of epoch ``epoch`` (len(dataset),)."""
        generator = torch.Generator().manual_seed(derived_seed(self.seed, "epoch", epoch))
        return torch.randperm(len(self.dataset), generator=generator)  # type: ignore[arg-type]

    def batch_number(self, index: int) -> int:
        """The global batch of the current epoch that holds data index ``index``."""
        if self._positions_epoch != self.epoch:
            order = self.epoch_order(self.epoch)
            self._positions = torch.empty_like(order)
            self._positions[order] = torch.arange(order.numel())
            self._positions_epoch = self.epoch
        return int(self._positions[index]) // (self.batch_size * self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order(self.epoch)
        global_batch = self.batch_size * self.num_replicas
        skip, self.skip_batches = self.skip_batches, 0  # only the first pass after a resume is shortened
        for batch in range(skip, self.batches_per_epoch):
            start = batch * global_batch + self.rank * self.batch_size
            yield from order[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size


class ResumableLoader(DataLoader):
    """A DataLoader over a ``GlobalOrderSampler`` whose state is (epoch, batches consumed).

    ``consumed`` is asked when the state is saved: how many batches of the current epoch the training
    loop has taken (the loader itself runs ahead of the loop by its prefetch).
    """

    def __init__(self, *args: Any, consumed: Callable[[], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed = consumed

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.consumed()
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        sampler = self.sampler
        assert isinstance(sampler, GlobalOrderSampler)
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        # Saved at the end of an epoch: the next one starts from its first batch.
        sampler.set_epoch(epoch + batches // sampler.batches_per_epoch)
        sampler.skip_batches = batches % sampler.batches_per_epoch
