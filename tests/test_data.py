"""Datamodules: toy statistics against closed forms, the embedded digits, image files the test writes."""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from si_lightning.couplings import Batch, ClassLabels, Coupling, Inpainting, SuperResolution
from si_lightning.data import TOYS, DigitsDataModule, ImageDataModule, ToyDataModule
from si_lightning.interpolants import Interpolant

COUNT = 40000


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(name: str, count: int = COUNT, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, labels = TOYS[name]().sample(count, seeded(seed))
    return x, labels


def assert_mean(sample: torch.Tensor, expected: torch.Tensor) -> None:
    """Sample mean over dim 0 within 5 standard errors (per coordinate) of ``expected``."""
    standard_error = sample.std(dim=0) / math.sqrt(sample.shape[0])
    assert bool(((sample.mean(dim=0) - expected).abs() < 5 * standard_error).all()), (sample.mean(dim=0), expected)


def first_batch(datamodule, split: str = "train") -> Batch:
    loader = getattr(datamodule, f"{split}_dataloader")()
    return datamodule.on_after_batch_transfer(next(iter(loader)), 0)


# ------------------------------------------------------------------------------------------------ toys
def test_eight_gaussians_components_sit_on_the_circle():
    x, labels = draw("8-gaussians")
    for k in range(8):
        part = x[labels == k]
        angle = 2 * math.pi * k / 8
        assert_mean(part, 2.0 * torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64))
        variance = part.var(dim=0)
        assert bool(((variance - 0.04).abs() < 5 * 0.04 * math.sqrt(2 / (len(part) - 1))).all())
    counts = torch.bincount(labels, minlength=8).double()
    assert bool(((counts / COUNT - 1 / 8).abs() < 5 * math.sqrt((1 / 8) * (7 / 8) / COUNT)).all())


def test_checkerboard_fills_the_even_squares_uniformly():
    x, labels = draw("checkerboard")
    assert bool((labels == -1).all())
    assert bool(((x >= -2) & (x < 2)).all())
    cell = torch.floor(x + 2).long()
    assert bool(((cell[:, 0] + cell[:, 1]) % 2 == 0).all())  # density 1/8 on even squares, 0 elsewhere
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16).double()
    even = torch.tensor([(i + j) % 2 == 0 for i in range(4) for j in range(4)])
    share = counts[even] / COUNT
    assert bool(((share - 1 / 8).abs() < 5 * math.sqrt((1 / 8) * (7 / 8) / COUNT)).all())
    # Uniform inside each square: the offset in the square has mean 1/2, variance 1/12.
    offset = x + 2 - cell
    assert_mean(offset, torch.full((2,), 0.5, dtype=torch.float64))
    assert bool(((offset.var(dim=0) - 1 / 12).abs() < 5 * math.sqrt(1 / 180 / COUNT)).all())


def test_two_moons_means_and_radii():
    x, labels = draw("two-moons")
    offset = torch.tensor([0.5, 0.25], dtype=torch.float64)
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    means = torch.tensor([[0.0, 2 / math.pi], [1.0, 0.5 - 2 / math.pi]], dtype=torch.float64)  # E(cos u), E(sin u)
    for moon in range(2):
        part = x[labels == moon]
        assert_mean(part, 2 * (means[moon] - offset))
        # |x - 2 (c - offset)|^2 = 4 + 4 s (u . n) + s^2 |n|^2 has mean 4 + 2 s^2 with s = 0.1.
        squared = (part - 2 * (centres[moon] - offset)).pow(2).sum(-1, keepdim=True)
        assert_mean(squared, torch.tensor([4 + 2 * 0.01], dtype=torch.float64))


