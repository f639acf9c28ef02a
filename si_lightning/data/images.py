"""Image data sets (CIFAR-10, MNIST, an ImageFolder) and their datamodule.

Downloads happen only in ``prepare_data`` and only with ``download=True``; otherwise a missing
data set is a FileNotFoundError naming the path and how to get it. Images are kept as uint8
(C, H, W) and scaled to [-1, 1] on the device (CoupledDataModule.on_after_batch_transfer).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor
from torchvision import transforms

from si_lightning.checks import is_integer, lookup
from si_lightning.couplings import Coupling
from si_lightning.data.base import CoupledDataModule, derived_seed
from si_lightning.data.datasets import ImageFileDataset, InMemoryDataset
from si_lightning.data.image_check import BAD_IMAGE_POLICIES, checked_samples
from si_lightning.data.safe_pickle import load_numpy_pickle


def resize_images(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), bilinear with anti-aliasing, in chunks to bound memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    parts = []
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        parts.append(part.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(parts)


class ImageSource(ABC):
    """Where one data set lives under ``root``, how to download it, and how to read a split."""

    title = ""
    channels = 3
    native_size: int | None = None  # None: images of any size, resized to image_size
    default_flip = True
    has_test_split = True
    downloadable = True
    num_classes: int | None = None

    def __init__(self, root: Path) -> None:
        self.root = root

    @abstractmethod
    def required_files(self) -> list[Path]: ...

    def download(self) -> None:
        if not self.downloadable:
            raise TypeError(f"{type(self).__name__} cannot download {self.title}: put its files under {self.root}")
        raise TypeError(f"{type(self).__name__} is downloadable but does not implement download()")

    def check(self) -> None:
        """Raise a FileNotFoundError naming the first missing file and how to get it."""
        for path in self.required_files():
            if not path.exists() and not self.downloadable:
                raise FileNotFoundError(f"{self.title} not found: {path} does not exist; put the images there")
            if not path.exists():
                raise FileNotFoundError(
                    f"{self.title} not found: {path} does not exist. Pass download=True "
                    f"(in a config: data.init_args.download: true) to download it into {self.root}."
                )

    @abstractmethod
    def load(self, train: bool, image_size: int):
        """The train or test split as a dataset of (uint8 (C, S, S), label, index) without flips."""


class Cifar10Source(ImageSource):
    """CIFAR-10 in its python pickle format: root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""

    title = "CIFAR-10"
    native_size = 32
    num_classes = 10
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{index}" for index in range(1, 6))
    test_files = ("test_batch",)

    def required_files(self) -> list[Path]:
        names = (*self.train_files, *self.test_files, "batches.meta")
        return [self.root / self.folder / name for name in names]

    def download(self) -> None:
        # torchvision fetches the archive, checks its md5 and unpacks it into root/cifar-10-batches-py.
        torchvision.datasets.CIFAR10(str(self.root), train=True, download=True)

    def load(self, train: bool, image_size: int) -> InMemoryDataset:
        data, labels = [], []
        for name in self.train_files if train else self.test_files:
            path = self.root / self.folder / name
            entry = load_numpy_pickle(path)  # numpy arrays and plain containers only: nothing in it runs
            if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
                raise ValueError(f"{path} is not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"])
        images = torch.from_numpy(np.concatenate(data))
        return InMemoryDataset(resize_images(images, image_size), torch.tensor(labels, dtype=torch.long))


