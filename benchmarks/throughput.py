"""Training and sampling throughput, peak memory, host synchronisations, and the SDE/ODE time ratio.

Training: images/s of one optimiser step (``InterpolantModule.per_sample_loss`` of the linear
interpolant's velocity loss, backward, AdamW) on random data already on the device, for the UNet of
configs/backbone/unet-cifar.yaml and DiT-S/2, DiT-B/2 at 32x32x3 and DiT-B/2 on 32x32x4 latents, in
fp32, bf16-mixed (autocast) and bf16-mixed + ``torch.compile`` (the UNet also channels_last).
On CUDA: peak memory, model FLOPs utilisation against ``--peak-tflops`` (the card's dense bf16 peak;
fp32 rows against the same figure, so they read as a share of the bf16 peak) and host synchronisations
per step counted with ``torch.cuda.set_sync_debug_mode("warn")``.

Sampling: images/s of ODE Euler, ODE Heun, dopri5 and SDE Euler-Maruyama at (nearly) equal NFE with a
network (random weights: the cost does not depend on them), and the SDE/ODE time ratio with the exact
Gaussian-mixture field (d = 128, the oracle of benchmarks/samplers.py), where the noise is a visible
share of a step. ``--sample-50k`` times sampling 50,000 CIFAR-size images with Heun at 35 NFE (CUDA).

Without CUDA a reduced version runs: the digits-size models (8x8), small batches, no compile unless
``--compile``.

    python benchmarks/throughput.py                     # CPU: reduced
    python benchmarks/throughput.py --sample-50k        # CUDA: everything
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from si_lightning.analytic import GaussianMixture
from si_lightning.couplings import Batch
from si_lightning.interpolants import Interpolant
from si_lightning.module import InterpolantModule
from si_lightning.nn import DiT, UNet
from si_lightning.sampling import ODESampler, SDESampler, base_noise

# ------------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelCase:
    name: str
    shape: tuple[int, int, int]
    build: Callable[[tuple[int, int, int]], nn.Module]
    batch_size: int


def unet_cifar(shape: tuple[int, int, int]) -> nn.Module:
    return UNet(
        data_shape=shape,
        model_channels=128,
        channel_multipliers=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        num_heads=4,
        dropout=0.1,
        norm_groups=32,
    )


def unet_digits(shape: tuple[int, int, int]) -> nn.Module:
    return UNet(
        data_shape=shape,
        model_channels=32,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        norm_groups=8,
    )


def dit(preset: str, patch: int) -> Callable[[tuple[int, int, int]], nn.Module]:
    return lambda shape: DiT(data_shape=shape, preset=preset, patch_size=patch)


GPU_MODELS = [
    ModelCase("UNet (cifar)", (3, 32, 32), unet_cifar, 128),
    ModelCase("DiT-S/2", (3, 32, 32), dit("S", 2), 256),
    ModelCase("DiT-B/2", (3, 32, 32), dit("B", 2), 256),
    ModelCase("DiT-B/2 latents", (4, 32, 32), dit("B", 2), 256),
]
CPU_MODELS = [
    ModelCase("UNet (digits)", (1, 8, 8), unet_digits, 64),
    ModelCase("DiT-S/4", (1, 8, 8), dit("S", 4), 16),
]
PRECISIONS = ("fp32", "bf16-mixed", "bf16-mixed+compile")


# ----------------------------------------------------------------------------------------- helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls: wall time synchronised at both ends on CUDA, the CPU time of
    the process on a CPU (on a shared machine wall time mostly measures the wait for a core)."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = clock()
        run()
        synchronize(device)
        seconds.append(clock() - start)
    return seconds


def count_host_syncs(run: Callable[[], object], device: torch.device) -> int | None:
    """Host synchronisations of one call, from CUDA's sync debug mode (None off CUDA)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(item.message) for item in caught)