def test_spirals_arm_means_and_second_moment():
    x, labels = draw("spirals")
    # E[3u cos(3 pi u)] = -2 / (3 pi^2), E[3u sin(3 pi u)] = 1 / pi; arm 1 is arm 0 rotated by pi.
    arm = torch.tensor([-2 / (3 * math.pi**2), 1 / math.pi], dtype=torch.float64)
    assert_mean(x[labels == 0], arm)
    assert_mean(x[labels == 1], -arm)
    # E|x|^2 = E[9 u^2] + 2 s^2 = 3 + 2 (0.1)^2.
    assert_mean(x.pow(2).sum(-1, keepdim=True), torch.tensor([3.02], dtype=torch.float64))


def test_gaussian_mixture_moments_and_oracle():
    x, labels = draw("gaussian-mixture")
    toy = TOYS["gaussian-mixture"]()
    weights, means, covariances = toy.mixture()
    mean = (weights[:, None] * means).sum(0)
    assert_mean(x, mean)
    second = (weights[:, None, None] * (covariances + means[:, :, None] * means[:, None, :])).sum(0)
    covariance = second - mean[:, None] * mean[None, :]
    products = (x - mean)[:, :, None] * (x - mean)[:, None, :]  # unbiased for the covariance given the mean
    assert_mean(products.reshape(COUNT, 4), covariance.reshape(4))
    for k in range(3):
        assert_mean(x[labels == k], means[k])
    # At t = 1 the oracle's density is the toy's: log sum_k p_k N(x; mu_k, S_k), computed independently here.
    for name in ("gaussian-mixture", "8-gaussians"):
        interpolant = Interpolant(schedule="linear", gamma="zero")
        oracle = ToyDataModule(name).oracle(interpolant)
        assert oracle.interpolant is interpolant
        weights, means, covariances = TOYS[name]().mixture()
        points, _ = draw(name, count=200, seed=3)
        components = torch.distributions.MultivariateNormal(means, covariance_matrix=covariances)
        expected = torch.logsumexp(weights.log() + components.log_prob(points[:, None, :]), dim=-1)
        torch.testing.assert_close(oracle.log_prob(torch.ones(200, dtype=torch.float64), points), expected)


def test_toy_module_is_deterministic_from_the_seed_and_couples_batches():
    first, again, other = (ToyDataModule("two-moons", num_samples=512, val_samples=64, seed=s) for s in (0, 0, 1))
    for module in (first, again, other):
        module.setup("fit")
    assert torch.equal(first.dataset("train").data, again.dataset("train").data)
    assert not torch.equal(first.dataset("train").data, other.dataset("train").data)
    assert not torch.equal(first.dataset("train").data[:64], first.dataset("val").data)
    assert first.data_shape == (2,) and first.cond_channels == 0 and first.num_classes == 0 and first.gaussian_base
    batch = first_batch(first, "val")
    assert batch.x0.shape == batch.x1.shape == (64, 2) and batch.cond.labels is None  # labels need ClassLabels
    # Outside training the base noise is seeded by the batch: the same in every validation run.
    assert torch.equal(batch.x0, first_batch(first, "val").x0)
    assert first.real_samples(100, seeded(1)).shape == (100, 2)


def test_toy_module_passes_labels_through_class_labels():
    module = ToyDataModule("spirals", num_samples=256, batch_size=64, coupling=ClassLabels(0.0, num_classes=2))
    assert module.num_classes == 2
    module.setup("fit")
    raw = next(iter(module.train_dataloader()))
    batch = module.on_after_batch_transfer(raw, 0)
    assert torch.equal(batch.cond.labels, raw[1]) and torch.equal(batch.x1, raw[0])


def training_view(module, rank: int = 0, world_size: int = 1, epoch: int = 0):
    """What the datamodule reads of a Trainer in the training loop (rank, world size, epoch)."""
    module.trainer = SimpleNamespace(training=True, global_rank=rank, world_size=world_size, current_epoch=epoch)
    return module


def training_batches(module, count: int) -> list[Batch]:
    """The first ``count`` coupled training batches, through both transfer hooks as in the fit loop."""
    batches = []
    for raw in module.train_dataloader():
        batches.append(module.on_after_batch_transfer(module.on_before_batch_transfer(raw, 0), 0))
        if len(batches) == count:
            return batches
    return batches


