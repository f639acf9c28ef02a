"""ZigMa against DiT at equal parameter count: time and peak memory of forward + backward against tokens.

Both backbones have the same width; ZigMa's depth is the one whose parameter count is nearest DiT's
(about twice DiT's depth; the counts are printed, flagged if more than 10 % apart).

The images are (channels, side, side) with patch size 1, so the token count is side^2: 256, 1024 and
4096 by default. Each (model, tokens) pair runs in a fresh
subprocess, which builds the model and one batch, does ``--warmup`` forward + backward passes, then
``--repeats`` timed ones:

- time: the median CPU time of the process per forward + backward (``time.process_time``, the work
  done rather than the wait for a core on a shared machine; with CUDA, wall time between synchronisations);
- peak memory: on a CPU, the growth of the process's peak resident set during the passes (``ru_maxrss``
  after them minus the resident set after the warm-up, so imports, weights and inputs are not
  counted); on CUDA, ``torch.cuda.max_memory_allocated`` above the allocation before the passes.

The growth exponent is the least-squares slope of log(figure) against log(tokens) over the token counts:
1 is linear, 2 quadratic. The last lines give ZigMa's peak memory over DiT's at the largest token count.
DiT runs three ways: with torch's own choice of attention kernel (a flash kernel, on CPU as on GPU, whose
memory is linear in tokens), with the unfused kernel that holds the tokens x tokens scores, and with the
flash kernel and each block recomputed in backward (activation checkpointing, what ZigMa's blocks do by
default). ZigMa runs with its default (blocks recomputed) and with ``recompute=False`` (only the scan's
chunks recomputed), so the table separates what recomputation buys from what the architecture does.

    python benchmarks/zigma_scaling.py
    python benchmarks/zigma_scaling.py --tokens 256 1024 4096 --width 64 --dit-depth 4 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from si_lightning.nn import DiT, ZigMa, count_parameters

REPOSITORY = Path(__file__).resolve().parents[1]
MODELS = {
    "dit": "DiT (flash attention)",
    "dit-math": "DiT (unfused attention)",
    "dit-recompute": "DiT (flash attention, blocks recomputed)",
    "zigma": "ZigMa (blocks recomputed, the default)",
    "zigma-stored": "ZigMa (recompute=False)",
}
BASELINES = ("dit", "dit-math", "dit-recompute")


class Recomputed(torch.nn.Module):
    """A DiT block that keeps only its inputs for backward and runs again there, as ZigMa's blocks do."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, *inputs, use_reentrant=False, preserve_rng_state=False)


def build(model: str, side: int, arguments: argparse.Namespace, depth: int | None = None) -> torch.nn.Module:
    shape = (arguments.channels, side, side)
    if model.startswith("dit"):
        dit = DiT(
            data_shape=shape,
            preset=None,
            patch_size=1,
            depth=arguments.dit_depth,
            hidden_size=arguments.width,
            num_heads=arguments.heads,
        )
        if model == "dit-recompute":
            dit.blocks = torch.nn.ModuleList(Recomputed(block) for block in dit.blocks)
        return dit
    depth = zigma_depth(arguments) if depth is None else depth
    recompute = model != "zigma-stored"
    return ZigMa(
        data_shape=shape, preset=None, patch_size=1, depth=depth, hidden_size=arguments.width, recompute=recompute
    )


def zigma_depth(arguments: argparse.Namespace) -> int:
    """The ZigMa depth whose parameter count is nearest DiT's (counted on the meta device: nothing allocated)."""
    with torch.device("meta"):
        target = count_parameters(build("dit", 8, arguments))
        counts = {
            depth: count_parameters(build("zigma", 8, arguments, depth)) for depth in range(1, 4 * arguments.dit_depth)
        }
    return min(counts, key=lambda depth: abs(counts[depth] - target))


