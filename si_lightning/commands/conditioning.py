"""``sample --inputs DIR``: conditioning images for a model trained with a data-dependent coupling.

DIR is a folder of image files (PNG, JPEG, ...; searched recursively, sorted by path) or an .npz in
ADM's layout (``arr_0``: uint8 (N, H, W, C)); a ``sample`` output directory is read through its
``samples.npz``. Sample i is the model's restoration of input i, drawn with seed i of ``--seeds``
(default 0 .. N - 1 for N inputs; ``--num-samples n`` takes the first n inputs). Two kinds of input,
told apart by their size:

- ``clean``: images of the data's size (C, H, W). The coupling degrades input i exactly as the
  evaluation during training does (``RestorationCallback``), with the randomness of sample i's seed
  alone: super-resolution's block means D(x1) and noise zeta, in-painting's mask xi and noise. This
  is the kind for measuring a restoration against its truth (PSNR, FID of restored versus real).
- ``low-resolution`` (super-resolution only): images of size (H / factor, W / factor), taken as
  D(x1) itself: x0 = U(low) + sigma zeta with the zeta a clean input of that seed would get. This is
  the kind for up-sampling images whose high-resolution version is unknown.

The coupling is the one of the run's config (``data.init_args.coupling`` of the ``config.yaml`` that
``fit`` wrote beside the checkpoint's folder, or ``--data-config``), checked against the checkpoint.
What each sample was conditioned on is written beside it, for side-by-side figures:

    inputs/012000/012345.png    seed 12345's condition: super-resolution the low-resolution image
                                D(x1) (h x w); in-painting the kept pixels xi x1, hidden ones mid-grey
    inputs.npz                  arr_0: those images, uint8 (N, h, w, C) in seed order;
                                keep (in-painting): uint8 (N, H, W), the mask xi (1 = known pixel)

A folder input is read file by file as each process needs it; an .npz is loaded whole by every
process (for very large input sets on many processes, a folder takes less memory).
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from jsonargparse import ArgumentParser
from PIL import Image
from torch import Tensor

from si_lightning.callbacks.generation import Sampler, coupled_input, coupling_generators, sample_from_inputs
from si_lightning.commands.checkpoints import file_sha256
from si_lightning.commands.inputs import (
    image_files,
    picture_channels,
    read_npz_images,
    read_picture,
    run_config_path,
)
from si_lightning.commands.outputs import (
    INPUTS,
    INPUTS_NPZ,
    SAMPLES,
    SHARDS,
    is_image_shape,
    npz_bytes,
    write_pngs,
)
from si_lightning.commands.samplers import SamplerSpec
from si_lightning.commands.seeds import choose_seeds
from si_lightning.condition import Condition
from si_lightning.couplings import Batch, ClassLabels, Coupling, Inpainting, SuperResolution
from si_lightning.data.base import to_model_input
from si_lightning.errors import ConfigurationError
from si_lightning.files import write_atomically
from si_lightning.metrics import quantize_to_uint8
from si_lightning.module import InterpolantModule
from si_lightning.sampling import Fields, ODESampler, SampleResult
from si_lightning.sampling.checks import resolve_interval
from si_lightning.seeding import derived_seed

INPUTS_EXPECTED = "a folder of images (.png, .jpg, ...) or an .npz with arr_0: uint8 (N, H, W, C)"


# --------------------------------------------------------------------------------- the images
@dataclass(frozen=True)
class InputImages:
    """The images of ``--inputs``: their files (a folder) or the .npz, count, shape (C, h, w) and hash."""

    path: str
    files: tuple[str, ...]  # empty for an .npz
    count: int
    shape: tuple[int, int, int]
    sha256: str

    def read(self, positions: Sequence[int]) -> Tensor:
        """uint8 (len(positions), C, h, w): the inputs at ``positions`` in the sorted order."""
        if self.files:
            pictures = np.stack([read_picture(Path(self.files[position])) for position in positions])
        else:
            pictures = npz_array(self.path)[list(positions)]
        return torch.from_numpy(pictures).permute(0, 3, 1, 2).contiguous()


@functools.lru_cache(maxsize=1)
def npz_array(path: str) -> np.ndarray:
    """arr_0 of an .npz, loaded once per process."""
    return read_npz_images(Path(path), "--inputs")


def folder_sha256(directory: Path, files: list[Path]) -> str:
    """sha256 over every file's path (relative to ``directory``) and content, in order."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(file_sha256(file)))
    return digest.hexdigest()