def test_training_noise_is_a_function_of_epoch_and_batch_and_resumes_without_state():
    def fresh() -> ToyDataModule:
        module = training_view(ToyDataModule("8-gaussians", num_samples=256, batch_size=32))
        module.setup("fit")
        return module

    first = training_batches(fresh(), 4)
    again = training_batches(fresh(), 4)
    for one, other in zip(first, again, strict=True):  # a new process draws the same batches
        assert torch.equal(one.x0, other.x0) and torch.equal(one.x1, other.x1)
    assert not torch.equal(first[0].x0, first[1].x0)  # a fresh draw for every batch
    # A resume after 2 batches: the loader's state restarts the epoch at batch 2, with batch 2's noise.
    resumed = fresh()
    loader = resumed.train_dataloader()
    loader.load_state_dict({"epoch": 0, "batches": 2})
    raw = next(iter(loader))
    batch = resumed.on_after_batch_transfer(resumed.on_before_batch_transfer(raw, 0), 0)
    assert torch.equal(batch.x0, first[2].x0) and torch.equal(batch.x1, first[2].x1)
    # Another epoch: another order and other noise.
    later = fresh()
    later.trainer.current_epoch = 1
    loader = later.train_dataloader()
    loader.sampler.set_epoch(1)
    raw = next(iter(loader))
    assert not torch.equal(later.on_after_batch_transfer(later.on_before_batch_transfer(raw, 0), 0).x1, first[0].x1)