def resident_bytes() -> int:
    """The process's current resident set (Linux: /proc/self/statm's second field, in pages)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(model_name: str, side: int, arguments: argparse.Namespace) -> dict:
    """One (model, tokens) configuration in this process: {"seconds": median, "peak_bytes": ..., "parameters"}."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build(model_name, side, arguments).to(device)
    for parameter in model.parameters():  # off the zero initialisation, so every path does its work
        if parameter.dim() > 1:
            torch.nn.init.normal_(parameter, std=0.02)
    x = torch.randn(arguments.batch, arguments.channels, side, side, device=device)
    t = torch.rand(arguments.batch, device=device)

    # "dit-math" runs attention through torch's unfused kernel, which holds the (tokens x tokens) scores:
    # the cost of attention without a flash kernel. Plain "dit" gets torch's choice (flash on CPU and GPU).
    def step() -> None:
        model.zero_grad(set_to_none=True)
        with sdpa_kernel(SDPBackend.MATH) if model_name == "dit-math" else contextlib.nullcontext():
            model(x, t).square().mean().backward()

    # Warm-up first: lazy imports and one-time buffers of the first pass belong to the baseline. Freed
    # tensors go back to the system (the mmap threshold in run_in_subprocess), so the resident set after the
    # warm-up holds none of them, and the lifetime peak ru_maxrss is the passes' peak.
    for _ in range(max(1, arguments.warmup)):
        step()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = resident_bytes()
    times = []
    for _ in range(arguments.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        else:
            start = time.process_time()
            step()
            times.append(time.process_time() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    return {"seconds": statistics.median(times), "peak_bytes": peak, "parameters": count_parameters(model)}


def slope(tokens: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(tokens)."""
    xs, ys = [math.log(n) for n in tokens], [math.log(max(v, 1e-12)) for v in values]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((a - mean_x) * (b - mean_y) for a, b in zip(xs, ys, strict=True)) / sum((a - mean_x) ** 2 for a in xs)


def run_in_subprocess(model: str, tokens: int, arguments: argparse.Namespace) -> dict:
    side = math.isqrt(tokens)
    command = [sys.executable, __file__, "--worker", model, str(side), *arguments.forwarded]
    # glibc serves every block of 64 KiB or more by mmap and returns it at free (a fixed threshold: the
    # default one grows after frees and then keeps freed blocks in the heap), so the resident set follows
    # the live tensors and its peak is theirs.
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY),
        "OMP_NUM_THREADS": str(arguments.threads),
        "MALLOC_MMAP_THRESHOLD_": "65536",
    }
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{model} at {tokens} tokens failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 4096], help="square numbers")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dit-depth", type=int, default=4)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SIDE"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    forwarded = []
    for key in ("width", "heads", "dit_depth", "channels", "batch", "warmup", "repeats", "threads"):
        forwarded += [f"--{key.replace('_', '-')}", str(getattr(arguments, key))]
    arguments.forwarded = forwarded
    return arguments


def main() -> None:
    arguments = parse()
    if arguments.worker is not None:
        torch.set_num_threads(arguments.threads)
        model, side = arguments.worker
        print(json.dumps(measure(model, int(side), arguments)))
        return
    if len(arguments.tokens) < 2:
        raise SystemExit("error: --tokens: at least two token counts (the growth exponent is a slope)")
    for tokens in arguments.tokens:
        if math.isqrt(tokens) ** 2 != tokens:
            raise SystemExit(f"error: --tokens {tokens}: a square number (side x side patches of size 1)")
    results = {
        (model, tokens): run_in_subprocess(model, tokens, arguments)
        for tokens in arguments.tokens
        for model in arguments.models
    }
    with torch.device("meta"):
        counts = {model: count_parameters(build(model, 8, arguments)) for model in ("dit", "zigma")}
    ratio = counts["zigma"] / counts["dit"]
    device = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"device: {device}, threads {arguments.threads}, batch {arguments.batch}, width {arguments.width}")
    print(
        f"parameters: DiT (depth {arguments.dit_depth}, {arguments.heads} heads) {counts['dit']:,}; "
        f"ZigMa (depth {zigma_depth(arguments)}) {counts['zigma']:,}; ratio {ratio:.3f}"
        + ("" if abs(ratio - 1) <= 0.1 else "  (NOT within 10 %)")
    )
    print()
    print("| model | tokens | forward + backward s | peak memory MiB |")
    print("|---|---:|---:|---:|")
    for (model, tokens), figures in results.items():
        name = MODELS[model]
        print(f"| {name} | {tokens} | {figures['seconds']:.3f} | {figures['peak_bytes'] / 2**20:.1f} |")
    print()
    print("| model | time growth exponent | memory growth exponent |")
    print("|---|---:|---:|")
    for model in arguments.models:
        name = MODELS[model]
        seconds = [results[(model, n)]["seconds"] for n in arguments.tokens]
        memory = [results[(model, n)]["peak_bytes"] for n in arguments.tokens]
        print(f"| {name} | {slope(arguments.tokens, seconds):.2f} | {slope(arguments.tokens, memory):.2f} |")
    largest = arguments.tokens[-1]
    print()
    for zigma, baseline in ((z, b) for z in ("zigma", "zigma-stored") for b in BASELINES):
        if zigma not in arguments.models or baseline not in arguments.models:
            continue
        memory_ratio = results[(zigma, largest)]["peak_bytes"] / results[(baseline, largest)]["peak_bytes"]
        time_ratio = results[(zigma, largest)]["seconds"] / results[(baseline, largest)]["seconds"]
        print(
            f"at {largest} tokens, {MODELS[zigma]} / {MODELS[baseline]}: peak memory {memory_ratio:.2f}x "
            f"(target <= 0.5x: {'met' if memory_ratio <= 0.5 else 'missed'}), time {time_ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
