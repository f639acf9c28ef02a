"""``si-lightning evaluate``: FID, KID, IS, precision/recall and bits/dim of a checkpoint or of samples.

    si-lightning evaluate --ckpt last.ckpt --sampler ode-heun-50 --num-samples 50000 --metrics fid,is
    si-lightning evaluate --samples samples/run --reference data/cifar10-train --metrics fid,kid
    si-lightning evaluate --ckpt last.ckpt --sweep --num-samples 10000   # FID versus NFE of a sampler grid
    si-lightning evaluate -c evaluate.yaml                                # options from YAML (--print_config)
    si-lightning evaluate --forecasts forecasts/ --out scores/            # ensembles of `forecast` vs the truth

Generated side: samples of the checkpoint from seeds 0 .. N-1 (the ``sample`` engine), or images
from a folder / .npz / ``sample`` output (``--samples``). Real side: ``--reference`` images, or N
points of the run's data (its ``config.yaml``, or ``--data-config``) with cached feature statistics.
Writes ``{out}/evaluation.json`` (and ``sweep.csv``, ``sweep.png``) and prints a one-line summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt

from si_lightning.callbacks.fid import default_cache_directory
from si_lightning.commands import forecast_scores
from si_lightning.commands.arguments import CommaList, CommandParser, comma_text, report_configuration_errors
from si_lightning.commands.checkpoints import WEIGHTS, load_model
from si_lightning.commands.checks import check_output_path, check_real_points, check_same_images
from si_lightning.commands.inputs import build_datamodule, generate, read_images, run_config_path
from si_lightning.commands.paths import check_path, parse_path
from si_lightning.commands.processes import ACCELERATORS, resolve_accelerator
from si_lightning.commands.quality import IMAGE_METRICS, METRICS, RealSide, data_likelihood, image_metrics
from si_lightning.commands.samplers import SamplerOption, sampler_spec
from si_lightning.commands.seeds import choose_seeds
from si_lightning.commands.sweep import preset_points, run_sweep, sweep_grid, write_plot, write_table
from si_lightning.errors import EXIT_SUCCESS, ConfigurationError
from si_lightning.files import write_atomically
from si_lightning.metrics import FEATURE_EXTRACTORS, build_feature_extractor, quantize_to_uint8
from si_lightning.sampling import DIFFUSIONS, DIVERGENCES, ODE_METHODS

# (option, what its numbers are, their type, their least value) of the sweep grid.
SWEEP_NUMBERS = (
    ("--ode-steps", "step counts", int, 1),
    ("--sde-steps", "step counts", int, 1),
    ("--sde-scales", "diffusion scales", float, 0.0),
)
SWEEP_KINDS = {int: "integers", float: "numbers"}
# Options given as comma-separated text or, in a config file, as a YAML list.
LIST_OPTIONS = (
    "seeds", "metrics", "sweep_samplers", "ode_methods", "ode_steps", "sde_diffusions", "sde_scales", "sde_steps",
    "guidance_scales",
)  # fmt: skip


def comma_list(kind: type, text: str) -> list:
    return [kind(part) for part in text.split(",") if part.strip()]


def parser() -> CommandParser:
    parse = CommandParser.for_command(prog="si-lightning evaluate", description=__doc__.split("\n")[0])
    source = parse.add_argument_group("what to evaluate")
    source.add_argument("--ckpt", type=str | None, help="checkpoint written by si-lightning fit")
    source.add_argument("--samples", type=str | None, help="folder of images, .npz (arr_0 uint8 NHWC) or sample output")
    source.add_argument(
        "--forecasts", type=str | None, help="a folder si-lightning forecast wrote: score its ensembles"
    )
    source.add_argument(
        "--spectrum-from", type=PositiveInt, default=1, help="with --forecasts: first lead of the spectrum average"
    )
    source.add_argument(
        "--sampler", type=SamplerOption, default="ode-heun-50", help="with --ckpt: preset, YAML or class_path block"
    )
    source.add_argument("--num-samples", type=PositiveInt | None, help="with --ckpt: samples from seeds 0 .. N-1")
    source.add_argument("--seeds", type=CommaList | None, help="with --ckpt: seed list (0-49999, ...)")
    source.add_argument("--guidance-scale", type=float | None, help="with --ckpt: classifier-free guidance scale")
    source.add_argument("--path", type=str | None, help="with --ckpt: sample along SCHEDULE[:GAMMA] (converted)")
    source.add_argument("--weights", default="ema", choices=WEIGHTS)
    source.add_argument("--batch-size", type=PositiveInt, default=256)
    source.add_argument("--accelerator", default="auto", choices=ACCELERATORS)
    real = parse.add_argument_group("the real side")
    real.add_argument("--reference", type=str | None, help="folder of real images or .npz (instead of the run's data)")
    real.add_argument("--data-config", type=str | None, help="config with the data section (default: the run's)")
    real.add_argument("--split", type=str, default="train", help="data split of the real points")
    real.add_argument("--num-real", type=int | None, help="real points (default: as many as generated)")
    real.add_argument("--real-seed", type=int, default=0)
    real.add_argument("--cache-dir", type=str | None, help="real-statistics cache (default ~/.cache/si_lightning/...)")
    metrics = parse.add_argument_group("metrics")
    metrics.add_argument("--metrics", type=CommaList, default="fid", help=f"comma-separated, of {','.join(METRICS)}")
    metrics.add_argument("--extractor", type=str, default="inception", help=f"one of {', '.join(FEATURE_EXTRACTORS)}")
    metrics.add_argument("--inception-weights", type=str | None, help="InceptionV3 weights file (never downloaded)")
    metrics.add_argument("--kid-subset-size", type=int, default=1000)
    metrics.add_argument("--nll-samples", type=int, default=128, help="data points of the likelihood")
    metrics.add_argument("--nll-split", type=str, default="val")
    metrics.add_argument(
        "--nll-solver", type=SamplerOption, default="dopri5", help="ODE preset, YAML file or class_path block"
    )
    metrics.add_argument("--nll-divergence", default="exact", choices=sorted(DIVERGENCES))
    sweep = parse.add_argument_group("sweep (with --ckpt): FID versus NFE over a sampler grid")
    sweep.add_argument("--sweep", action="store_true")
    sweep.add_argument("--sweep-samplers", type=CommaList | None, help="preset names (instead of the grid below)")
    sweep.add_argument("--ode-methods", type=CommaList, default="euler,heun", help="ODE methods ('' for none)")
    sweep.add_argument("--ode-steps", type=CommaList, default="5,10,20,50")
    sweep.add_argument("--sde-diffusions", type=CommaList, default="sbdm,sigma", help="diffusion families")
    sweep.add_argument("--sde-scales", type=CommaList, default="1.0")
    sweep.add_argument("--sde-steps", type=CommaList, default="10,20,50")
    sweep.add_argument("--guidance-scales", type=CommaList, default="", help="guidance scales (class-conditional)")
    parse.add_argument(
        "--out", type=str, default="evaluation", help="directory for evaluation.json, sweep.csv, sweep.png"
    )
    return parse


def parse_options(arguments: list[str]) -> Namespace:
    """The parsed options, each list option (``CommaList``) as its comma-separated text, samplers as mappings."""
    options = parser().parse(arguments)
    for name in LIST_OPTIONS:
        options[name] = comma_text(options[name])
    for name in ("sampler", "nll_solver"):  # a class_path block as the plain mapping evaluation.json records
        if isinstance(options[name], Namespace):
            options[name] = options[name].as_dict()
    return options


def check_metrics(text: str) -> list[str]:
    metrics = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [metric for metric in metrics if metric not in METRICS]
    if not metrics or unknown:
        raise ConfigurationError("--metrics", text, f"a comma-separated list of {', '.join(METRICS)}")
    return metrics


def real_side(options: Namespace, count: int, datamodule: Any) -> RealSide:
    if options.reference is not None:
        return RealSide(images=read_images(options.reference, "--reference"))
    if datamodule is None:
        raise ConfigurationError("--reference", None, "a folder or .npz of real images, or --data-config / --ckpt")
    num_real = options.num_real or count
    check_real_points(datamodule, options.split, num_real, "--split", "--num-real")
    return RealSide(
        datamodule=datamodule,
        split=options.split,
        num_samples=num_real,
        real_seed=options.real_seed,
        cache=default_cache_directory_or(options.cache_dir),
    )


def default_cache_directory_or(path: str | None):
    from si_lightning.metrics import StatisticsCache

    return StatisticsCache(default_cache_directory() if path is None else path)


def parse_sweep(options: Namespace) -> list:
    if options.sweep_samplers:
        guidance_scales = comma_list(float, options.guidance_scales) or [None]
        return preset_points(comma_list(str, options.sweep_samplers), guidance_scales)
    for key, text, kind, smallest in SWEEP_NUMBERS:
        for value in comma_list(str, getattr(options, key[2:].replace("-", "_"))):
            try:
                number = kind(value)
            except ValueError:
                raise ConfigurationError(key, value, f"comma-separated {SWEEP_KINDS[kind]} >= {smallest}") from None
            if not math.isfinite(number) or number < smallest:
                raise ConfigurationError(key, value, f"comma-separated {text} >= {smallest}")
    try:
        ode_methods = comma_list(str, options.ode_methods)
        sde_diffusions = comma_list(str, options.sde_diffusions)
        grid = {
            "ode_methods": ode_methods,
            "ode_steps": comma_list(int, options.ode_steps),
            "sde_diffusions": sde_diffusions,
            "sde_scales": comma_list(float, options.sde_scales),
            "sde_steps": comma_list(int, options.sde_steps),
            "guidance_scales": comma_list(float, options.guidance_scales) or [None],
        }
    except ValueError as error:
        raise ConfigurationError(
            "--sweep", str(error), "comma-separated numbers for the step counts and scales"
        ) from None
    for method in ode_methods:
        if method not in ODE_METHODS:
            raise ConfigurationError("--ode-methods", method, f"ODE methods among {', '.join(ODE_METHODS)}")
    for diffusion in sde_diffusions:
        if diffusion not in DIFFUSIONS:
            raise ConfigurationError("--sde-diffusions", diffusion, f"diffusions among {', '.join(DIFFUSIONS)}")
    points = sweep_grid(**grid)
    if not points:
        raise ConfigurationError("--sweep", "empty grid", "at least one ODE method or SDE diffusion")
    return points


def image_metrics_wanted(metrics: list[str], sweep: bool) -> list[str]:
    """The image metrics asked for (a sweep always computes FID)."""
    return [metric for metric in metrics if metric in IMAGE_METRICS] or (["fid"] if sweep else [])


def check_shape_against(images: torch.Tensor, real: RealSide, datamodule: Any, samples: str) -> None:
    """The samples read from disk have the shape of the real side: the reference images, or the data."""
    if real.images is not None:
        check_same_images(images, tuple(real.images.shape[1:]), "--samples", samples, "the --reference images")
        return
    data_shape = tuple(getattr(datamodule, "data_shape", ()) or ())
    if data_shape:
        check_same_images(images, data_shape, "--samples", samples, "the data")


def summary_line(values: dict[str, float], details: dict[str, Any]) -> str:
    shown = " ".join(f"{name}={value:.6g}" for name, value in values.items())
    about = [f"{details['num_samples']} samples, extractor {details['extractor']}"] if details["num_samples"] else []
    return f"{shown} ({', '.join([*about, details['source']])})"


def check_numbers(options: Namespace, metrics: list[str]) -> None:
    """The counts and sizes of the command line, before anything is loaded."""
    if options.kid_subset_size < 2:
        raise ConfigurationError("--kid-subset-size", options.kid_subset_size, "an integer >= 2")
    if options.num_real is not None and options.num_real < 2:
        raise ConfigurationError("--num-real", options.num_real, "an integer >= 2 (statistics need two points or more)")
    if "nll" in metrics and options.nll_samples < 1:
        raise ConfigurationError("--nll-samples", options.nll_samples, "an integer >= 1")
    if options.guidance_scale is not None and not math.isfinite(options.guidance_scale):
        raise ConfigurationError("--guidance-scale", options.guidance_scale, "a finite number")


def run(arguments: list[str]) -> int:
    options = parse_options(arguments)
    if options.forecasts is not None:  # a forecast output against its truth: no model, no images
        return forecast_scores.run(options)
    metrics = check_metrics(options.metrics)
    if (options.ckpt is None) == (options.samples is None):
        raise ConfigurationError(
            "--ckpt", options.ckpt, "exactly one of --ckpt (generate), --samples (read) or --forecasts (score)"
        )
    check_numbers(options, metrics)
    check_output_path(options.out)
    path = parse_path(options.path)
    points = parse_sweep(options) if options.sweep else []  # a bad grid or preset before the checkpoint is read
    device = torch.device(resolve_accelerator(options.accelerator))
    module = datamodule = None
    if options.ckpt is not None:
        module = load_model(options.ckpt, options.weights).to(device)
        check_path(module.fields(), path, options.path)
        config = Path(options.data_config) if options.data_config else run_config_path(options.ckpt)
        if options.reference is None or "nll" in metrics:
            datamodule = build_datamodule(config)
    elif options.data_config:
        datamodule = build_datamodule(Path(options.data_config))
    if datamodule is not None and image_metrics_wanted(metrics, options.sweep) and options.reference is None:
        check_real_points(datamodule, options.split, options.num_real, "--split", "--num-real")
    if datamodule is not None and "nll" in metrics:
        check_real_points(datamodule, options.nll_split, options.nll_samples, "--nll-split", "--nll-samples")
    if "nll" in metrics and module is None:
        raise ConfigurationError("--metrics", options.metrics, "nll only with --ckpt (it needs the model)")
    image_wanted = image_metrics_wanted(metrics, options.sweep)
    if image_wanted and module is not None and module.interpolant.gaussian_base is False:
        raise ConfigurationError(
            "--ckpt",
            options.ckpt,
            "a model with a Gaussian base: this one restores images (a data-dependent coupling); sample it with "
            "si-lightning sample --inputs DIR --out OUT, then evaluate --samples OUT --reference DIR",
        )
    extractor = None
    if image_wanted:
        if options.extractor not in FEATURE_EXTRACTORS:
            raise ConfigurationError("--extractor", options.extractor, f"one of {', '.join(FEATURE_EXTRACTORS)}")
        weights = {"weights_path": options.inception_weights} if options.extractor == "inception" else {}
        try:
            extractor = build_feature_extractor(options.extractor, **weights).to(device)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigurationError("--inception-weights", options.inception_weights, str(error)) from None

    out = Path(options.out)
    values: dict[str, float] = {}
    details: dict[str, Any] = {"metrics": metrics, "extractor": extractor.identity() if extractor else None}
    if options.sweep:
        if module is None:
            raise ConfigurationError("--sweep", True, "--ckpt: a sweep generates samples")
        seeds = choose_seeds(options.seeds, options.num_samples)
        real = real_side(options, len(seeds), datamodule)

        def evaluate_point(point) -> tuple[float, float]:
            samples, nfe = generate(
                module, point.spec.build(), seeds, options.batch_size, device, point.guidance_scale, path
            )
            fid = image_metrics(quantize_to_uint8(samples), ["fid"], extractor, real, options.batch_size)["fid"]
            return fid, nfe

        rows = run_sweep(points, evaluate_point)
        write_table(rows, out / "sweep.csv")
        write_plot(rows, out / "sweep.png", f"{Path(options.ckpt).name}: FID ({extractor.name}) vs NFE, N={len(seeds)}")
        best = min(rows, key=lambda row: row["fid"])
        print(f"best: {best['sampler']} fid={best['fid']:.6g} at {best['nfe']:.1f} NFE -> {out / 'sweep.csv'}")
        return EXIT_SUCCESS

    if options.ckpt is not None:
        seeds = choose_seeds(options.seeds, options.num_samples) if image_wanted else []
        details.update({"source": f"checkpoint {options.ckpt}", "sampler": options.sampler, "path": path})
        if image_wanted:
            spec = sampler_spec(options.sampler)
            samples, nfe = generate(
                module, spec.build(), seeds, options.batch_size, device, options.guidance_scale, path
            )
            images = quantize_to_uint8(samples) if samples.dim() == 4 else None
            values["nfe"] = nfe
            details["sampler"] = spec.as_dict()
    else:
        images = read_images(options.samples, "--samples")
        details["source"] = f"samples {options.samples}"
    if image_wanted:
        if images is None:
            raise ConfigurationError("--metrics", options.metrics, "image metrics only for image data")
        details["num_samples"] = int(images.shape[0])
        real = real_side(options, int(images.shape[0]), datamodule)
        if options.samples is not None:
            check_shape_against(images, real, datamodule, options.samples)
        size = min(options.kid_subset_size, int(images.shape[0]))
        values.update(image_metrics(images, metrics, extractor, real, options.batch_size, kid_subset_size=size))
    else:
        details["num_samples"] = 0
    if "nll" in metrics:
        solver = sampler_spec(options.nll_solver, "--nll-solver").build("--nll-solver")
        values.update(
            data_likelihood(
                module,
                datamodule,
                options.nll_samples,
                options.nll_split,
                solver,
                options.nll_divergence,
                options.batch_size,
                device,
            )
        )
    write_atomically(out / "evaluation.json", (json.dumps({"values": values, **details}, indent=2) + "\n").encode())
    print(summary_line(values, details))
    return EXIT_SUCCESS


def main(arguments: list[str], debug: bool = False) -> int:
    return report_configuration_errors(run, arguments, debug)
