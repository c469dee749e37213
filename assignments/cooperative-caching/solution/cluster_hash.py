"""Lab cooperative-caching, reference solution: rendezvous (highest random weight) hashing.

Each member gets a score for the key from a hash of both names; the highest score is the home (Thaler &
Ravishankar, "Using name-based mappings to increase hit rates", IEEE/ACM ToN 1998). The score depends on
the names only (BLAKE2b, not Python's per-process salted ``hash``), so every edge agrees; removing a member
moves only the keys it held, each to its second choice.

Instructors: this file is the answer key; strip ``solution/`` directories before handing labs out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _score(key: str, member: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{member}|{key}".encode()).digest()[:8], "big")


def rank(key: str, members: Sequence[str]) -> list[str]:
    return sorted(members, key=lambda m: (-_score(key, m), m))


def home(key: str, members: Sequence[str]) -> str | None:
    ranked = rank(key, members)
    return ranked[0] if ranked else None
