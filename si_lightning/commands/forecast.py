"""``si-lightning forecast``: ensemble roll-outs of a forecasting checkpoint, resumable, on 1 or N processes.

    si-lightning forecast --ckpt runs/kolmogorov-forecast/version_0/checkpoints/last.ckpt \\
        --inputs held-out.npz --steps 100 --members 8 --out forecasts/ [--sde-steps 20] [--devices 2] [-c options.yaml]

``--inputs`` is an .npz with ``states`` (K, 2, H, W) or ``trajectories`` (K, T, 2, H, W) (their first
frames start the forecasts; the whole trajectories are kept as the truth). Member m of input i draws
all its noise from one generator seeded by (seed, i, m), and the members of an input are always rolled
out together, so the forecasts are the same on any number of processes. Rank r writes inputs r, r + W,
... as ``shards/input-NNNNN.npz`` (atomically); a shard already on disk is skipped, so a run that was
stopped continues when started again with the same settings. At the end rank 0 writes
``trajectories.npz`` (``forecasts`` (K, M, steps + 1, 2, H, W), ``inputs`` and, if given, ``truth``)
and ``record.json`` (settings, checkpoint hash, per-input blow-up counts, time).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse.typing import PositiveInt

from si_lightning.commands.arguments import CommandParser, report_configuration_errors
from si_lightning.commands.checkpoints import WEIGHTS, file_sha256, load_model
from si_lightning.commands.checks import check_output_path
from si_lightning.commands.processes import ACCELERATORS, Processes, run_on_processes
from si_lightning.errors import EXIT_SUCCESS, ConfigurationError
from si_lightning.files import write_atomically
from si_lightning.forecasting import rollout
from si_lightning.physics import kinetic_energy
from si_lightning.seeding import derived_seed

RECORD, TRAJECTORIES, SHARDS = "record.json", "trajectories.npz", "shards"


def parser() -> CommandParser:
    parse = CommandParser.for_command(prog="si-lightning forecast", description=__doc__.split("\n")[0])
    parse.add_argument("--ckpt", type=str, required=True, help="checkpoint of a forecasting model (si-lightning fit)")
    parse.add_argument("--inputs", type=str, required=True, help=".npz with states (K, 2, H, W) or trajectories")
    parse.add_argument("--steps", type=PositiveInt, required=True, help="forecast steps N of each roll-out")
    parse.add_argument("--members", type=PositiveInt, default=8, help="ensemble members M per input")
    parse.add_argument("--out", type=str, required=True, help="output directory")
    parse.add_argument("--sde-steps", type=PositiveInt, default=20, help="Euler-Maruyama steps in tau per step")
    parse.add_argument("--seed", type=int, default=0, help="seeds every member's noise with the input's index")
    parse.add_argument("--blow-up-factor", type=float, default=10.0, help="blown up: energy > factor x input's")
    parse.add_argument("--devices", type=PositiveInt, default=1, help="number of processes (ignored under torchrun)")
    parse.add_argument("--accelerator", default="cpu", choices=ACCELERATORS)
    parse.add_argument("--weights", default="ema", choices=WEIGHTS, help="ema (the checkpoint's state_dict) or raw")
    parse.add_argument("--overwrite", action="store_true", help="replace another run's forecasts in --out")
    return parse


@dataclass(frozen=True)
class ForecastPlan:
    """What every process needs (picklable for spawned processes)."""

    checkpoint: str
    weights: str
    inputs: str
    out: str
    steps: int
    members: int
    sde_steps: int
    seed: int
    blow_up_factor: float
    count: int
    settings: dict[str, Any]


def read_inputs(path: str, data_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(initial states (K, 2, H, W), truth (K, T, 2, H, W) or None) from ``--inputs``, checked against the model."""
    file = Path(path)
    expected = f"an .npz with states (K, {', '.join(map(str, data_shape))}) or trajectories (K, T, ...)"
    if not file.is_file():
        raise ConfigurationError("--inputs", path, f"an existing file: {expected}")
    try:
        with np.load(file) as content:
            arrays = {name: content[name] for name in content.files if name in ("states", "trajectories")}
    except (OSError, ValueError) as error:
        raise ConfigurationError("--inputs", path, f"{expected} ({type(error).__name__})") from None
    if "trajectories" in arrays:
        truth = torch.from_numpy(np.asarray(arrays["trajectories"], dtype=np.float32))
        if truth.dim() != 2 + len(data_shape) or tuple(truth.shape[2:]) != data_shape or truth.shape[0] < 1:
            raise ConfigurationError("--inputs", path, f"{expected}; trajectories are {tuple(truth.shape)}")
        return truth[:, 0].contiguous(), truth
    if "states" not in arrays:
        raise ConfigurationError("--inputs", path, f"{expected}; it holds neither")
    states = torch.from_numpy(np.asarray(arrays["states"], dtype=np.float32))
    if states.dim() != 1 + len(data_shape) or tuple(states.shape[1:]) != data_shape or states.shape[0] < 1:
        raise ConfigurationError("--inputs", path, f"{expected}; states are {tuple(states.shape)}")
    return states, None


