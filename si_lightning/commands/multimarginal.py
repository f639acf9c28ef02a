"""``si-lightning sample`` for a multimarginal checkpoint: generate marginal j, or translate marginal i to j.

    si-lightning sample --ckpt C --to-marginal j --num-samples 64 --out DIR
    si-lightning sample --ckpt C --inputs DIR_OR_NPZ --from-marginal i --to-marginal j \\
        [--path edge|through-base | --via k] --out DIR

Without ``--inputs`` sample n starts from the Gaussian vertex 0 with the base noise of seed n (the same
per-seed noise as every other model) and follows the edge 0 -> j. With ``--inputs`` image n (a folder
sorted by path, or an .npz in ADM's layout) is a sample of marginal i and is carried along the route
(docs/math.md section 12): ``edge`` i -> j, ``through-base`` i -> 0 -> j, or with ``--via k`` the two edges
i -> k -> j. Written: images/ (one PNG per sample, named by its seed or input index), samples.npz (ADM's
layout, ``arr_0``) and record.json. The argument parsing of ``sample`` only adds the options
(``add_arguments``) and hands a run that names ``--to-marginal`` to ``run`` here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from si_lightning.commands.checkpoints import file_sha256, load_model
from si_lightning.commands.checks import check_output_path
from si_lightning.commands.inputs import read_images
from si_lightning.commands.outputs import SAMPLES, npz_bytes, to_uint8_hwc, write_pngs, write_record
from si_lightning.commands.samplers import SamplerSpec, sampler_spec
from si_lightning.commands.seeds import choose_seeds
from si_lightning.data.base import to_model_input
from si_lightning.errors import EXIT_SUCCESS, ConfigurationError
from si_lightning.files import write_atomically
from si_lightning.interpolants.multimarginal import MultimarginalInterpolant
from si_lightning.interpolants.simplex_paths import ROUTES, SimplexPath, route
from si_lightning.multimarginal_module import MultimarginalModule
from si_lightning.sampling import base_noise, translate

# The Brownian simplex gamma's rate grows like 1/sqrt(s) at both ends of a leg, where the cosine grid's
# steps shrink like 1/steps^2: at the same NFE it cuts the cycle error of a translation tenfold against
# the uniform grid (experiments/multimarginal/README.md, whose gamma = 0 figures use this grid too).
DEFAULT_SAMPLER = "ode-heun-cosine-50"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a multimarginal checkpoint, added to ``sample``'s parser; ``--path`` is shared with the
    other checkpoints' SCHEDULE[:GAMMA] (``commands.choices``): a route name here."""
    parser.add_argument("--from-marginal", type=int, help="multimarginal models: the vertex of --inputs")
    parser.add_argument("--to-marginal", type=int, help="multimarginal models: the vertex to generate or reach")
    parser.add_argument("--via", type=int, help="multimarginal models: go through this vertex (two edges)")


def requested(options: argparse.Namespace) -> bool:
    """Whether the run names a multimarginal option (then ``run`` here handles it)."""
    named = any(getattr(options, name, None) is not None for name in ("from_marginal", "to_marginal", "via"))
    return named or getattr(options, "path", None) in ROUTES


def refuse_for_two_marginal_model(module: Any) -> None:
    """A multimarginal checkpoint needs --to-marginal: say so instead of sampling it in t."""
    if isinstance(module, MultimarginalModule):
        raise ConfigurationError("--to-marginal", "unset", f"a vertex in 0..{module.interpolant.num_marginals - 1}")


def load_multimarginal(options: argparse.Namespace) -> MultimarginalModule:
    module = load_model(options.ckpt, options.weights)
    if not isinstance(module, MultimarginalModule):
        key, value = next(
            (f"--{name.replace('_', '-')}", getattr(options, name))
            for name in ("to_marginal", "from_marginal", "via", "path")
            if getattr(options, name) is not None
        )
        raise ConfigurationError(key, value, "unset: the checkpoint is not a multimarginal model")
    return module


def check_vertex(key: str, value: int, count: int) -> None:
    if not 0 <= value < count:
        raise ConfigurationError(key, value, f"a marginal of this model, 0..{count - 1}")


def starting_points(options: argparse.Namespace, module: MultimarginalModule) -> tuple[torch.Tensor, list[int], int]:
    """(x (N, *data_shape) at the start vertex, the sample names (seeds or input indices), the start vertex)."""
    interpolant = module.interpolant
    data_shape = tuple(int(size) for size in module.backbone.data_shape)
    if options.inputs is None:
        if options.from_marginal not in (None, 0):
            raise ConfigurationError("--from-marginal", options.from_marginal, "unset or 0 without --inputs")
        if not interpolant.gaussian_base:
            raise ConfigurationError("--inputs", "unset", "images of a marginal (vertex 0 is not Gaussian)")
        seeds = choose_seeds(options.seeds, options.num_samples)
        return base_noise(seeds, data_shape), seeds, 0
    if options.from_marginal is None:
        raise ConfigurationError("--from-marginal", "unset", "the vertex the --inputs images belong to")
    check_vertex("--from-marginal", options.from_marginal, interpolant.num_marginals)
    images = read_images(options.inputs, "--inputs")
    if tuple(images.shape[1:]) != data_shape:
        raise ConfigurationError("--inputs", options.inputs, f"images of shape {data_shape} (channels, height, width)")
    names = list(range(images.shape[0])) if options.seeds is None else choose_seeds(options.seeds, None)
    if max(names) >= images.shape[0]:
        raise ConfigurationError("--seeds", options.seeds, f"input indices in 0..{images.shape[0] - 1}")
    return to_model_input(images[names]), names, options.from_marginal


