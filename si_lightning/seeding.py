"""Seeds derived from several parts, the same in every process (unlike Python's ``hash``)."""

from __future__ import annotations

import hashlib


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed from ``parts`` (ints and strings), by BLAKE2b of their repr."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
