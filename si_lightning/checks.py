"""The argument checks of every class and command: a count or a number in its range, a name among choices.

Python's ``bool`` is a subclass of ``int``, so ``isinstance(True, int)`` holds and a config's ``true``
would pass for the count 1; every check of a count or a number here refuses bools. The predicates
(``is_integer``, ``is_number``) leave the message to the caller; the checks raise a ValueError that
names the argument, what it must be and the value given. Every choice by name (schedule, gamma family,
prediction, diffusion coefficient, time sampler, ...) is a dict of classes read through ``lookup``, so
a typo in a config stops at parse time with the valid names instead of deep inside training.
"""

from __future__ import annotations

import math
from typing import TypeVar

T = TypeVar("T")


def is_integer(value: object) -> bool:
    """Whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float and not a bool (NaN and infinities included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """Whether ``value`` is a finite int or float, not a bool."""
    return is_number(value) and math.isfinite(value)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1 (bools rejected)."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def positive_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools rejected)."""
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def positive_float(name: str, value: object) -> float:
    """``value`` as a finite float > 0."""
    if not is_finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def non_negative_float(name: str, value: object) -> float:
    """``value`` as a finite float >= 0."""
    if not is_finite_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def lookup(registry: dict[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]`` or raise a ValueError naming ``name`` and the valid names."""
    if not isinstance(name, str) or name not in registry:
        valid = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} {name!r}; expected one of: {valid}")
    return registry[name]