def legs_of(options: argparse.Namespace, count: int, start: int) -> list[SimplexPath]:
    """The route's legs: ``--path`` (edge or through-base), or two edges through the vertex ``--via``."""
    if options.via is None:
        return route(count, start, options.to_marginal, options.path or "edge")
    if options.path is not None:
        raise ConfigurationError(
            "--path", options.path, "unset with --via (the route is the two edges via that vertex)"
        )
    check_vertex("--via", options.via, count)
    if options.via in (start, options.to_marginal):
        raise ConfigurationError(
            "--via", options.via, f"a vertex other than the start {start} and the end {options.to_marginal}"
        )
    return route(count, start, options.to_marginal, "through-base", base=options.via)


def check_sampler(spec: SamplerSpec, interpolant: MultimarginalInterpolant, name: object) -> None:
    """An SDE needs the score -eta / gamma, which a model without latent noise (gamma = 0) does not learn."""
    if spec.class_path.endswith("SDESampler") and not interpolant.has_denoiser:
        raise ConfigurationError(
            "--sampler", name, f"an ODE sampler ({DEFAULT_SAMPLER}, dopri5, ...): the model has gamma = 0, no score"
        )


def run(options: argparse.Namespace) -> int:
    """Check every option, then generate or translate batch by batch and write the outputs."""
    if options.batch_size < 1:
        raise ConfigurationError("--batch-size", options.batch_size, "an integer >= 1")
    for key, value in (("--labels", options.labels), ("--guidance-scale", options.guidance_scale)):
        if value is not None:
            raise ConfigurationError(key, value, "unset: a multimarginal model is not class-conditional")
    out = check_output_path(options.out)
    spec = sampler_spec(DEFAULT_SAMPLER if options.sampler is None else options.sampler)
    module = load_multimarginal(options)
    check_sampler(spec, module.interpolant, options.sampler)
    count = module.interpolant.num_marginals
    if options.to_marginal is None:
        raise ConfigurationError("--to-marginal", "unset", f"a vertex in 0..{count - 1}")
    check_vertex("--to-marginal", options.to_marginal, count)
    x, names, start = starting_points(options, module)
    if start == options.to_marginal:
        raise ConfigurationError("--to-marginal", options.to_marginal, f"a vertex other than the start {start}")
    if options.path not in (None, *ROUTES):  # SCHEDULE[:GAMMA] is for two-marginal checkpoints
        raise ConfigurationError("--path", options.path, f"a route of a multimarginal model: {', '.join(ROUTES)}")
    legs: list[SimplexPath] = legs_of(options, count, start)
    if (out / SAMPLES).exists() and not options.overwrite:
        raise ConfigurationError("--out", str(out), "a new directory (it holds samples); pass --overwrite to replace")
    sampler, fields = spec.build(), module.simplex_fields(ema=True)
    started, chunks, nfe_total = time.time(), [], 0
    with torch.no_grad():
        for first in range(0, x.shape[0], options.batch_size):
            part = slice(first, first + options.batch_size)
            options_for_sampler = {}
            if hasattr(sampler, "last_step"):  # an SDE: its noise from the samples' own seeds
                options_for_sampler["seeds"] = names[part]
            moved, nfe = translate(fields, sampler, x[part], legs, **options_for_sampler)
            chunks.append(moved.float())
            nfe_total += nfe * moved.shape[0]
    samples = torch.cat(chunks)
    nfe = nfe_total / samples.shape[0]  # an adaptive solver's NFE differs between batches
    out.mkdir(parents=True, exist_ok=True)
    write_pngs(out, names, samples)
    write_atomically(out / SAMPLES, npz_bytes({"arr_0": to_uint8_hwc(samples)}))
    record = {
        "status": "complete",
        "checkpoint": str(Path(options.ckpt).resolve()),
        "checkpoint_sha256": file_sha256(Path(options.ckpt)),
        "sampler": spec.as_dict(),
        "route": [leg.start for leg in legs] + [legs[-1].end],
        "inputs": None if options.inputs is None else str(options.inputs),
        "num_samples": len(names),
        "nfe_per_sample": nfe,
        "seconds": round(time.time() - started, 3),
    }
    write_record(out, record)
    route_text = " -> ".join(str(vertex) for vertex in record["route"])
    print(f"{len(names)} samples, marginal {route_text}, {nfe:g} NFE per sample -> {out}")
    return EXIT_SUCCESS
