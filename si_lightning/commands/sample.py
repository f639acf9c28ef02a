"""``si-lightning sample``: samples of a trained checkpoint from per-sample seeds, resumable.

    si-lightning sample --ckpt runs/digits/version_0/checkpoints/last.ckpt --sampler ode-heun-50 \\
        --seeds 0-49999 --out samples/digits-heun50 [--devices 8 | under torchrun] [--labels 3]
    si-lightning sample --ckpt runs/digits-superres/version_0/checkpoints/last.ckpt --inputs held-out/ --out ...
    si-lightning sample -c sample.yaml [--seeds 0-99]   # options from YAML; --print_config writes such a file

Sample i is drawn from its seed alone (base noise, SDE noise, default label seed mod K), so the
samples do not depend on the batch size or on the number of processes (``--devices N``: this process
and N - 1 spawned ones; under torchrun the processes torchrun started are used). The seeds are cut into shards
of ``--shard-size``; rank r writes shards r, r + W, ...; a shard already on disk is skipped, so an
interrupted run continues where it stopped when started again with the same settings. The output
layout is described in ``si_lightning.commands.outputs``. A latent model's samples are decoded by its
autoencoder (``--decoder``, by default the one the checkpoint records) before anything is written;
see ``si_lightning.commands.decoding``. A model trained with a data-dependent coupling
(super-resolution, in-painting) restores the images of ``--inputs``, sample i input i
(``si_lightning.commands.conditioning``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt
from tqdm import tqdm

from si_lightning.callbacks.generation import batched, rank_indices
from si_lightning.callbacks.tracking import git_state
from si_lightning.commands import multimarginal
from si_lightning.commands.arguments import CommaList, CommandParser, comma_text, report_configuration_errors
from si_lightning.commands.checkpoints import WEIGHTS, file_sha256, load_model
from si_lightning.commands.checks import check_output_path
from si_lightning.commands.choices import SamplingChoices, add_choice_arguments, request, resolve
from si_lightning.commands.conditioning import (
    Conditioner,
    Conditioning,
    assemble_inputs,
    choose_input_seeds,
    conditioning_for,
    remove_input_shards,
)
from si_lightning.commands.decoding import DecoderSpec, choose_decoder, decoded_shape
from si_lightning.commands.outputs import (
    assemble_samples,
    clear_outputs,
    holds_samples,
    is_image_shape,
    read_record,
    shard_path,
    write_pngs,
    write_record,
    write_shard,
)
from si_lightning.commands.posterior import (
    assemble_posterior,
    check_samples_per_input,
    restore_draws,
    write_posterior_shard,
)
from si_lightning.commands.processes import ACCELERATORS, Processes, run_on_processes
from si_lightning.commands.samplers import SamplerOption, SamplerSpec, sampler_spec
from si_lightning.commands.seeds import choose_seeds
from si_lightning.errors import EXIT_SUCCESS, ConfigurationError

# The default of a two-marginal checkpoint; a multimarginal one has its own (commands/multimarginal.py).
DEFAULT_SAMPLER = "ode-heun-50"


def parser() -> CommandParser:
    parse = CommandParser.for_command(prog="si-lightning sample", description=__doc__.split("\n")[0])
    parse.add_argument("--ckpt", type=str, required=True, help="checkpoint written by si-lightning fit")
    parse.add_argument(
        "--sampler",
        type=SamplerOption | None,
        help=(
            "a preset name (ode-heun-50, dopri5, ...), a YAML file, or a class_path/init_args block "
            f"(default {DEFAULT_SAMPLER}; {multimarginal.DEFAULT_SAMPLER} for a multimarginal checkpoint)"
        ),
    )
    parse.add_argument("--num-samples", type=PositiveInt | None, help="samples from seeds 0 .. N-1 (or --seeds)")
    parse.add_argument("--seeds", type=CommaList | None, help="seed list: 0-49999, 0,5,9 or 0-9,100-109")
    parse.add_argument("--labels", type=CommaList | None, help="class labels cycled over the samples (e.g. 3 or 0,1,2)")
    parse.add_argument("--guidance-scale", type=float | None, help="classifier-free guidance scale w")
    parse.add_argument("--inputs", type=str | None, help="images a data-dependent coupling's model restores")
    parse.add_argument("--data-config", type=str | None, help="with --inputs: the run's config naming its coupling")
    parse.add_argument("--decoder", type=str | None, help="latent models: AutoencoderKL folder, module:factory, none")
    parse.add_argument("--scale", type=float | None, help="latent scale of a --decoder folder (default: recorded)")
    parse.add_argument("--out", type=str, required=True, help="output directory")
    parse.add_argument("--batch-size", type=PositiveInt, default=64, help="samples per network call on each process")
    parse.add_argument("--shard-size", type=PositiveInt, default=1000, help="samples per shard file (resume unit)")
    parse.add_argument("--devices", type=PositiveInt, default=1, help="number of processes (ignored under torchrun)")
    parse.add_argument("--accelerator", default="auto", choices=ACCELERATORS)
    parse.add_argument("--weights", default="ema", choices=WEIGHTS, help="EMA average (state_dict) or raw weights")
    parse.add_argument("--no-png", action="store_true", help="write samples.npz only")
    parse.add_argument("--keep-shards", action="store_true", help="keep the float32 shard files after assembling")
    parse.add_argument("--overwrite", action="store_true", help="replace another run's samples in --out")
    parse.add_argument("--quiet", action="store_true", help="no progress bar")
    add_choice_arguments(parse)
    parse.add_argument("--samples-per-input", type=PositiveInt, default=1, help="with --inputs: K posterior draws")
    multimarginal.add_arguments(parse)  # --from-marginal, --to-marginal (--path edge|through-base)
    return parse


def format_seeds(seeds: list[int]) -> str:
    """The shortest range form of ``seeds``: [0, 1, 2, 7] -> '0-2,7'."""
    parts, start = [], 0
    for index in range(1, len(seeds) + 1):
        if index == len(seeds) or seeds[index] != seeds[index - 1] + 1:
            first, last = seeds[start], seeds[index - 1]
            parts.append(str(first) if first == last else f"{first}-{last}")
            start = index
    return ",".join(parts)


def parse_labels(text: str | None, num_classes: int, guidance_scale: float | None) -> list[int] | None:
    """The label list cycled over the samples, or None for the default (seed mod K, or unconditional)."""
    if guidance_scale is not None and num_classes <= 0:
        raise ConfigurationError("--guidance-scale", guidance_scale, "unset: the model is not class-conditional")
    if text is None:
        return None
    if num_classes <= 0:
        raise ConfigurationError("--labels", text, "unset: the model is not class-conditional")
    try:
        labels = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigurationError("--labels", text, f"comma-separated class labels in 0..{num_classes - 1}") from None
    if not labels or any(not 0 <= label < num_classes for label in labels):
        raise ConfigurationError("--labels", text, f"comma-separated class labels in 0..{num_classes - 1}")
    return labels


@dataclass(frozen=True)
class SamplePlan:
    """Everything a process needs to write its shards (picklable for spawned processes)."""

    checkpoint: str
    weights: str
    sampler: SamplerSpec
    seeds: tuple[int, ...]
    labels: tuple[int, ...] | None
    num_classes: int
    guidance_scale: float | None
    data_shape: tuple[int, ...]
    decoder: DecoderSpec | None
    output_shape: tuple[int, ...]  # data_shape, or the image shape the decoder turns a latent into
    out: str
    batch_size: int
    shard_size: int
    write_png: bool
    keep_shards: bool
    overwrite: bool
    quiet: bool
    settings: dict[str, Any]
    conditioning: Conditioning | None = None
    choices: SamplingChoices = SamplingChoices()
    samples_per_input: int = 1

    @property
    def num_shards(self) -> int:
        return -(-len(self.seeds) // self.shard_size)

    def shard_seeds(self, shard: int) -> list[int]:
        return list(self.seeds[shard * self.shard_size : (shard + 1) * self.shard_size])

    def labels_for(self, positions: list[int]) -> torch.Tensor | None:
        """Labels of the samples at ``positions`` in the seed list: given labels cycled, else seed mod K."""
        if self.num_classes <= 0:
            return None
        if self.labels is None:
            return torch.tensor([self.seeds[position] % self.num_classes for position in positions])
        return torch.tensor([self.labels[position % len(self.labels)] for position in positions])


def check_output_directory(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse a directory holding another run's samples unless ``overwrite``; the same settings resume."""
    if out.exists() and not out.is_dir():
        raise ConfigurationError("--out", str(out), "a directory (this is a file)")
    if overwrite or not out.is_dir() or not holds_samples(out):
        return
    record = read_record(out)
    if record is None or record.get("settings") != settings:
        differing = sorted(
            key for key in settings if record is None or record.get("settings", {}).get(key) != settings[key]
        )
        raise ConfigurationError(
            "--out",
            str(out),
            f"a new directory or one of this run's (it holds another run's samples, differing in "
            f"{', '.join(differing)}); pass --overwrite to replace them",
        )


