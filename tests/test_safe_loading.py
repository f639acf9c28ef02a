"""Files from outside are read safely: CIFAR-10 batches, checkpoints and image folders.

A pickle that would run code when loaded (a payload) is refused and does not run; the error names the
file and the global it needed. A checkpoint that is missing, random bytes, truncated or a payload gives
one line naming it, for ``fit --ckpt_path``, for ``InterpolantModule.load_from_checkpoint`` and for the
commands (``--ckpt``), never torch's advice to load with ``weights_only=False``.
An image folder with a file that cannot be decoded names that file at setup (or skips it by a setting).
"""

from __future__ import annotations

import os
import pickle

import lightning
import numpy as np
import pytest
import torch
from PIL import Image

from si_lightning.checkpoints import CheckpointFileError, check_checkpoint
from si_lightning.commands.checkpoints import read_checkpoint
from si_lightning.data import ImageDataModule
from si_lightning.data.image_check import bad_image_files
from si_lightning.data.safe_pickle import UnsafePickleError, load_numpy_pickle
from si_lightning.errors import ConfigurationError
from si_lightning.module import InterpolantModule
from si_lightning.nn import MLP


class Payload:
    """Unpickling this runs ``os.system("touch <marker>")`` under a plain ``pickle.load``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_cifar_batch(path, images: np.ndarray, labels: list[int]) -> None:
    """A batch in the format of the CIFAR-10 python files: a dict of a uint8 (N, 3072) array and lists."""
    entry = {
        "batch_label": "training batch 1 of 5",
        "labels": labels,
        "data": images.reshape(len(labels), 3 * 32 * 32),
        "filenames": [f"image_{index}.png" for index in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(entry, protocol=2))


def cifar_folder(root, images_per_batch: int = 4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        images = generator.integers(0, 256, size=(images_per_batch, 3, 32, 32), dtype=np.uint8)
        labels = generator.integers(0, 10, size=images_per_batch).tolist()
        write_cifar_batch(folder / name, images, labels)
        batches[name] = (images, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    return folder, batches


def test_genuine_format_cifar_batches_load_exactly(tmp_path):
    folder, batches = cifar_folder(tmp_path)
    entry = load_numpy_pickle(folder / "data_batch_2")
    images, labels = batches["data_batch_2"]
    assert entry["labels"] == labels
    np.testing.assert_array_equal(entry["data"].reshape(-1, 3, 32, 32), images)
    data = ImageDataModule(dataset="cifar10", root=str(tmp_path), batch_size=2, num_workers=0, val_fraction=0.25)
    data.setup("fit")
    test_images, test_labels = batches["test_batch"]
    assert torch.equal(data.datasets["test"].data, torch.from_numpy(test_images))
    assert data.datasets["test"].labels.tolist() == test_labels
    assert len(data.datasets["train"]) + len(data.datasets["val"]) == 5 * 4


def test_payload_in_a_cifar_folder_does_not_run_and_the_error_names_the_file(tmp_path):
    folder, _ = cifar_folder(tmp_path)
    marker = tmp_path / "payload-ran"
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Payload(str(marker)), "labels": []}, protocol=2))
    data = ImageDataModule(dataset="cifar10", root=str(tmp_path), batch_size=2, num_workers=0)
    with pytest.raises(UnsafePickleError, match=r"data_batch_3: refused to unpickle (posix|os|nt)\.system"):
        data.setup("fit")
    assert not marker.exists()
    # the same file under plain pickle would have run it: the test's payload is real
    pickle.loads((folder / "data_batch_3").read_bytes())
    assert marker.exists()


def test_a_cifar_file_that_is_not_a_batch_is_named(tmp_path):
    folder, _ = cifar_folder(tmp_path)
    (folder / "data_batch_1").write_bytes(os.urandom(300))
    with pytest.raises(UnsafePickleError, match="data_batch_1: not a readable pickle"):
        load_numpy_pickle(folder / "data_batch_1")


def test_a_cifar_file_whose_bytes_claim_gigabytes_is_named(tmp_path):
    """Bytes that read as a 2^62-byte frame make the unpickler raise MemoryError: still one named refusal."""
    folder, _ = cifar_folder(tmp_path)
    (folder / "data_batch_1").write_bytes(b"\x80\x04\x8e" + (2**62).to_bytes(8, "little") + b"abc")
    with pytest.raises(UnsafePickleError, match="data_batch_1: not a readable pickle"):
        load_numpy_pickle(folder / "data_batch_1")


# ------------------------------------------------------------------------------------------ checkpoints
def real_checkpoint(path):
    torch.save({"state_dict": {"weight": torch.ones(3)}, "global_step": 7, "epoch": 0}, path)
    return path


def test_a_real_checkpoint_passes(tmp_path):
    check_checkpoint(real_checkpoint(tmp_path / "good.ckpt"))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "no such checkpoint file"),
        ("directory", "not a file"),
        ("empty", "an empty file"),
        ("random", "not a PyTorch checkpoint"),
        ("truncated", "truncated or corrupt"),
        ("payload", f"refused by the safe loader: unpickling it would call {os.system.__module__}.system"),
        ("no-state-dict", "holds no 'state_dict'"),
    ],
)
def test_a_bad_checkpoint_gives_one_line_naming_the_file(tmp_path, kind, expected):
    path = tmp_path / f"{kind}.ckpt"
    marker = tmp_path / "payload-ran"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        content = real_checkpoint(tmp_path / "whole.ckpt").read_bytes()
        path.write_bytes(content[: len(content) // 2])
    elif kind == "payload":
        torch.save({"state_dict": {}, "callbacks": Payload(str(marker))}, path)
    elif kind == "no-state-dict":
        torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(ConfigurationError) as raised:
        check_checkpoint(path)
    message = str(raised.value)
    assert raised.value.key == "ckpt_path" and str(path) in message and expected in message
    assert "\n" not in message and "weights_only" not in message
    assert not marker.exists()


class Evaluate:
    """Unpickling this under a plain ``pickle.load`` evaluates an expression (``builtins.eval``)."""

    def __reduce__(self):
        return eval, ("1 + 1",)


def lightning_checkpoint(path):
    """A checkpoint as ``trainer.save_checkpoint`` writes it for an InterpolantModule on 2-D points."""
    model = InterpolantModule(backbone=MLP(data_shape=(2,), hidden_size=16, num_layers=2), loss_bins=0)
    content = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(content, path)
    return path, model


def not_a_checkpoint(path, kind, marker):
    """Write a file of ``kind`` at ``path``: what a user may pass by mistake, or a planted payload."""
    if kind == "text":
        path.write_text("learning rate 2e-4, 400k steps\n")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "pickle-like-bytes":  # random bytes after a pickle's first byte: torch.load gets to unpickle them
        path.write_bytes(b"\x80" + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "state-dict":
        torch.save(MLP(data_shape=(2,), hidden_size=16, num_layers=2).state_dict(), path)
    elif kind == "system-payload":
        torch.save({"state_dict": {}, "hyper_parameters": {}, "loops": Payload(str(marker))}, path)
    elif kind == "eval-payload":
        torch.save({"state_dict": {}, "hyper_parameters": {}, "loops": Evaluate()}, path)
    elif kind == "protocol-5-payload":  # torch's safe loader stops at the first frame, before any global
        content = {"state_dict": {}, "hyper_parameters": {}, "loops": Payload(str(marker))}
        torch.save(content, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    return path


NOT_CHECKPOINTS = {
    "text": "not a PyTorch checkpoint",
    "random-bytes": "not a PyTorch checkpoint",
    "pickle-like-bytes": "not a readable PyTorch checkpoint",
    "state-dict": "holds no 'state_dict'",
    "system-payload": f"would call {os.system.__module__}.system",  # posix.system on Linux and macOS
    "eval-payload": "would call builtins.eval",
    "protocol-5-payload": f"would call {os.system.__module__}.system",
}


@pytest.mark.parametrize("kind", sorted(NOT_CHECKPOINTS))
def test_load_from_checkpoint_of_a_file_that_is_no_checkpoint_is_one_short_line(tmp_path, kind):
    """torch's refusal is a 600-character paragraph advising ``weights_only=False``; here one line names the file."""
    marker = tmp_path / "payload-ran"
    path = not_a_checkpoint(tmp_path / f"{kind}.ckpt", kind, marker)
    with pytest.raises(CheckpointFileError) as raised:
        InterpolantModule.load_from_checkpoint(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and NOT_CHECKPOINTS[kind] in message, message
    assert "expected " in message and len(message) < 200 + len(str(path)) and "\n" not in message
    assert "weights_only" not in message and raised.value.__cause__ is None
    assert isinstance(raised.value, ValueError) and not marker.exists()


def test_load_from_checkpoint_names_a_missing_file_and_keeps_a_real_checkpoints_own_errors(tmp_path):
    """The file is examined only after a failure, and a readable checkpoint's failure is not relabelled."""
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(FileNotFoundError, match="no such checkpoint file") as raised:
        InterpolantModule.load_from_checkpoint(missing)
    assert str(missing) in str(raised.value) and len(str(raised.value)) < 100 + len(str(missing))
    path, model = lightning_checkpoint(tmp_path / "model.ckpt")
    loaded = InterpolantModule.load_from_checkpoint(path, backbone=MLP(data_shape=(2,), hidden_size=16, num_layers=2))
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    with pytest.raises(RuntimeError, match="size mismatch"):  # a backbone of another width: Lightning's own error
        InterpolantModule.load_from_checkpoint(path, backbone=MLP(data_shape=(2,), hidden_size=8, num_layers=2))
    with pytest.raises(TypeError, match="backbone"):  # the backbone was not saved in plain Python: must be passed
        InterpolantModule.load_from_checkpoint(path)
    with pytest.raises(TypeError, match="cannot be called on an instance"):  # still a class method only
        loaded.load_from_checkpoint(path)


@pytest.mark.parametrize("kind", ["system-payload", "eval-payload", "protocol-5-payload", "pickle-like-bytes"])
def test_the_commands_name_the_refused_global_and_never_advise_unsafe_loading(tmp_path, kind):
    """``--ckpt`` of sample and evaluate: the line names the global (or the torch error), not torch's options."""
    marker = tmp_path / "payload-ran"
    path = not_a_checkpoint(tmp_path / f"{kind}.ckpt", kind, marker)
    with pytest.raises(ConfigurationError) as raised:
        read_checkpoint(path)
    expected = raised.value.expected
    assert raised.value.key == "--ckpt" and NOT_CHECKPOINTS[kind] in expected, expected
    assert "weights_only" not in expected and "\n" not in expected and len(expected) < 250
    assert not marker.exists()


# ----------------------------------------------------------------------------------------- image folders
def image_folder(root):
    """Two classes of 6 tiny PNGs, plus a truncated PNG, a text file named .jpg and a notes file ignored by name."""
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for index in range(6):
            Image.new("RGB", (10, 12), (index * 40, 80, 160)).save(root / label / f"{index}.png")
    whole = (root / "cats" / "0.png").read_bytes()
    (root / "cats" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "dogs" / "not-an-image.jpg").write_text("these are notes, not pixels")
    (root / "dogs" / "notes.txt").write_text("ignored: not an image extension")
    return root / "cats" / "truncated.png", root / "dogs" / "not-an-image.jpg"


def test_an_undecodable_image_is_named_at_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("SI_LIGHTNING_CACHE", str(tmp_path / "cache"))
    truncated, fake = image_folder(tmp_path / "images")
    assert set(bad_image_files(tmp_path / "images", [str(truncated), str(fake)])) == {str(truncated), str(fake)}
    data = ImageDataModule(dataset="image-folder", root=str(tmp_path / "images"), image_size=8, batch_size=2)
    with pytest.raises(ValueError, match=rf"^{truncated} cannot be decoded as an image \(and 1 more\)"):
        data.setup("fit")


def test_undecodable_images_are_skipped_with_a_warning_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("SI_LIGHTNING_CACHE", str(tmp_path / "cache"))
    image_folder(tmp_path / "images")
    data = ImageDataModule(
        dataset="image-folder", root=str(tmp_path / "images"), image_size=8, batch_size=2, bad_images="skip"
    )
    with pytest.warns(UserWarning, match="skipping 2 image file"):
        data.setup("fit")
    assert len(data.datasets["train"]) + len(data.datasets["val"]) == 12
    assert tuple(data.datasets["train"][0][0].shape) == (3, 8, 8)


def test_the_check_is_cached_until_the_folder_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("SI_LIGHTNING_CACHE", str(tmp_path / "cache"))
    truncated, fake = image_folder(tmp_path / "images")
    paths = [str(path) for path in sorted((tmp_path / "images").rglob("*.*g"))]
    assert set(bad_image_files(tmp_path / "images", paths)) == {str(truncated), str(fake)}
    calls = []
    monkeypatch.setattr("si_lightning.data.image_check.undecodable", lambda path: calls.append(path))
    assert set(bad_image_files(tmp_path / "images", paths)) == {str(truncated), str(fake)}  # from the cache
    assert calls == []
    Image.new("RGB", (10, 12)).save(truncated)  # repaired: a new size and time, so every file is checked again
    assert bad_image_files(tmp_path / "images", paths) == {}
    assert len(calls) == len(paths)


def test_bad_images_setting_is_validated(tmp_path):
    with pytest.raises(ValueError, match=r"bad_images must be one of error, skip, got 'ignore'"):
        ImageDataModule(dataset="image-folder", root=str(tmp_path), image_size=8, bad_images="ignore")