class MnistSource(ImageSource):
    """MNIST in its raw idx format: root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte."""

    title = "MNIST"
    channels = 1
    native_size = 28
    num_classes = 10
    default_flip = False  # a mirrored digit is not a digit

    def required_files(self) -> list[Path]:
        names = [f"{split}-{kind}-ubyte" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
        return [self.root / "MNIST" / "raw" / name for name in names]

    def download(self) -> None:
        for train in (True, False):
            torchvision.datasets.MNIST(str(self.root), train=train, download=True)

    def load(self, train: bool, image_size: int) -> InMemoryDataset:
        dataset = torchvision.datasets.MNIST(str(self.root), train=train, download=False)
        images = dataset.data.unsqueeze(1).to(torch.uint8)
        return InMemoryDataset(resize_images(images, image_size), dataset.targets.long())


class ImageFolderSource(ImageSource):
    """root/<class name>/<image files>, read by torchvision; resized (shorter side) and centre-cropped."""

    title = "image folder"
    has_test_split = False
    downloadable = False
    bad_images = "error"  # what to do with a file that cannot be decoded: "error" or "skip" (image_check)

    def required_files(self) -> list[Path]:
        return [self.root]

    def load(self, train: bool, image_size: int) -> ImageFileDataset:
        folder = torchvision.datasets.ImageFolder(str(self.root))
        self.num_classes = len(folder.classes)
        transform = transforms.Compose(
            [transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.PILToTensor()]
        )
        return ImageFileDataset(checked_samples(self.root, folder.samples, self.bad_images), transform)


IMAGE_DATASETS: dict[str, type[ImageSource]] = {
    "cifar10": Cifar10Source,
    "mnist": MnistSource,
    "image-folder": ImageFolderSource,
}


class ImageDataModule(CoupledDataModule):
    """CIFAR-10, MNIST or an image folder, scaled to [-1, 1].

    Validation holds out ``val_fraction`` of the training images by a fixed permutation (the same
    for every seed); the test split is the data set's own (the validation images for a folder).

    Args:
        dataset: one of IMAGE_DATASETS (cifar10, mnist, image-folder).
        root: the directory the data set lives in (or is downloaded to).
        download: download in ``prepare_data`` if missing (never otherwise).
        image_size: side S of the (C, S, S) images; the native size when None (required for a folder).
        horizontal_flip: mirror training images with p = 1/2; the data set's default when None
            (on for CIFAR-10 and folders, off for MNIST).
        val_fraction: share of the training images held out for validation, in (0, 1).
        bad_images: for an image folder, what a file that cannot be decoded does at setup: "error"
            (stop, naming the file) or "skip" (leave it out with a warning). Each file is checked
            once; the result is cached by the files' names, sizes and times.
        batch_size, num_workers, seed, coupling, device_invariant: see CoupledDataModule.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        horizontal_flip: bool | None = None,
        val_fraction: float = 0.02,
        batch_size: int = 128,
        num_workers: int = 4,
        seed: int = 0,
        coupling: Coupling | None = None,
        device_invariant: bool = True,
        bad_images: str = "error",
    ) -> None:
        super().__init__(batch_size, num_workers, seed, coupling, device_invariant)
        self.source = lookup(IMAGE_DATASETS, dataset, "image dataset")(Path(root).expanduser())
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"bad_images must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {bad_images!r}")
        self.source.bad_images = bad_images
        if download and not self.source.downloadable:
            raise ValueError(f"{dataset} cannot be downloaded; point root at the images (got download={download!r})")
        if image_size is None:
            if self.source.native_size is None:
                raise ValueError(f"{dataset} needs an image_size (its images have no common size), got None")
            image_size = self.source.native_size
        if not is_integer(image_size) or image_size < 1:
            raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        self.dataset_name, self.root, self.download = dataset, self.source.root, bool(download)
        self.image_size, self.val_fraction = image_size, float(val_fraction)
        self.horizontal_flip = self.source.default_flip if horizontal_flip is None else bool(horizontal_flip)
        self.data_shape = (self.source.channels, image_size, image_size)
        self.dataset_classes = self.source.num_classes
        self.check_coupling()

    def prepare_data(self) -> None:
        """Download (rank 0 only) when asked to and the files are missing."""
        if self.download:
            try:
                self.source.check()
            except FileNotFoundError:
                self.source.download()

    def build_datasets(self) -> dict:
        self.source.check()
        full = self.source.load(train=True, image_size=self.image_size)
        self.dataset_classes = self.source.num_classes
        if len(full) < 2:
            raise ValueError(f"{self.source.title} at {self.root} has {len(full)} image(s); at least 2 are needed")
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(derived_seed(self.dataset_name)))
        val_count = min(len(full) - 1, max(1, round(self.val_fraction * len(full))))
        val = full.subset(order[:val_count].sort().values, flip=False)
        train = full.subset(order[val_count:].sort().values, flip=self.horizontal_flip)
        test = self.source.load(train=False, image_size=self.image_size) if self.source.has_test_split else val
        return {"train": train, "val": val, "test": test}
