"""LatentDataModule: memory-mapped shards the test writes, the stored mirror as the training flip, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from si_lightning.couplings import ClassLabels
from si_lightning.data import LatentDataModule
from si_lightning.seeding import derived_seed
from tests.test_data import training_view

SHAPE = (4, 2, 3)  # (C, h, w): w != h, so a mirror is not a transpose


def write_latents(root: Path, counts: tuple[int, ...] = (3, 3, 2), shape: tuple[int, ...] = SHAPE) -> dict:
    """Shards in precompute_latents.py's format; flipped latents independent of the latents (a VAE is not
    flip-equivariant), labels alternating over 2 classes. Returns the concatenated contents."""
    root.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    total = sum(counts)
    latents = torch.randn(total, *shape, generator=generator)
    flipped = torch.randn(total, *shape, generator=generator)
    labels = torch.arange(total) % 2
    start = 0
    for shard, count in enumerate(counts):
        part = slice(start, start + count)
        content = {"latents": latents[part].clone(), "flipped": flipped[part].clone(), "labels": labels[part].clone()}
        torch.save(
            {**content, "files": [f"{i}.png" for i in range(start, start + count)]}, root / f"shard-{shard:06d}.pt"
        )
        start += count
    index = {"classes": ["cat", "dog"], "num_images": total, "shard_size": counts[0], "scale": 0.5}
    index["autoencoder"] = "package.module:factory"
    (root / "index.json").write_text(json.dumps(index))
    return {"latents": latents, "flipped": flipped, "labels": labels}


def module_for(root: Path, **settings) -> LatentDataModule:
    options = {"batch_size": 2, "num_workers": 0, "val_fraction": 0.25} | settings
    module = LatentDataModule(str(root), **options)
    module.setup("fit")
    return module


def test_shards_are_memory_mapped_and_read_across_shard_boundaries(tmp_path) -> None:
    written = write_latents(tmp_path / "latents")
    module = module_for(tmp_path / "latents")
    assert module.data_shape == SHAPE and module.dataset_classes == 2
    assert (module.autoencoder, module.autoencoder_scale) == ("package.module:factory", 0.5)
    assert module.hparams == {
        "root": str(tmp_path / "latents"),
        "autoencoder": "package.module:factory",
        "autoencoder_scale": 0.5,
    }
    train, val = module.dataset("train"), module.dataset("val")
    assert len(train) + len(val) == 8 and len(val) == 2 and module.dataset("test") is val
    for dataset in (train, val):
        x, labels, positions = dataset.__getitems__(list(range(len(dataset))))
        assert torch.equal(labels, written["labels"][dataset.indices])
        assert torch.equal(positions, torch.arange(len(dataset)))
        if dataset is val:  # validation: the latents only, never a mirror
            assert torch.equal(x, written["latents"][dataset.indices])
        else:  # training: each item with its stored mirror, for the device to choose from
            assert torch.equal(x, torch.stack([written["latents"], written["flipped"]], 1)[dataset.indices])
    # The shards are mapped from their files, not read into memory.
    shard = train.shards.shard(1)["latents"]
    mapped = [line.split()[0] for line in Path("/proc/self/maps").read_text().splitlines() if "shard-000001.pt" in line]
    ranges = [tuple(int(bound, 16) for bound in text.split("-")) for text in mapped]
    assert any(low <= shard.data_ptr() < high for low, high in ranges), (mapped, hex(shard.data_ptr()))
    # real_samples: latents without the mirror, as the evaluation callbacks use them.
    generator = torch.Generator().manual_seed(3)
    real = module.real_samples(4, generator)
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(3))[:4].sort().values
    assert torch.equal(real, written["latents"][train.indices[chosen]])


def test_training_flip_is_the_stored_mirror_drawn_from_the_global_batch_generator(tmp_path) -> None:
    written = write_latents(tmp_path / "latents", counts=(5, 5, 5, 1))
    coupling = ClassLabels(drop_probability=0.0, num_classes=2)

    def fresh(epoch: int) -> LatentDataModule:
        module = training_view(module_for(tmp_path / "latents", seed=7, coupling=coupling), epoch=epoch)
        return module

    mirrored_count, total = 0, 0
    for epoch in range(20):
        module = fresh(epoch)
        train = module.dataset("train")
        loader = module.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for number, raw in enumerate(loader):
            batch = module.on_after_batch_transfer(module.on_before_batch_transfer(raw, 0), 0)
            items = train.indices[raw[2]]
            # The flip of batch b of epoch e: the first draw of the generator seeded by (seed, e, b).
            generator = torch.Generator().manual_seed(derived_seed(7, "training", epoch, number, 0))
            mirrored = torch.rand(len(items), generator=generator) < 0.5
            expected = torch.where(mirrored.view(-1, 1, 1, 1), written["flipped"][items], written["latents"][items])
            assert torch.equal(batch.x1, expected)
            assert torch.equal(batch.cond.labels, written["labels"][items])
            mirrored_count, total = mirrored_count + int(mirrored.sum()), total + len(items)
        if epoch == 0:  # the same (seed, epoch, batch) in a new datamodule gives the same batch
            again = fresh(0)
            raw = next(iter(again.train_dataloader()))
            first = next(iter(module.train_dataloader()))
            one = module.on_after_batch_transfer(module.on_before_batch_transfer(first, 0), 0)
            other = again.on_after_batch_transfer(again.on_before_batch_transfer(raw, 0), 0)
            assert torch.equal(one.x1, other.x1) and torch.equal(one.x0, other.x0)
    assert abs(mirrored_count / total - 0.5) < 5 * math.sqrt(0.25 / total)
    # Without horizontal_flip the training set yields the latents alone and nothing is mirrored.
    plain = training_view(module_for(tmp_path / "latents", horizontal_flip=False, coupling=coupling))
    raw = next(iter(plain.train_dataloader()))
    batch = plain.on_after_batch_transfer(plain.on_before_batch_transfer(raw, 0), 0)
    assert torch.equal(batch.x1, written["latents"][plain.dataset("train").indices[raw[2]]])


def test_bad_input_is_one_line_naming_the_setting(tmp_path) -> None:
    with pytest.raises(
        ValueError, match=r"root must be a directory of latent shards .*, got '.*absent': it is not a directory"
    ):
        LatentDataModule(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"root must be .*, got '.*empty': it has no index.json"):
        LatentDataModule(str(tmp_path / "empty"))
    write_latents(tmp_path / "gap")
    (tmp_path / "gap" / "shard-000001.pt").unlink()
    with pytest.raises(ValueError, match=r"root must be .*, got '.*gap': shard-000001.pt of 3 is missing"):
        LatentDataModule(str(tmp_path / "gap"))
    write_latents(tmp_path / "mixed")
    other = torch.load(tmp_path / "mixed" / "shard-000002.pt", weights_only=True)
    other["latents"] = other["flipped"] = torch.zeros(2, 4, 4, 4)
    torch.save(other, tmp_path / "mixed" / "shard-000002.pt")
    module = LatentDataModule(str(tmp_path / "mixed"), num_workers=0, batch_size=2)  # shard 0 decides the shape
    with pytest.raises(ValueError, match=r"shard-000002.pt holds latents of shape \(4, 4, 4\), expected \(4, 2, 3\)"):
        module.setup("fit")
    with pytest.raises(ValueError, match="ClassLabels has num_classes=10 but the data has 2 classes"):
        LatentDataModule(str(tmp_path / "mixed"), coupling=ClassLabels(num_classes=10))
    with pytest.raises(ValueError, match="val_fraction must be in"):
        LatentDataModule(str(tmp_path / "mixed"), val_fraction=1.0)
    with pytest.raises(ValueError, match=r"autoencoder_scale must be a number > 0 \(or None\), got -1"):
        LatentDataModule(str(tmp_path / "mixed"), autoencoder_scale=-1)
    with pytest.raises(ValueError, match="autoencoder must be a local AutoencoderKL folder or module:factory, got ''"):
        LatentDataModule(str(tmp_path / "mixed"), autoencoder="")
