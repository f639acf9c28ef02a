"""Per-sample randomness: each sample draws from its own generator (the project's convention for randomness).

The noise of sample i then depends only on its seed, never on which batch or device it landed in,
so the samples for seeds 0..N-1 are the same at any batch size and on any number of GPUs. One seed
feeds several independent streams (the base draw x0, the SDE's Brownian increments, the Hutchinson
probes): reusing one generator for x0 and for the SDE would make the first increment equal x0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from si_lightning.checks import is_integer

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
        if not is_integer(value) or value < 0:
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

    def counter_based(self) -> NoiseSource | CounterNoise:
        """A source for many draws of the same shape: per-sample generators become a ``CounterNoise``
        (one generator draw per sample now, then one batched draw per call); otherwise ``self``."""
        if self.per_sample is None:
            return self
        return CounterNoise.from_generators(self.per_sample)


# SplitMix64's constants as signed int64 (torch has no full uint64 arithmetic): the golden-ratio
# increment and the two multipliers of its finaliser.
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MULTIPLIERS = (0xBF58476D1CE4E5B9 - 2**64, 0x94D049BB133111EB - 2**64)
_UNIFORM_SCALE = 2.0**-32


def _shift_right(bits: Tensor, count: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: mask the copied sign bits)."""
    return (bits >> count) & ((1 << (64 - count)) - 1)


def _mix(bits: Tensor) -> Tensor:
    """SplitMix64's finaliser, a bijection of 64-bit words that scrambles every input bit into every
    output bit; int64 multiplication wraps around as uint64 does, so the bits are the same."""
    bits = (bits ^ _shift_right(bits, 30)) * _MULTIPLIERS[0]
    bits = (bits ^ _shift_right(bits, 27)) * _MULTIPLIERS[1]
    return bits ^ _shift_right(bits, 31)


class CounterNoise:
    """Per-sample noise streams drawn for the whole batch in one pass of elementwise kernels.

    Sample i has a 64-bit key k_i (one draw from its own generator). Draw number n gives element j of
    sample i the SplitMix64 output for the counter (k_i, n, j): the 64 bits of
    mix(mix(k_i + n * golden) + (j + 1) * golden) hold two 32-bit uniforms, each turned into a normal
    by the inverse normal CDF in float64 (sqrt(2) erfinv(2 u - 1)). Row i therefore depends only on
    k_i and n, never on the batch it is in; the integer kernels are exact and erfinv is evaluated per
    element by the same scalar code on a CPU (and by one device function on a GPU), so the values are
    bitwise equal at any batch size. The uniforms are (m + 1/2) 2^-32, so normals stop at |x| < 6.3
    (probability 3e-10 of a N(0, 1) draw beyond).

    Args:
        keys: (batch,) int64, the per-sample keys on the device the noise is drawn on.
    """

    def __init__(self, keys: Tensor) -> None:
        if keys.dtype != torch.int64 or keys.dim() != 1:
            raise ValueError(f"keys must be a 1-d int64 tensor, got {keys.dtype} of shape {tuple(keys.shape)}")
        self.keys = keys
        self.draws = 0

    @classmethod
    def from_generators(
        cls, generators: Sequence[torch.Generator], device: torch.device | str | None = None
    ) -> CounterNoise:
        """One key per generator (advancing each by one draw), on ``device`` (the first generator's by default)."""
        if not generators:
            raise ValueError("generators must not be empty")
        keys = [torch.randint(0, 2**62, (1,), generator=item, device=item.device) for item in generators]
        target = torch.device(device) if device is not None else generators[0].device
        return cls(torch.cat([key.to(target) for key in keys]))

    def _next_bits(self, shape: Sequence[int], device: torch.device | str, words: int) -> Tensor:
        """(batch, words) int64: this draw's SplitMix64 outputs of every sample."""
        batch = shape[0] if len(shape) else 0
        if batch != self.keys.shape[0]:
            raise ValueError(f"noise for a batch of {batch} from {self.keys.shape[0]} per-sample keys")
        keys = self.keys.to(device)
        offset = (self.draws * _GOLDEN + 2**63) % 2**64 - 2**63  # the product wrapped to int64, as uint64 wraps
        draw_keys = _mix(keys + offset)
        self.draws += 1
        counters = torch.arange(1, words + 1, device=device, dtype=torch.int64) * _GOLDEN
        return _mix(draw_keys[:, None] + counters)

    def normal(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype) -> Tensor:
        """N(0, I) of ``shape`` = (batch, ...): row i from sample i's stream."""
        size = math.prod(shape[1:])
        bits = self._next_bits(shape, device, (size + 1) // 2)
        # Each 64-bit output read as two signed 32-bit words s (a view: no copy, no shifts).
        words = bits.view(torch.int32)[:, :size]
        # y = (2 s + 1) 2^-32 = 2 u - 1 for u = (s + 2^31 + 1/2) 2^-32: exact in float64, inside (-1, 1).
        y = words.to(torch.float64).mul_(2.0).add_(1.0).mul_(_UNIFORM_SCALE)
        # The normal quantile of u is sqrt(2) erfinv(2 u - 1). torch's CPU erfinv applies the same scalar
        # function to every element in its vectorised and its remainder loops (unlike ndtri's 3x slower
        # code or the SLEEF log / cos of a Box-Muller transform), so the values stay bitwise batch-invariant.
        return y.erfinv_().mul_(math.sqrt(2.0)).to(dtype).reshape(tuple(shape))

    def rademacher(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype) -> Tensor:
        """Uniform on {-1, +1} of ``shape`` = (batch, ...): the top bit of each output."""
        bits = self._next_bits(shape, device, math.prod(shape[1:]))
        return (2 * _shift_right(bits, 63) - 1).to(dtype).reshape(tuple(shape))

    def normal_like(self, x: Tensor) -> Tensor:
        return self.normal(x.shape, x.device, x.dtype)