def scan_inputs(text: str) -> InputImages:
    """The images of ``--inputs`` checked for one size and channel count (files are opened, not decoded)."""
    path = Path(text)
    if path.is_dir() and (path / SAMPLES).is_file():
        path = path / SAMPLES
    if path.is_file() and path.suffix == ".npz":
        array = read_npz_images(path, "--inputs")
        if array.shape[0] == 0:
            raise ConfigurationError("--inputs", text, f"at least one image; {path} holds none")
        count, height, width, channels = array.shape
        return InputImages(str(path.resolve()), (), count, (channels, height, width), file_sha256(path))
    if not path.is_dir():
        raise ConfigurationError("--inputs", text, f"an existing path: {INPUTS_EXPECTED}")
    files = image_files(path)
    if not files:
        raise ConfigurationError("--inputs", text, f"{INPUTS_EXPECTED}; the folder holds no image files")
    shapes = []
    for file in files:
        try:
            with Image.open(file) as picture:
                shapes.append((picture_channels(picture.mode), picture.height, picture.width))
        except OSError as error:
            raise ConfigurationError("--inputs", text, f"readable images; {file} is not one ({error})") from None
        if shapes[-1] != shapes[0]:
            raise ConfigurationError(
                "--inputs",
                text,
                f"images of one size and channel count; {files[0].name} is {describe(shapes[0])}, "
                f"{file.relative_to(path)} is {describe(shapes[-1])}",
            )
    resolved = tuple(str(file.resolve()) for file in files)
    return InputImages(str(path.resolve()), resolved, len(files), shapes[0], folder_sha256(path, files))


def describe(shape: tuple[int, int, int]) -> str:
    channels, height, width = shape
    return f"{height}x{width} with {channels} channel{'s' if channels != 1 else ''}"


# -------------------------------------------------------------------------------- the coupling
def image_coupling(coupling: Coupling) -> Coupling:
    """The image coupling inside a ClassLabels wrapper."""
    return coupling.inner if isinstance(coupling, ClassLabels) else coupling


def read_coupling(config_path: Path, key: str) -> Coupling:
    """The coupling of a run's config (``data.init_args.coupling``), built as ``fit`` built it."""
    if not config_path.is_file():
        expected = "the run's config file naming the coupling (fit writes config.yaml beside checkpoints/)"
        raise ConfigurationError(key, str(config_path), expected)
    content = yaml.safe_load(config_path.read_text()) or {}
    data = content.get("data") if isinstance(content, dict) else None
    settings = data.get("init_args", {}).get("coupling") if isinstance(data, dict) else None
    if not isinstance(settings, dict):
        raise ConfigurationError(key, str(config_path), "a config whose data.init_args.coupling names the coupling")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Coupling, "coupling", required=True)
    try:
        namespace = parser.parse_object({"coupling": settings})
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
        coupling = instantiate(namespace).coupling
    except Exception as error:
        raise ConfigurationError(key, str(config_path), f"a valid coupling ({error})".replace("\n", " ")) from None
    return coupling.evaluation_coupling()


def check_coupling(coupling: Coupling, module: InterpolantModule, data_shape: tuple[int, ...], where: str, key: str):
    """Refuse a coupling that is not the one the checkpoint was trained with (base, channels, shape)."""
    expected_channels = int(getattr(module.backbone, "cond_channels", 0) or 0)
    channels = coupling.cond_channels(data_shape[0])
    if coupling.gaussian_base or channels != expected_channels:
        raise ConfigurationError(
            key,
            where,
            f"the config of the checkpoint's run: its coupling {coupling!r} gives {channels} conditioning "
            f"channels and a {'Gaussian' if coupling.gaussian_base else 'data-dependent'} base; the checkpoint "
            f"has a data-dependent base and {expected_channels} conditioning channels",
        )
    try:
        coupling.check_shape(data_shape)
    except ValueError as error:
        raise ConfigurationError(key, where, f"a coupling for data of shape {data_shape} ({error})") from None


