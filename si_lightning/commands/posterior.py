"""``sample --inputs DIR --samples-per-input K``: K posterior draws per input, their mean and spread.

Draw 0 of input i is the sample a run without the option writes (``images/``, ``arr_0``). Draws
1 .. K-1 keep the degradation of input i's seed (the in-painting mask, the super-resolution block
means) and differ only in the sampler's noise: the coupling noise of (seed, draw), for an SDE
Brownian noise from a seed derived from (seed, draw), and for a bridge under an ODE the start's spread
x0 + gamma(t0) m z (``Interpolant.spread_start``; from the point x0 every draw would follow one path).
Written beside the samples:

    draws/012000/012345-3.png   draw 3 of seed 12345 (draws 1 .. K-1; draw 0 is images/.../012345.png)
    mean/012000/012345.png      the per-pixel posterior mean of the K draws
    std/012000/012345.png       the per-pixel standard deviation, shown as 2 std - 1 (black: 0, white: 1)
    samples.npz                 arr_0 (draw 0, uint8 NHWC) as always, and draws uint8 (N, K, H, W, C),
                                mean uint8 (N, H, W, C), std float32 (N, H, W, C) in the data's units

The mean and standard deviation are over the float draws (unbiased std, K - 1 in the denominator).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from si_lightning.commands.outputs import SAMPLES, SHARDS, npz_bytes, to_uint8_hwc, write_pngs
from si_lightning.errors import ConfigurationError
from si_lightning.files import write_atomically

DRAWS, MEAN, STD = "draws", "mean", "std"


def check_samples_per_input(count: int, restoring: bool) -> None:
    if count > 1 and not restoring:
        raise ConfigurationError(
            "--samples-per-input", count, "1 for a model with a Gaussian base (K draws are for --inputs)"
        )


def restore_draws(
    conditioner: Any,
    fields: Any,
    sampler: Any,
    positions: list[int],
    seeds: list[int],
    labels: Tensor | None,
    count: int,
) -> tuple[Tensor, float, Tensor]:
    """(draw 0 (n, ...), NFE per input over all draws, every draw (n, K, ...))."""
    first = conditioner.sample(fields, sampler, positions, seeds, labels)
    draws, nfe = [first.x], float(first.nfe)
    for draw in range(1, count):
        result = conditioner.sample_draw(fields, sampler, positions, seeds, labels, draw)
        draws.append(result.x)
        nfe += float(result.nfe)
    return first.x, nfe, torch.stack(draws, dim=1)


def posterior_shard_path(directory: Path, shard: int) -> Path:
    return directory / SHARDS / f"draws-{shard:06d}.pt"


def write_posterior_shard(directory: Path, shard: int, seeds: list[int], draws: Tensor, write_png: bool) -> None:
    """The shard's draws (PNGs of draws 1 .. K-1, mean and std), before the samples' shard that marks it done."""
    draws = draws.float().cpu()
    mean, std = draws.mean(1), draws.std(1, unbiased=True)
    if write_png:
        for draw in range(1, draws.shape[1]):
            write_draw_pngs(directory, seeds, draw, draws[:, draw])
        write_pngs(directory, seeds, mean, folder=MEAN)
        write_pngs(directory, seeds, (2 * std - 1).clamp(-1, 1), folder=STD)
    buffer = io.BytesIO()
    torch.save({"seeds": torch.tensor(seeds), "draws": draws.contiguous()}, buffer)
    write_atomically(posterior_shard_path(directory, shard), buffer.getvalue())


def write_draw_pngs(directory: Path, seeds: list[int], draw: int, images: Tensor) -> None:
    """PNGs ``draws/{bucket of seed}/{seed}-{draw}.png`` of images (n, C, H, W) in [-1, 1]."""
    from PIL import Image

    for seed, image in zip(seeds, to_uint8_hwc(images), strict=True):
        picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        path = directory / DRAWS / f"{seed - seed % 1000:06d}" / f"{seed:06d}-{draw}.png"
        write_atomically(path, buffer.getvalue())


def assemble_posterior(directory: Path, num_shards: int, keep_shards: bool) -> dict[str, Any]:
    """Add draws, mean and std to samples.npz; returns record.json's ``posterior`` entry."""
    contents = [torch.load(posterior_shard_path(directory, shard), weights_only=True) for shard in range(num_shards)]
    draws = torch.cat([content["draws"] for content in contents])
    count = draws.shape[1]
    with np.load(directory / SAMPLES) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    arrays["draws"] = to_uint8_hwc(draws.flatten(0, 1)).reshape(draws.shape[0], count, *arrays["arr_0"].shape[1:])
    arrays["mean"] = to_uint8_hwc(draws.mean(1))
    arrays["std"] = draws.std(1, unbiased=True).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)
    write_atomically(directory / SAMPLES, npz_bytes(arrays))
    if not keep_shards:
        for shard in range(num_shards):
            posterior_shard_path(directory, shard).unlink(missing_ok=True)
    return {"samples_per_input": count, "mean_std": float(draws.std(1, unbiased=True).mean())}