def make_plan(options: Namespace) -> SamplePlan:
    """Check every argument and the checkpoint before any process starts or any file is written.

    The parser has checked each value's type and range (``parser``); what depends on the checkpoint,
    the files or another option is checked here.
    """
    check_output_path(options.out)
    spec = sampler_spec(DEFAULT_SAMPLER if options.sampler is None else options.sampler)
    choices = request(options, spec)
    module = load_model(options.ckpt, options.weights)
    multimarginal.refuse_for_two_marginal_model(module)
    conditioning = conditioning_for(options, module, spec)  # None for a Gaussian base
    if conditioning is None:
        seeds = choose_seeds(comma_text(options.seeds), options.num_samples)
    else:
        seeds = choose_input_seeds(comma_text(options.seeds), options.num_samples, conditioning.images.count)
    num_classes = int(getattr(module.backbone, "num_classes", 0) or 0)
    labels = parse_labels(comma_text(options.labels), num_classes, options.guidance_scale)
    data_shape = tuple(int(size) for size in module.backbone.data_shape)
    decoder = choose_decoder(options.decoder, options.scale, options.ckpt, data_shape)
    output_shape = decoded_shape(decoder, data_shape)
    checkpoint_hash = file_sha256(Path(options.ckpt))
    settings = {
        "checkpoint_sha256": checkpoint_hash,
        "weights": options.weights,
        "sampler": spec.as_dict(),
        "seeds": format_seeds(seeds),
        "labels": "seed mod K" if labels is None and num_classes > 0 else labels,
        "guidance_scale": options.guidance_scale,
        "shard_size": options.shard_size,
        "data_shape": list(data_shape),
    }
    if decoder is not None:
        settings["decoder"] = decoder.as_dict()
    if conditioning is not None:
        settings["inputs"] = conditioning.settings()
    check_samples_per_input(options.samples_per_input, conditioning is not None)
    if options.samples_per_input > 1:
        settings["samples_per_input"] = options.samples_per_input
    settings.update(choices.settings())
    previous = read_record(Path(options.out)) if Path(options.out).is_dir() else None
    choices = resolve(
        choices, module, spec, data_shape, num_classes, options.guidance_scale, conditioning is not None,
        decoder is not None, None if previous is None else previous.get("settings"), settings,
    )  # fmt: skip
    settings.update(choices.settings())
    check_output_directory(Path(options.out), settings, options.overwrite)
    return SamplePlan(
        checkpoint=str(options.ckpt),
        weights=options.weights,
        sampler=spec,
        seeds=tuple(seeds),
        labels=None if labels is None else tuple(labels),
        num_classes=num_classes,
        guidance_scale=options.guidance_scale,
        data_shape=data_shape,
        decoder=decoder,
        output_shape=output_shape,
        out=str(options.out),
        batch_size=options.batch_size,
        shard_size=options.shard_size,
        write_png=is_image_shape(output_shape) and not options.no_png,
        keep_shards=options.keep_shards,
        overwrite=options.overwrite,
        quiet=options.quiet,
        settings=settings,
        conditioning=conditioning,
        choices=choices,
        samples_per_input=options.samples_per_input,
    )