def test_toy_module_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown toy 'moons'; expected one of: 8-gaussians, checkerboard"):
        ToyDataModule("moons")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        ToyDataModule(batch_size=0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got -5"):
        ToyDataModule(num_samples=-5)
    with pytest.raises(ValueError, match="batch_size 512 exceeds the 100 training samples"):
        ToyDataModule(num_samples=100, batch_size=512).setup("fit")
    with pytest.raises(ValueError, match="needs image data"):
        ToyDataModule(coupling=SuperResolution(2))
    with pytest.raises(ValueError, match="ClassLabels has num_classes=3 but the data has 2 classes"):
        ToyDataModule("two-moons", coupling=ClassLabels(num_classes=3))
    with pytest.raises(ValueError, match="ToyDataModule data has no class labels"):
        ToyDataModule("checkerboard", coupling=ClassLabels(num_classes=2))
    with pytest.raises(ValueError, match="toy 'spirals' has no closed-form oracle; only these do: 8-gaussians"):
        ToyDataModule("spirals").oracle(Interpolant(schedule="linear", gamma="zero"))

    class ShiftedBase(Coupling):
        def couple(self, x1, labels, generator):
            raise AssertionError("not drawn")

    with pytest.raises(ValueError, match="the oracle assumes an independent Gaussian base"):
        ToyDataModule("8-gaussians", coupling=ShiftedBase()).oracle(Interpolant(schedule="linear", gamma="zero"))


# ---------------------------------------------------------------------------------------------- digits
def test_digits_are_the_embedded_images_in_minus_one_to_one():
    module = DigitsDataModule()
    module.setup("fit")
    train, val = module.dataset("train"), module.dataset("val")
    assert len(train) + len(val) == 1797 and len(val) == 180
    everything = torch.cat([train.data, val.data])
    assert everything.shape == (1797, 1, 8, 8)
    assert everything.min().item() == -1.0 and everything.max().item() == 1.0
    # x = v / 8 - 1 for integer v in 0..16: exactly on that grid.
    levels = (everything + 1) * 8
    assert torch.equal(levels, levels.round())
    assert torch.equal(torch.cat([train.labels, val.labels]).unique(), torch.arange(10))
    assert module.data_shape == (1, 8, 8) and module.dataset_classes == 10 and module.num_classes == 0
    # The split is fixed: another seed holds out the same images.
    other = DigitsDataModule(seed=5)
    other.setup("fit")
    assert torch.equal(other.dataset("val").data, val.data)


def test_digits_upsampling_shapes_and_values():
    native = DigitsDataModule()
    native.setup()
    nearest = DigitsDataModule(image_size=16, resize_mode="nearest")
    nearest.setup()
    # Nearest doubling repeats every pixel in a 2 x 2 block.
    expected = native.dataset("val").data.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(nearest.dataset("val").data, expected)
    bilinear = DigitsDataModule(image_size=32, batch_size=64)
    bilinear.setup()
    data = bilinear.dataset("train").data
    assert data.shape[1:] == (1, 32, 32) and bilinear.data_shape == (1, 32, 32)
    assert data.min().item() >= -1.0 and data.max().item() <= 1.0
    batch = first_batch(bilinear)
    assert batch.x1.shape == (64, 1, 32, 32) and batch.x0.shape == (64, 1, 32, 32)


def test_digits_with_inpainting_and_labels():
    coupling = ClassLabels(0.5, num_classes=10, inner=Inpainting(tiles=16))
    module = DigitsDataModule(image_size=16, batch_size=32, coupling=coupling)
    assert module.cond_channels == 2 and module.num_classes == 10 and not module.gaussian_base
    module.setup("fit")
    batch = first_batch(module)
    assert batch.cond.channels.shape == (32, module.cond_channels, 16, 16)
    assert batch.cond.labels.min() >= 0 and batch.cond.labels.max() <= 10
    keep = batch.cond.channels[:, :1].bool()
    assert torch.equal(batch.x0[keep], batch.x1[keep])
    reference = module.real_samples(100, seeded(0))
    assert reference.shape == (100, 1, 16, 16) and reference.min() >= -1 and reference.max() <= 1


def test_digits_reject_bad_settings():
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        DigitsDataModule(image_size=0)
    with pytest.raises(ValueError, match="image size 10x10 is not divisible by the super-resolution factor 4"):
        DigitsDataModule(image_size=10, coupling=SuperResolution(factor=4))
    with pytest.raises(ValueError, match="unknown resize_mode 'bicubic'; expected one of: bilinear, nearest"):
        DigitsDataModule(resize_mode="bicubic")
    with pytest.raises(ValueError, match="val_fraction must be in \\(0, 1\\), got 1.0"):
        DigitsDataModule(val_fraction=1.0)
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0, got -1"):
        DigitsDataModule(num_workers=-1)
    with pytest.raises(ValueError, match="count must be in \\[1, 1617\\] for the train split, got 5000"):
        DigitsDataModule().real_samples(5000)
    with pytest.raises(ValueError, match="unknown split 'training'; expected one of: train, val, test"):
        DigitsDataModule().dataset("training")


# ----------------------------------------------------------------------------- image files the test writes
def write_cifar(root: Path, per_batch: int = 2, test_count: int = 3) -> dict[str, np.ndarray]:
    """CIFAR-10's python format: pickled dicts with 'data' (N, 3072) uint8 and 'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    names = [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]
    for number, name in enumerate(names):
        count = test_count if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = [(number + index) % 10 for index in range(count)]
        with open(folder / name, "wb") as file:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, file)
        written[name] = data
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": [f"class{index}" for index in range(10)]}, file)
    return written


def test_cifar10_reads_the_pickle_batches(tmp_path):
    written = write_cifar(tmp_path)
    module = ImageDataModule("cifar10", root=str(tmp_path), val_fraction=0.2, batch_size=2, num_workers=0)
    module.prepare_data()  # without download=True: reads nothing from the network
    module.setup("fit")
    assert len(module.dataset("train")) == 8 and len(module.dataset("val")) == 2 and len(module.dataset("test")) == 3
    assert module.data_shape == (3, 32, 32) and module.horizontal_flip
    test = module.test_dataloader()
    raw = next(iter(test))
    batch = module.on_after_batch_transfer(raw, 0)
    expected = torch.from_numpy(written["test_batch"][:2]).reshape(2, 3, 32, 32).float() / 127.5 - 1
    torch.testing.assert_close(batch.x1, expected, rtol=0, atol=1e-6)
    assert raw[0].dtype == torch.uint8 and raw[1].tolist() == [5, 6]  # labels (5 + index) % 10
    assert batch.x1.min() >= -1 and batch.x1.max() <= 1


def test_training_images_are_flipped_half_the_time(tmp_path):
    """Flips happen on the device, drawn from each training batch's generator: about half of them."""
    write_cifar(tmp_path, per_batch=4)
    module = ImageDataModule("cifar10", root=str(tmp_path), val_fraction=0.1, batch_size=4, num_workers=0)
    module.setup("fit")
    train = module.dataset("train")
    mirrored, total = 0, 0
    for epoch in range(100):
        training_view(module, epoch=epoch)
        loader = module.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for raw in loader:
            x1, _, index = raw
            batch = module.on_after_batch_transfer(module.on_before_batch_transfer(raw, 0), 0)
            original = train.data[index].float() / 127.5 - 1
            same = (batch.x1 == original).flatten(1).all(1)
            flipped = (batch.x1 == original.flip(-1)).flatten(1).all(1)
            assert bool((same ^ flipped).all())  # each image is itself or its mirror, never both
            mirrored, total = mirrored + int(flipped.sum()), total + index.numel()
    assert abs(mirrored / total - 0.5) < 5 * math.sqrt(0.25 / total)
    val, _, index = module.dataset("val").__getitems__([0])
    assert torch.equal(val, module.dataset("val").data[index])  # validation images are never flipped
    unflipped = ImageDataModule("cifar10", root=str(tmp_path), horizontal_flip=False, num_workers=0, batch_size=4)
    unflipped.setup("fit")
    x, _, index = unflipped.dataset("train").__getitems__([0, 1])
    assert torch.equal(x, unflipped.dataset("train").data[index])


def test_cifar10_missing_is_a_clear_error_and_never_downloads(tmp_path):
    module = ImageDataModule("cifar10", root=str(tmp_path / "absent"), num_workers=0)
    module.prepare_data()
    assert not (tmp_path / "absent").exists()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/data_batch_1 does not exist. Pass download=True"):
        module.setup("fit")
    # With download=True but the files present, prepare_data reads them and downloads nothing.
    write_cifar(tmp_path / "present")
    present = ImageDataModule("cifar10", root=str(tmp_path / "present"), download=True, num_workers=0, batch_size=2)
    present.source.download = lambda: pytest.fail("downloaded although the files exist")
    present.prepare_data()
    missing = ImageDataModule("cifar10", root=str(tmp_path / "absent"), download=True, num_workers=0)
    calls = []
    missing.source.download = lambda: calls.append("download")
    missing.prepare_data()
    assert calls == ["download"]


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, 0x08 = ubyte, ndim), big-endian sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_raw_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train_images = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    test_images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train_images)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(10) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte", test_images)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([3, 1, 4, 1]))
    module = ImageDataModule("mnist", root=str(tmp_path), val_fraction=0.2, batch_size=4, num_workers=0)
    assert module.data_shape == (1, 28, 28) and not module.horizontal_flip
    module.setup("fit")
    assert len(module.dataset("train")) == 8 and len(module.dataset("val")) == 2
    batch = first_batch(module, "test")
    torch.testing.assert_close(batch.x1, torch.from_numpy(test_images).unsqueeze(1).float() / 127.5 - 1)
    resized = ImageDataModule("mnist", root=str(tmp_path), image_size=32, batch_size=4, num_workers=0)
    resized.setup("fit")
    assert resized.dataset("train").data.shape == (9, 1, 32, 32)
    with pytest.raises(ValueError, match="image size 28x28 is not divisible by the 8x8 grid of 64 tiles"):
        ImageDataModule("mnist", root=str(tmp_path), coupling=Inpainting(tiles=64))


