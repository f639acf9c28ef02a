"""The training order: global batches independent of the device count, resumable mid-epoch."""

from __future__ import annotations

import pytest
import torch

from si_lightning.data.order import GlobalOrderSampler, ResumableLoader


def batches(sampler: GlobalOrderSampler) -> list[list[int]]:
    indices = list(sampler)
    return [indices[start : start + sampler.batch_size] for start in range(0, len(indices), sampler.batch_size)]


@pytest.mark.parametrize("world_size", [2, 4])
def test_global_batches_are_the_same_on_any_number_of_devices(world_size):
    dataset = range(1000)
    single = GlobalOrderSampler(dataset, 64, rank=0, world_size=1, seed=7)
    shards = [GlobalOrderSampler(dataset, 64 // world_size, rank, world_size, seed=7) for rank in range(world_size)]
    for epoch in (0, 3):
        for sampler in (single, *shards):
            sampler.set_epoch(epoch)
        expected = batches(single)
        assert len(expected) == 1000 // 64  # the incomplete last global batch is dropped
        parts = [batches(shard) for shard in shards]
        for number, global_batch in enumerate(expected):
            assert [index for part in parts for index in part[number]] == global_batch  # rank r holds part r
        everything = [index for batch in expected for index in batch]
        assert len(set(everything)) == len(everything)  # without replacement
    single.set_epoch(0)
    first = batches(single)
    single.set_epoch(1)
    assert batches(single) != first


def test_the_loader_restarts_an_epoch_at_the_batch_after_the_last_consumed_one():
    dataset = torch.arange(200)
    position = {"value": (2, 5)}
    loader = ResumableLoader(dataset, sampler=GlobalOrderSampler(dataset, 10, 0, 1, seed=1), batch_size=10,
                             drop_last=True, consumed=lambda: position["value"])  # fmt: skip
    assert loader.state_dict() == {"epoch": 2, "batches": 5}
    loader.sampler.set_epoch(2)
    whole = [batch.tolist() for batch in loader]
    resumed = ResumableLoader(dataset, sampler=GlobalOrderSampler(dataset, 10, 0, 1, seed=1), batch_size=10,
                              drop_last=True, consumed=lambda: (0, 0))  # fmt: skip
    resumed.load_state_dict({"epoch": 2, "batches": 5})
    assert [batch.tolist() for batch in resumed] == whole[5:]
    assert [batch.tolist() for batch in resumed] == whole  # only the first pass after a resume is shortened
    # A checkpoint at the end of an epoch: the next one starts from its first batch.
    resumed.load_state_dict({"epoch": 2, "batches": 20})
    assert resumed.sampler.epoch == 3 and resumed.sampler.skip_batches == 0


def test_a_batch_larger_than_the_data_is_refused():
    with pytest.raises(ValueError, match=r"batch_size 64 x 4 devices exceeds the 200 training samples"):
        GlobalOrderSampler(range(200), 64, 0, 4, seed=0)


def test_a_coupling_that_gathers_itself_is_refused_when_the_datamodule_gathers():
    from si_lightning.couplings import MinibatchOT
    from si_lightning.data import DigitsDataModule

    with pytest.raises(ValueError, match=r"MinibatchOT distributed = True: with device_invariant = true"):
        DigitsDataModule(coupling=MinibatchOT(distributed=True))
    module = DigitsDataModule(coupling=MinibatchOT(distributed=True), device_invariant=False)
    assert module.device_invariant is False