def input_kind(images: InputImages, coupling: Coupling, data_shape: tuple[int, ...], text: str) -> str:
    """``clean`` for images of the data's size, ``low-resolution`` for super-resolution's D(x1) size."""
    channels, height, width = data_shape
    kinds = {(channels, height, width): "clean"}
    described = [f"{describe((channels, height, width))} (clean images the coupling degrades)"]
    inner = image_coupling(coupling)
    if isinstance(inner, SuperResolution):
        low = (channels, height // inner.factor, width // inner.factor)
        kinds[low] = "low-resolution"
        described.append(f"{describe(low)} (low-resolution inputs of the x{inner.factor} super-resolution)")
    if images.shape not in kinds:
        raise ConfigurationError("--inputs", text, f"images {' or '.join(described)}; got {describe(images.shape)}")
    return kinds[images.shape]


def choose_input_seeds(seeds: str | None, num_samples: int | None, count: int) -> list[int]:
    """Seed i for input i: ``--seeds``, else 0 .. n - 1 for ``--num-samples n``, else one seed per input."""
    if seeds is None and num_samples is None:
        return list(range(count))
    chosen = choose_seeds(seeds, num_samples)
    if len(chosen) > count:
        key, value = ("--seeds", seeds) if seeds is not None else ("--num-samples", num_samples)
        raise ConfigurationError(key, value, f"at most {count} samples: sample i restores input i of --inputs")
    return chosen


@dataclass(frozen=True)
class Conditioning:
    """The inputs of a conditional ``sample`` run and the coupling that turns them into (x0, cond)."""

    images: InputImages
    coupling: Coupling
    kind: str
    config: str

    def settings(self) -> dict[str, Any]:
        """What decides the samples (compared on a rerun): the inputs' hash and kind, the coupling."""
        images = self.images
        return {"sha256": images.sha256, "kind": self.kind, "count": images.count, "coupling": repr(self.coupling)}

    def record(self) -> dict[str, Any]:
        """Where the inputs and the coupling came from (not compared on a rerun: the files may move)."""
        return {"path": self.images.path, "config": self.config}


def conditioning_for(options: Any, module: InterpolantModule, spec: SamplerSpec) -> Conditioning | None:
    """The conditioning of ``sample``: None for a Gaussian base; checks ``--inputs`` against the checkpoint."""
    data_dependent = module.interpolant.gaussian_base is False
    if options.inputs is None:
        if data_dependent:
            raise ConfigurationError(
                "--inputs",
                None,
                f"{INPUTS_EXPECTED}: the checkpoint's coupling has a data-dependent base (super-resolution, "
                "in-painting), so each sample restores an input",
            )
        return None
    if not data_dependent:
        raise ConfigurationError(
            "--inputs", options.inputs, "unset: the checkpoint has a Gaussian base x0 ~ N(0, I) and takes no inputs"
        )
    data_shape = tuple(int(size) for size in module.backbone.data_shape)
    if not is_image_shape(data_shape):
        raise ConfigurationError("--inputs", options.inputs, f"unset: the model's data {data_shape} are not images")
    key = "--data-config" if options.data_config else "--ckpt"
    config = Path(options.data_config) if options.data_config else run_config_path(options.ckpt)
    coupling = read_coupling(config, key)
    check_coupling(coupling, module, data_shape, str(config), key)
    check_sampler(spec, module, options.sampler)
    images = scan_inputs(options.inputs)
    kind = input_kind(images, coupling, data_shape, options.inputs)
    return Conditioning(images, coupling, kind, str(config.resolve()))


def check_sampler(spec: SamplerSpec, module: InterpolantModule, name: str) -> None:
    """An SDE needs the score, which a model with a data-dependent base may not define."""
    if spec.class_path.endswith("SDESampler"):
        fields = module.fields()
        if not fields.has_score:
            raise ConfigurationError(
                "--sampler", name, f"an ODE sampler (ode-heun-50, dopri5, ...): {fields.missing_score_reason}"
            )


# --------------------------------------------------------------------------- (x0, cond) per kind
# Each: (coupling, images (n, C, h, w) in [-1, 1], labels (n,) or None, seeds, draw) -> (x0, cond, picture, keep).
# Draw d of a seed keeps the degradation (mask, block means) of the seed and takes the coupling noise of (seed, d).
Prepared = tuple[Tensor, Condition, Tensor, Tensor | None]


def super_resolution_picture(coupling: SuperResolution, batch: Batch) -> tuple[Tensor, None]:
    """D(x1) (n, C, H / factor, W / factor): the low-resolution image the model sees (through U)."""
    return coupling.downsample(batch.x1), None


def inpainting_picture(coupling: Inpainting, batch: Batch) -> tuple[Tensor, Tensor]:
    """xi x1 (n, C, H, W), hidden pixels at 0, and the keep-mask xi (n, 1, H, W)."""
    return batch.cond.keep * batch.x1, batch.cond.keep


# What a clean input was conditioned on, as a picture, and a keep-mask (None when there is none).
CONDITION_PICTURES: dict[type[Coupling], Callable[[Any, Batch], tuple[Tensor, Tensor | None]]] = {
    SuperResolution: super_resolution_picture,
    Inpainting: inpainting_picture,
}


def condition_picture(coupling: Coupling, batch: Batch) -> tuple[Tensor, Tensor | None]:
    """The coupling's picture of the condition (``CONDITION_PICTURES``), else its degraded input."""
    inner = image_coupling(coupling)
    picture = CONDITION_PICTURES.get(type(inner))
    return (coupling.degraded(batch), None) if picture is None else picture(inner, batch)


def prepare_clean(
    coupling: Coupling, images: Tensor, labels: Tensor | None, seeds: Sequence[int], draw: int = 0
) -> Prepared:
    batches = [
        coupled_input(coupling, images[row : row + 1], None if labels is None else labels[row : row + 1], seed, draw)
        for row, seed in enumerate(seeds)
    ]
    batch = Batch.concatenate(batches)
    picture, keep = condition_picture(coupling, batch)
    return batch.x0, batch.cond, picture, keep


def prepare_low_resolution(
    coupling: Coupling, images: Tensor, labels: Tensor | None, seeds: Sequence[int], draw: int = 0
) -> Prepared:
    inner = image_coupling(coupling)
    parts = []
    for row, seed in enumerate(seeds):
        _, noise = coupling_generators(seed, images.device, draw)
        parts.append(inner.couple_low_resolution(images[row : row + 1], noise))
    x0 = torch.cat([x0 for x0, _ in parts])
    cond = Condition.concatenate([cond for _, cond in parts])
    if isinstance(coupling, ClassLabels):
        cond = cond.with_labels(labels.long())
    return x0, cond, images, None


PREPARE: dict[str, Callable[..., Prepared]] = {
    "clean": prepare_clean,
    "low-resolution": prepare_low_resolution,
}


# ---------------------------------------------------------------------------- one process's work
def inputs_shard_path(directory: Path, shard: int) -> Path:
    return directory / SHARDS / f"inputs-{shard:06d}.pt"


def spread_start(
    fields: Fields, sampler: ODESampler, x0: Tensor, cond: Condition | None, seeds: Sequence[int], draw: int
) -> Tensor:
    """x0 (n, ...) spread by the interpolant's noise at the sampler's start time, row i with z from (seeds[i], draw).

    Unchanged for a Gaussian base (x0 is already a draw) or gamma = 0 (the coupling's noise spreads the draws).
    """
    interpolant = fields.interpolant
    if interpolant is None or interpolant.gaussian_base or interpolant.gamma_family.is_zero:
        return x0
    start, _ = resolve_interval(fields, sampler.interval, need_score=False, who=repr(sampler))
    z = torch.cat(
        [
            torch.randn(
                (1, *x0.shape[1:]),
                generator=torch.Generator(device=x0.device).manual_seed(derived_seed("bridge-start", seed, draw)),
                device=x0.device,
                dtype=x0.dtype,
            )
            for seed in seeds
        ]
    )
    return interpolant.spread_start(x0, start, z, None if cond is None else cond.keep)


class Conditioner:
    """Samples from the inputs on one process and keeps what they were conditioned on until the shard is written."""

    def __init__(self, conditioning: Conditioning, device: torch.device) -> None:
        self.conditioning, self.device = conditioning, device
        self.pictures: list[Tensor] = []
        self.masks: list[Tensor] = []

    def sample(
        self, fields: Fields, sampler: Sampler, positions: Sequence[int], seeds: Sequence[int], labels: Tensor | None
    ) -> SampleResult:
        """Samples of the inputs at ``positions``, input i with seed ``seeds[i]``."""
        images = to_model_input(self.conditioning.images.read(positions)).to(self.device)
        labels = None if labels is None else labels.to(self.device)
        x0, cond, picture, keep = PREPARE[self.conditioning.kind](self.conditioning.coupling, images, labels, seeds)
        self.pictures.append(quantize_to_uint8(picture).cpu())
        if keep is not None:
            self.masks.append(keep.to(torch.uint8).cpu())
        return sample_from_inputs(fields, sampler, seeds, x0, cond)

    def sample_draw(
        self,
        fields: Fields,
        sampler: Sampler,
        positions: Sequence[int],
        seeds: Sequence[int],
        labels: Tensor | None,
        draw: int,
    ) -> SampleResult:
        """Draw ``draw`` >= 1 of the inputs at ``positions``: the degradation of each seed, the noise of (seed, draw).

        An SDE's Brownian noise comes from a seed derived from (seed, draw). An ODE from a bridge's input
        (x0 is the degraded image and gamma > 0) starts from the spread x0 + gamma(t_start) m z with z from
        (seed, draw), since from the point x0 every draw would follow the same path; nothing is kept for the
        pictures.
        """
        images = to_model_input(self.conditioning.images.read(positions)).to(self.device)
        labels = None if labels is None else labels.to(self.device)
        x0, cond, _, _ = PREPARE[self.conditioning.kind](self.conditioning.coupling, images, labels, seeds, draw)
        if isinstance(sampler, ODESampler):
            x0 = spread_start(fields, sampler, x0, cond, seeds, draw)
        noise_seeds = [derived_seed("posterior-draw", seed, draw) for seed in seeds]
        return sample_from_inputs(fields, sampler, noise_seeds, x0, cond)

    def write_shard(self, directory: Path, shard: int, seeds: list[int], write_png: bool) -> None:
        """The shard's conditions (PNGs, then a shard file); written before the samples' shard, which marks it done."""
        pictures = torch.cat(self.pictures)
        masks = torch.cat(self.masks) if self.masks else None
        self.pictures, self.masks = [], []
        if write_png:  # u / 127.5 - 1 quantises back to u exactly: the PNGs hold the bytes of inputs.npz
            write_pngs(directory, seeds, pictures.float() / 127.5 - 1.0, folder=INPUTS)
        content = {"seeds": torch.tensor(seeds, dtype=torch.long), "pictures": pictures, "keep": masks}
        buffer = io.BytesIO()
        torch.save(content, buffer)
        write_atomically(inputs_shard_path(directory, shard), buffer.getvalue())


def assemble_inputs(directory: Path, num_shards: int) -> None:
    """inputs.npz from every shard's conditions: arr_0 uint8 (N, h, w, C), keep uint8 (N, H, W) for in-painting."""
    contents = [torch.load(inputs_shard_path(directory, shard), weights_only=True) for shard in range(num_shards)]
    pictures = torch.cat([content["pictures"] for content in contents])
    arrays = {"arr_0": pictures.permute(0, 2, 3, 1).contiguous().numpy()}
    if contents[0]["keep"] is not None:
        arrays["keep"] = torch.cat([content["keep"] for content in contents])[:, 0].contiguous().numpy()
    write_atomically(directory / INPUTS_NPZ, npz_bytes(arrays))


def remove_input_shards(directory: Path, num_shards: int) -> None:
    for shard in range(num_shards):
        inputs_shard_path(directory, shard).unlink(missing_ok=True)


__all__ = [
    "PREPARE",
    "Conditioner",
    "Conditioning",
    "InputImages",
    "assemble_inputs",
    "choose_input_seeds",
    "conditioning_for",
    "read_coupling",
    "remove_input_shards",
    "scan_inputs",
]
