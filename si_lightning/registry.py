"""Name -> class registries with one error message for a miss.

Every user-facing choice by name (schedule, gamma family, prediction, diffusion coefficient,
time sampler, ...) is a dict of classes; a miss raises a ValueError that lists the valid names,
so a typo in a config stops at parse time instead of deep inside training.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def lookup(registry: dict[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]`` or raise a ValueError naming ``name`` and the valid names."""
    if not isinstance(name, str) or name not in registry:
        valid = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} {name!r}; expected one of: {valid}")
    return registry[name]