def package_version() -> str:
    try:
        return importlib.metadata.version("si_lightning")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_shards(plan: SamplePlan, processes: Processes) -> None:
    """This process's shards that are not on disk yet, batch by batch."""
    out = Path(plan.out)
    module = load_model(plan.checkpoint, plan.weights).to(processes.device)
    sampler = plan.choices.sampler(plan.sampler)
    fields = plan.choices.fields(module.fields(ema=True, guidance_scale=plan.guidance_scale))
    search, reward = plan.choices.searcher()
    decoder = None if plan.decoder is None else plan.decoder.build(processes.device)
    conditioner = None if plan.conditioning is None else Conditioner(plan.conditioning, processes.device)
    pending = [
        shard
        for shard in rank_indices(plan.num_shards, processes.rank, processes.world_size)
        if not shard_path(out, shard).is_file()
    ]
    total = sum(len(plan.shard_seeds(shard)) for shard in pending)
    progress = tqdm(
        total=total * processes.world_size,
        unit="sample",
        desc="sampling",
        disable=plan.quiet or not processes.is_main,
        smoothing=0.1,
    )
    with torch.no_grad(), progress:
        for shard in pending:
            seeds = plan.shard_seeds(shard)
            positions = list(range(shard * plan.shard_size, shard * plan.shard_size + len(seeds)))
            chunks, rewards, draws, nfe = [], [], [], 0.0
            for batch in batched(positions, plan.batch_size):
                batch_seeds = [plan.seeds[position] for position in batch]
                labels = plan.labels_for(batch)
                if conditioner is None:
                    x, batch_nfe, reward_values = plan.choices.batch(
                        fields, sampler, search, reward, batch_seeds, plan.data_shape, processes.device, labels
                    )
                    rewards.append(reward_values)
                else:
                    x, batch_nfe, batch_draws = restore_draws(
                        conditioner, fields, sampler, batch, batch_seeds, labels, plan.samples_per_input
                    )
                    draws.append(batch_draws.float().cpu())
                chunks.append((x if decoder is None else decoder.decode(x)).float().cpu())
                nfe += batch_nfe * len(batch)
                progress.update(len(batch) * processes.world_size)  # every process runs at about this rate
            samples = torch.cat(chunks)
            plan.choices.write_rewards(out, shard, seeds, rewards)
            if plan.samples_per_input > 1:
                write_posterior_shard(out, shard, seeds, torch.cat(draws), plan.write_png)
            if conditioner is not None:
                conditioner.write_shard(out, shard, seeds, plan.write_png)
            if plan.write_png:
                write_pngs(out, seeds, samples)
            write_shard(out, shard, seeds, samples, plan.labels_for(positions), nfe)


