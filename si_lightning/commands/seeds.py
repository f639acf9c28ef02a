"""Seed ranges of the ``sample`` and ``evaluate`` commands: ``0-49999``, ``0,5,9`` or ``0-9,100-109``.

Sample i of a run is drawn from its own seed alone, so a seed list fully determines the samples
whatever the batch size or the number of processes.
"""

from __future__ import annotations

from si_lightning.errors import ConfigurationError

MAX_SEED = 2**63 - 1
MAX_SEEDS = 10_000_000  # the seed list is held in memory: ten million samples at most per command
SEEDS_EXPECTED = "a non-empty list of seeds >= 0 like 0-49999, 0,5,9 or 0-9,100-109 (ranges include both ends)"


def parse_seeds(text: str, key: str = "--seeds") -> list[int]:
    """The seeds of ``text`` in the order given; an empty range (A-B with B < A) or a repeat is an error."""
    seeds: list[int] = []
    for part in str(text).split(","):
        bounds = part.strip().split("-")
        try:
            numbers = [int(bound) for bound in bounds]
        except ValueError:
            raise ConfigurationError(key, text, SEEDS_EXPECTED) from None
        if len(numbers) not in (1, 2) or any(number < 0 for number in numbers):
            raise ConfigurationError(key, text, SEEDS_EXPECTED)
        if any(number > MAX_SEED for number in numbers):
            raise ConfigurationError(key, text, f"seeds <= {MAX_SEED} (a generator's seed is a 64-bit integer)")
        first, last = numbers[0], numbers[-1]
        if last < first:
            raise ConfigurationError(key, text, f"an empty range ({first}-{last}); {SEEDS_EXPECTED}")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise ConfigurationError(key, text, f"at most {MAX_SEEDS} seeds (one sample each)")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        raise ConfigurationError(key, text, "seeds without repeats (each seed gives one sample)")
    return seeds


def choose_seeds(seeds: str | None, num_samples: int | None) -> list[int]:
    """``--seeds`` if given, else 0 .. N - 1 for ``--num-samples N``; both given must agree in count."""
    if num_samples is not None and not 1 <= num_samples <= MAX_SEEDS:
        raise ConfigurationError("--num-samples", num_samples, f"an integer in [1, {MAX_SEEDS}]")
    if seeds is None:
        if num_samples is None:
            raise ConfigurationError("--num-samples", None, "a number of samples, or --seeds A-B")
        return list(range(num_samples))
    chosen = parse_seeds(seeds)
    if num_samples is not None and num_samples != len(chosen):
        raise ConfigurationError("--num-samples", num_samples, f"the {len(chosen)} seeds of --seeds {seeds}, or unset")
    return chosen