def make_plan(arguments: list[str]) -> tuple[ForecastPlan, Any]:
    """Parse and check every option, the checkpoint and the inputs before any process starts."""
    options = parser().parse(arguments)
    if not options.blow_up_factor > 1:
        raise ConfigurationError("--blow-up-factor", options.blow_up_factor, "a number > 1")
    out = check_output_path(options.out)
    module = load_model(options.ckpt, options.weights)
    if not hasattr(module.interpolant, "forecast"):
        raise ConfigurationError(
            "--ckpt", options.ckpt, "a forecasting model (its interpolant is si_lightning.forecasting's)"
        )
    data_shape = tuple(int(size) for size in module.backbone.data_shape)
    initial, _ = read_inputs(options.inputs, data_shape)
    settings = {
        "checkpoint_sha256": file_sha256(Path(options.ckpt)),
        "weights": options.weights,
        "inputs_sha256": file_sha256(Path(options.inputs)),
        "steps": options.steps,
        "members": options.members,
        "sde_steps": options.sde_steps,
        "seed": options.seed,
    }
    record = out / RECORD
    if record.is_file() and not options.overwrite:
        previous = json.loads(record.read_text()).get("settings")
        if previous != settings:
            raise ConfigurationError("--out", str(out), "a new directory or one of this run's (pass --overwrite)")
    plan = ForecastPlan(
        options.ckpt, options.weights, options.inputs, str(out), options.steps, options.members,
        options.sde_steps, options.seed, options.blow_up_factor, initial.shape[0], settings,
    )  # fmt: skip
    return plan, options


def shard_path(plan: ForecastPlan, index: int) -> Path:
    return Path(plan.out) / SHARDS / f"input-{index:05d}.npz"


def read_shard(plan: ForecastPlan, index: int) -> np.ndarray | None:
    """The trajectories of input ``index`` if a shard of these settings is on disk."""
    path = shard_path(plan, index)
    if not path.is_file():
        return None
    try:
        with np.load(path) as content:
            if json.loads(str(content["settings"])) != plan.settings:
                return None
            return content["forecasts"]
    except (OSError, ValueError, KeyError):
        return None


def forecast_shards(plan: ForecastPlan, processes: Processes) -> None:
    """Roll out this rank's inputs (r, r + W, ...) and write one shard each; shards on disk are kept."""
    module = load_model(plan.checkpoint, plan.weights).to(processes.device)
    initial, _ = read_inputs(plan.inputs, tuple(int(size) for size in module.backbone.data_shape))
    for index in range(processes.rank, plan.count, processes.world_size):
        if read_shard(plan, index) is not None:
            continue
        generators = [torch.Generator().manual_seed(derived_seed(plan.seed, "forecast", index, member))
                      for member in range(plan.members)]  # fmt: skip
        start = initial[index].expand(plan.members, *initial.shape[1:]).to(processes.device)
        trajectories = rollout(module.interpolant, module.backbone, start, plan.steps, plan.sde_steps, generators)
        buffer = io.BytesIO()
        np.savez(buffer, forecasts=trajectories.cpu().numpy(), settings=json.dumps(plan.settings))
        write_atomically(shard_path(plan, index), buffer.getvalue())
    processes.barrier()
    if processes.is_main:
        assemble(plan, time.time())


def assemble(plan: ForecastPlan, finished: float) -> None:
    """trajectories.npz and record.json from the shards (rank 0)."""
    forecasts = np.stack([read_shard(plan, index) for index in range(plan.count)])
    initial, truth = read_inputs(plan.inputs, tuple(forecasts.shape[3:]))
    arrays = {"forecasts": forecasts, "inputs": initial.numpy()}
    if truth is not None:
        arrays["truth"] = truth.numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomically(Path(plan.out) / TRAJECTORIES, buffer.getvalue())
    energy = kinetic_energy(torch.from_numpy(forecasts))  # (K, M, steps + 1)
    threshold = plan.blow_up_factor * kinetic_energy(initial)[:, None, None]
    blown = (~torch.isfinite(energy) | (energy > threshold)).any(dim=2).sum(dim=1)
    record = {
        "settings": plan.settings,
        "plan": {key: value for key, value in asdict(plan).items() if key != "settings"},
        "shape": list(forecasts.shape),
        "blown_up_members": blown.tolist(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
    }
    write_atomically(Path(plan.out) / RECORD, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def run(arguments: list[str]) -> int:
    plan, options = make_plan(arguments)
    started = time.time()
    run_on_processes(_Work(plan), options.devices, options.accelerator)
    print(f"forecast: {plan.count} inputs x {plan.members} members x {plan.steps} steps in "
          f"{time.time() - started:.1f} s -> {Path(plan.out) / TRAJECTORIES}")  # fmt: skip
    return EXIT_SUCCESS


@dataclass(frozen=True)
class _Work:
    """``forecast_shards`` of a plan as a picklable callable (spawned processes receive it)."""

    plan: ForecastPlan

    def __call__(self, processes: Processes) -> None:
        forecast_shards(self.plan, processes)


def main(arguments: list[str], debug: bool = False) -> int:
    """Entry point of ``si-lightning forecast``; bad options end in one ``error:`` line and exit status 2."""
    return report_configuration_errors(run, arguments, debug)
