"""Rendezvous (highest random weight) hashing of object keys to cluster members.

Thaler & Ravishankar, "Using name-based mappings to increase hit rates", IEEE/ACM ToN 6(1), 1998.
Every member gets a pseudo-random score for a key; the highest score is the key's *home*. Removing a
member moves only the keys that lived on it (each to its second choice); the rest stay put. This is how
an edge inside a cluster decides which sibling should hold an object (lecture slide 20, "check other
servers in local cluster").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def score(key: str, member: str) -> int:
    """The member's weight for ``key``: 64 bits of BLAKE2b over both names."""
    h = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")


def rank(key: str, members: Sequence[str]) -> list[str]:
    """Members ordered from most to least preferred for ``key`` (ties broken by name)."""
    return sorted(members, key=lambda m: (-score(key, m), m))


def home(key: str, members: Sequence[str]) -> str | None:
    """The member with the highest weight for ``key``, or None when there are no members."""
    if not members:
        return None
    return min(members, key=lambda m: (-score(key, m), m))