# ---------------------------------------------------------------------------------------- training
def training_step_function(
    case: ModelCase, precision: str, device: torch.device
) -> tuple[Callable[[], Tensor], InterpolantModule]:
    torch.manual_seed(0)
    compile_setting: bool | dict = precision.endswith("+compile")
    model = InterpolantModule(backbone=case.build(case.shape), interpolant=Interpolant("linear"), loss_bins=0)
    model = model.to(device)
    channels_last = isinstance(model.backbone, UNet)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_setting:
        model.backbone.compile(fullgraph=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    x1 = torch.randn(case.batch_size, *case.shape, device=device)
    x0 = torch.randn(case.batch_size, *case.shape, device=device)
    if channels_last:
        x1, x0 = x1.contiguous(memory_format=torch.channels_last), x0.contiguous(memory_format=torch.channels_last)
    batch = Batch(x0, x1, None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision.startswith("bf16") else nullcontext()

    def step() -> Tensor:
        with autocast:
            loss, _ = model.per_sample_loss(batch, generator)
            mean = loss.mean()
        mean.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return mean

    return step, model


def training_rows(args: argparse.Namespace, device: torch.device) -> list[str]:
    cases = GPU_MODELS if device.type == "cuda" else CPU_MODELS
    precisions = [p for p in PRECISIONS if device.type == "cuda" or args.compile or not p.endswith("compile")]
    rows = [
        "| model | parameters | batch | precision | images/s | step ms | peak memory GiB | MFU | host syncs/step |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        for precision in precisions:
            step, model = training_step_function(case, precision, device)
            for _ in range(args.warmup):
                step()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = timed(step, device, args.repeats)
            median = statistics.median(seconds)
            peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "-"
            syncs = count_host_syncs(step, device)
            utilisation = "-"
            if device.type == "cuda" and args.peak_tflops:
                with FlopCounterMode(display=False) as counter:
                    step()
                utilisation = f"{counter.get_total_flops() / median / (args.peak_tflops * 1e12):.1%}"
            parameters = sum(p.numel() for p in model.parameters())
            rows.append(
                f"| {case.name} {case.shape} | {parameters / 1e6:.1f} M | {case.batch_size} | {precision} | "
                f"{case.batch_size / median:.1f} | {1e3 * median:.1f} | {peak} | {utilisation} | "
                f"{'-' if syncs is None else syncs} |"
            )
            print(rows[-1], flush=True)
            del step, model
    return rows


# ---------------------------------------------------------------------------------------- sampling
def oracle_mixture(device: torch.device) -> GaussianMixture:
    """d = 128, 5 modes: the benchmark mixture of benchmarks/samplers.py, in float32."""
    generator = torch.Generator().manual_seed(0)
    dim, modes = 128, 5
    means = 7.5 * torch.randn(modes, dim, generator=generator, dtype=torch.float64)
    factors = torch.randn(modes, dim, dim, generator=generator, dtype=torch.float64)
    covariances = factors.transpose(1, 2) @ factors / dim + torch.eye(dim, dtype=torch.float64)
    weights = torch.tensor([0.1, 0.15, 0.2, 0.25, 0.3], dtype=torch.float64)
    interpolant = Interpolant("linear", "brownian", 1.0)
    return GaussianMixture(
        weights.float().to(device), means.float().to(device), covariances.float().to(device), interpolant
    )


def sampler_cases(nfe: int) -> list[tuple[str, object, dict]]:
    """(name, sampler, keyword arguments) at about ``nfe`` evaluations each (dopri5's count is its own)."""
    return [
        (f"ODE euler {nfe} steps", ODESampler("euler", steps=nfe), {}),
        (f"ODE heun {nfe // 2} steps", ODESampler("heun", steps=nfe // 2), {}),
        ("ODE dopri5 tol 1e-3", ODESampler("dopri5", atol=1e-3, rtol=1e-3), {}),
        (
            f"SDE euler-maruyama {nfe - 1} steps + mean step, per-sample seeds",
            SDESampler(nfe - 1, diffusion="constant", last_step="mean", last_step_size=0.04),
            {"seeds": True},
        ),
        (
            f"SDE euler-maruyama {nfe - 1} steps + mean step, one generator",
            SDESampler(nfe - 1, diffusion="constant", last_step="mean", last_step_size=0.04),
            {"generator": True},
        ),
    ]


def sampling_rows(fields: object, x0: Tensor, nfe: int, device: torch.device, rounds: int) -> list[str]:
    """Interleaved rounds of every sampler; images/s from the median time, and the time per NFE."""
    seeds = list(range(x0.shape[0]))
    cases = sampler_cases(nfe)
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    counts: dict[str, int] = {}
    syncs: dict[str, int | None] = {}

    def runner(sampler: object, options: dict) -> Callable[[], object]:
        extra: dict = {}
        if options.get("seeds"):
            extra["seeds"] = seeds
        if options.get("generator"):
            extra["generator"] = torch.Generator(device=device).manual_seed(0)
        return lambda: sampler.sample(fields, x0, **extra)

    for name, sampler, options in cases:  # warm-up, NFE and host syncs
        counts[name] = runner(sampler, options)().nfe
        syncs[name] = count_host_syncs(runner(sampler, options), device)
    for round_index in range(rounds):
        for name, sampler, options in cases if round_index % 2 == 0 else list(reversed(cases)):
            times[name] += timed(runner(sampler, options), device, 1)
    euler = statistics.median(times[cases[0][0]]) / counts[cases[0][0]]
    rows = [
        "| sampler | NFE | images/s | ms per NFE | time per NFE / ODE euler's | host syncs per run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, _, _ in cases:
        median = statistics.median(times[name])
        per_nfe = median / counts[name]
        spread = [value / counts[name] / euler for value in times[name]]
        rows.append(
            f"| {name} | {counts[name]} | {x0.shape[0] / median:.1f} | {1e3 * per_nfe:.2f} | "
            f"{per_nfe / euler:.2f} (rounds {min(spread):.2f} to {max(spread):.2f}) | "
            f"{'-' if syncs[name] is None else syncs[name]} |"
        )
    return rows


def network_fields(case: ModelCase, device: torch.device, precision: str) -> object:
    torch.manual_seed(0)
    model = InterpolantModule(backbone=case.build(case.shape), interpolant=Interpolant("linear"), loss_bins=0)
    model = model.to(device).eval()
    for parameter in model.parameters():  # a fresh DiT outputs exactly zero: give it non-zero weights
        parameter.requires_grad_(False)
        if parameter.dim() > 1:
            parameter.normal_(0, 0.02)
    fields = model.fields(ema=False)
    if precision == "bf16-mixed":
        network = fields.network
        fields.network = lambda x, t, cond=None: _autocast_call(network, x, t, cond, device)
    return fields


def _autocast_call(network: Callable, x: Tensor, t: Tensor, cond: object, device: torch.device) -> Tensor:
    with torch.autocast(device.type, dtype=torch.bfloat16):
        return network(x, t, cond).float()


def sample_50k(case: ModelCase, device: torch.device, batch_size: int) -> str:
    """Wall time of 50,000 images with Heun at 35 NFE (18 steps: 2 x 17 + 1 Euler... the sampler counts)."""
    fields = network_fields(case, device, "bf16-mixed")
    sampler = ODESampler("heun", steps=18)
    total, nfe = 50_000, 0
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, total, batch_size):
            seeds = range(first, min(first + batch_size, total))
            result = sampler.sample(fields, base_noise(seeds, case.shape, device=device))
            nfe = result.nfe
    synchronize(device)
    seconds = time.perf_counter() - start
    return f"{case.name} {case.shape}, bf16-mixed, heun {nfe} NFE, batch {batch_size}: 50,000 images in {seconds:.1f} s"


def profile_sampling(fields: object, x0: Tensor, nfe: int) -> None:
    """torch.profiler's operator tables of the ODE Euler and the per-sample-seed SDE runs of ``sampler_cases``."""
    seeds = list(range(x0.shape[0]))
    for name, sampler, options in sampler_cases(nfe):
        if not (name.startswith("ODE euler") or options.get("seeds")):
            continue
        extra = {"seeds": seeds} if options.get("seeds") else {}
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as operators:
            sampler.sample(fields, x0, **extra)
        print(f"\n{name}: torch.profiler, by self CPU time\n")
        print(operators.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


# -------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the sampler timings")
    parser.add_argument("--nfe", type=int, default=50)
    parser.add_argument("--oracle-samples", type=int, default=2000)
    parser.add_argument("--compile", action="store_true", help="also the compiled rows on a CPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the card (H100/H200: 989)")
    parser.add_argument("--sample-50k", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-network-sampling", action="store_true")
    parser.add_argument("--profile-sampling", action="store_true", help="profile the oracle ODE and SDE, stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and args.peak_tflops is None:
        name = torch.cuda.get_device_name(device)
        args.peak_tflops = 989.0 if ("H100" in name or "H200" in name) else None
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )

    if not args.skip_training:
        print("Training\n")
        training_rows(args, device)

    print(f"\nSampling with the exact mixture field (d = 128, {args.oracle_samples} samples, float32)\n")
    oracle = oracle_mixture(device)
    x0 = base_noise(range(args.oracle_samples), (128,), device=device)
    if args.profile_sampling:
        with torch.inference_mode():
            profile_sampling(oracle, x0, args.nfe)
        return
    with torch.inference_mode():
        print("\n".join(sampling_rows(oracle, x0, args.nfe, device, args.rounds)))

    if not args.skip_network_sampling:
        case = GPU_MODELS[1] if device.type == "cuda" else CPU_MODELS[0]
        count = 256 if device.type == "cuda" else 64
        print(f"\nSampling with {case.name} {case.shape} (random weights), {count} images\n")
        fields = network_fields(case, device, "bf16-mixed" if device.type == "cuda" else "fp32")
        x0 = base_noise(range(count), case.shape, device=device)
        with torch.inference_mode():
            print("\n".join(sampling_rows(fields, x0, args.nfe, device, args.rounds)))

    if args.sample_50k and device.type == "cuda":
        print("\n" + sample_50k(GPU_MODELS[0], device, 1000))


if __name__ == "__main__":
    main()