def write_folder(root: Path, per_class: int = 3) -> None:
    """Two classes of constant-colour 20 x 12 PNGs: resizing and cropping keep the colour exactly."""
    for label, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            colour = (40 * index + 100 * label, 10 * index, 255 - 50 * label)
            Image.new("RGB", (20, 12), colour).save(root / name / f"{index}.png")


def test_image_folder_resizes_crops_and_labels(tmp_path):
    write_folder(tmp_path)
    module = ImageDataModule(
        "image-folder", root=str(tmp_path), image_size=8, val_fraction=0.34, batch_size=2, num_workers=0
    )
    assert module.data_shape == (3, 8, 8) and module.dataset_classes is None
    module.setup("fit")
    assert module.dataset_classes == 2
    assert len(module.dataset("train")) == 4 and module.dataset("test") is module.dataset("val")
    loader = module.val_dataloader()
    batch = module.on_after_batch_transfer(next(iter(loader)), 0)
    assert batch.x1.shape == (2, 3, 8, 8)
    for x, label, index in zip(*next(iter(loader)), strict=True):
        path, expected_label = module.dataset("val").samples[int(index)]
        assert int(label) == expected_label == (0 if "cats" in path else 1)
        colour = torch.tensor(Image.open(path).getpixel((0, 0)), dtype=torch.uint8)
        assert torch.equal(x, colour.view(3, 1, 1).expand(3, 8, 8))
    reference = module.real_samples(4, seeded(0))
    assert reference.shape == (4, 3, 8, 8) and reference.dtype == torch.float32


