"""Per-sample randomness: each sample draws from its own generator (DESIGN.md conventions).

The noise of sample i then depends only on its seed, never on which batch or device it landed in,
so the samples for seeds 0..N-1 are the same at any batch size and on any number of GPUs. One seed
feeds several independent streams (the base draw x0, the SDE's Brownian increments, the Hutchinson
probes): reusing one generator for x0 and for the SDE would make the first increment equal x0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# Stream index per use of a seed; the generator seed is seed * len(STREAMS) + index (injective).
STREAMS: dict[str, int] = {"base": 0, "sde": 1, "probe": 2}

Seeds = Sequence[int] | Tensor
GeneratorArgument = torch.Generator | Sequence[torch.Generator] | None


def stream_seed(seed: int, stream: str) -> int:
    """The generator seed of ``stream`` for sample ``seed`` (distinct for every (seed, stream) pair)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; expected one of: {', '.join(STREAMS)}")
    return seed * len(STREAMS) + STREAMS[stream]


def _check_seeds(seeds: Seeds) -> list[int]:
    values = seeds.tolist() if isinstance(seeds, Tensor) else list(seeds)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"seeds must be ints >= 0, got {value!r}")
    return values


def generators_from_seeds(
    seeds: Seeds, stream: str = "sde", device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One generator per seed, on ``device``, seeded for the named stream."""
    return [torch.Generator(device=device).manual_seed(stream_seed(seed, stream)) for seed in _check_seeds(seeds)]


def base_noise(
    seeds: Seeds,
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """x0 ~ N(0, I) of shape (len(seeds), *shape), row i drawn from seed i's "base" stream."""
    generators = generators_from_seeds(seeds, "base", device)
    if not generators:
        raise ValueError("seeds must not be empty")
    return NoiseSource(generators).normal((len(generators), *shape), device, dtype)


class NoiseSource:
    """Standard normal and Rademacher draws of shape (batch, ...) for a sampler.

    Args:
        generator: a list with one generator per sample (batch-size invariant), a single generator
            (reproducible for a fixed batch, not across batch sizes), or None (torch's global generator).
    """

    def __init__(self, generator: GeneratorArgument = None) -> None:
        if generator is None or isinstance(generator, torch.Generator):
            self.per_sample: list[torch.Generator] | None = None
            self.generator = generator
        else:
            generators = list(generator)
            if not all(isinstance(item, torch.Generator) for item in generators):
                raise ValueError("generator must be a torch.Generator, a sequence of them (one per sample), or None")
            self.per_sample, self.generator = generators, None

    @classmethod
    def create(
        cls,
        batch: int,
        device: torch.device | str,
        generator: GeneratorArgument = None,
        seeds: Seeds | None = None,
        stream: str = "sde",
    ) -> NoiseSource:
        """From per-sample ``seeds`` (for ``stream``) or from ``generator``; not both."""
        if seeds is not None and generator is not None:
            raise ValueError("give either seeds or generator, not both")
        source = cls(generators_from_seeds(seeds, stream, device) if seeds is not None else generator)
        if source.per_sample is not None and len(source.per_sample) != batch:
            raise ValueError(f"got {len(source.per_sample)} per-sample seeds or generators for a batch of {batch}")
        return source

    def normal(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype) -> Tensor:
        """N(0, I) of ``shape`` = (batch, ...); with per-sample generators, row i from generator i."""
        if self.per_sample is None:
            return torch.randn(tuple(shape), generator=self.generator, device=device, dtype=dtype)
        return torch.stack(
            [torch.randn(tuple(shape[1:]), generator=item, device=device, dtype=dtype) for item in self.per_sample]
        )

    def rademacher(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype) -> Tensor:
        """Uniform on {-1, +1} of ``shape`` = (batch, ...)."""
        if self.per_sample is None:
            bits = torch.randint(0, 2, tuple(shape), generator=self.generator, device=device)
        else:
            bits = torch.stack(
                [torch.randint(0, 2, tuple(shape[1:]), generator=item, device=device) for item in self.per_sample]
            )
        return (2 * bits - 1).to(dtype)

    def normal_like(self, x: Tensor) -> Tensor:
        return self.normal(x.shape, x.device, x.dtype)