def run_sampling(plan: SamplePlan, processes: Processes) -> None:
    """Rank 0 prepares the directory; every rank writes its shards; rank 0 assembles samples.npz."""
    out = Path(plan.out)
    started = time.time()
    if processes.is_main:
        if plan.overwrite:
            clear_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
        write_record(out, {"status": "incomplete", "settings": plan.settings})
    processes.barrier()
    write_shards(plan, processes)
    processes.barrier()
    if not processes.is_main:
        return
    totals = assemble_samples(out, plan.num_shards, plan.output_shape)
    if plan.conditioning is not None:
        assemble_inputs(out, plan.num_shards)
    record = {
        "status": "complete",
        "settings": plan.settings,
        "checkpoint": str(Path(plan.checkpoint).resolve()),
        "num_samples": totals["count"],
        "nfe_per_sample": totals["nfe_total"] / totals["count"],
        "decoder": None if plan.decoder is None else plan.decoder.as_dict(),
        "processes": processes.world_size,
        "device": processes.device.type,
        "seconds_last_session": round(time.time() - started, 3),
        "package_version": package_version(),
        "git": git_state(Path(__file__).resolve().parent),
        "torch_version": torch.__version__,
    }
    if plan.conditioning is not None:
        record["inputs"] = plan.conditioning.record()
    record.update(plan.choices.summary(out, plan.num_shards, plan.keep_shards))
    if plan.samples_per_input > 1:
        record["posterior"] = assemble_posterior(out, plan.num_shards, plan.keep_shards)
    write_record(out, record)
    if not plan.keep_shards:
        for shard in range(plan.num_shards):
            shard_path(out, shard).unlink(missing_ok=True)
        remove_input_shards(out, plan.num_shards)
        remove_if_empty(shard_path(out, 0).parent)
    print(f"{totals['count']} samples, {record['nfe_per_sample']:.1f} NFE per sample -> {out}")


def remove_if_empty(directory: Path) -> None:
    """Remove the shard folder once its files are gone (kept when it holds anything else)."""
    try:
        directory.rmdir()
    except OSError:  # missing, or not empty
        pass


def run(arguments: list[str]) -> int:
    options = parser().parse(arguments)
    if multimarginal.requested(options):  # a multimarginal model's generation or translation
        return multimarginal.run(options)
    plan = make_plan(options)
    record = read_record(Path(plan.out))
    if not plan.overwrite and record is not None and record.get("status") == "complete":
        print(f"{plan.out} already holds these samples (record.json complete); nothing to do")
        return EXIT_SUCCESS
    run_on_processes(functools.partial(run_sampling, plan), options.devices, options.accelerator)
    return EXIT_SUCCESS


def main(arguments: list[str], debug: bool = False) -> int:
    return report_configuration_errors(run, arguments, debug)