def test_image_folder_rejects_bad_settings(tmp_path):
    write_folder(tmp_path / "images")
    with pytest.raises(ValueError, match="image-folder needs an image_size .* got None"):
        ImageDataModule("image-folder", root=str(tmp_path / "images"))
    with pytest.raises(ValueError, match="image-folder cannot be downloaded"):
        ImageDataModule("image-folder", root=str(tmp_path / "images"), image_size=8, download=True)
    with pytest.raises(FileNotFoundError, match="image folder not found: .*nowhere does not exist"):
        ImageDataModule("image-folder", root=str(tmp_path / "nowhere"), image_size=8, batch_size=2).setup("fit")
    with pytest.raises(ValueError, match="ClassLabels has num_classes=3 but the data has 2 classes"):
        ImageDataModule(
            "image-folder", root=str(tmp_path / "images"), image_size=8, batch_size=2, coupling=ClassLabels(0.1, 3)
        ).setup("fit")
    with pytest.raises(ValueError, match="unknown image dataset 'cifar100'; expected one of: cifar10, image-folder"):
        ImageDataModule("cifar100")
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        ImageDataModule("cifar10", image_size=0)
    with pytest.raises(ValueError, match="image size 32x32 is not divisible by the super-resolution factor 3"):
        ImageDataModule("cifar10", coupling=SuperResolution(factor=3))
    labelled = ImageDataModule(
        "image-folder",
        root=str(tmp_path / "images"),
        image_size=8,
        batch_size=2,
        num_workers=2,
        coupling=ClassLabels(0.0, 2),
    )
    labelled.setup("fit")
    assert first_batch(labelled).cond.labels.shape == (2,)


def test_real_samples_with_skip_are_the_next_points_of_the_same_permutation():
    """skip = 0 and skip = 500 with one seed are the two halves of the first 1000 points: disjoint by position."""
    data = DigitsDataModule()

    def rows(images: torch.Tensor) -> list[tuple[float, ...]]:
        return sorted(tuple(row) for row in images.flatten(1).tolist())

    first = data.real_samples(500, torch.Generator().manual_seed(0))
    second = data.real_samples(500, torch.Generator().manual_seed(0), skip=500)
    both = data.real_samples(1000, torch.Generator().manual_seed(0))
    assert rows(torch.cat([first, second])) == rows(both)
    assert rows(first) != rows(second)
    with pytest.raises(ValueError, match="count must be in"):
        data.real_samples(1000, torch.Generator().manual_seed(0), skip=len(data.dataset("train")) - 500)
