"""Lab cooperative-caching (starter): which member of an edge cluster is an object's home.

Inside a cluster (lecture slide 20, "check other servers in local cluster"), an edge that misses asks the
object's *home* member before going to the origin. Every member must agree on the home of every object,
whatever order it lists the members in, and whatever process it runs in; when a member leaves, only the
objects it was home to should move. Fill in :func:`home` and :func:`rank` (rendezvous hashing, Thaler &
Ravishankar 1998, is one way; consistent hashing is another).

The edge (``testbed/services/edge/cooperation.py``) calls ``home(key, members)`` on every miss, with ``key`` the
request path and ``members`` the cluster's member names. Grade with
``cdnlab grade cooperative-caching --solution path/to/cluster_hash.py``.
"""

from __future__ import annotations

import hashlib  # noqa: F401 - Python's hash() of a str differs between processes (PYTHONHASHSEED)
from collections.abc import Sequence


def rank(key: str, members: Sequence[str]) -> list[str]:
    """All members, most preferred first, for ``key``: the same list whatever the order of ``members``."""
    raise NotImplementedError("TODO rank: a score per (key, member) from a stable hash, highest first")


def home(key: str, members: Sequence[str]) -> str | None:
    """The member that should hold ``key`` (the first of :func:`rank`); None when there are no members."""
    raise NotImplementedError("TODO home: the most preferred member of rank(key, members), None if empty")
