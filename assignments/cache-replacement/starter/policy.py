"""Lab cache-replacement (starter): LFU with Dynamic Aging (LFU-DA) behind the EvictionPolicy Protocol.

Fill in the TODOs of :class:`LFUDA`. The store (``testbed/services/store.py``) calls ``insert`` for a new
key, ``access`` on every hit, ``victim`` when it needs room (it then calls ``remove`` on that key), and
``remove`` whenever a key leaves for any reason. The rules (see the lab README):

* every stored key has a use count ``c`` (1 on insert, +1 per access) and a priority ``P = L + c``,
  computed with the current cache age ``L`` (starts at 0) at that insert/access;
* ``victim()`` returns (does NOT remove) the key with the smallest ``P``; ties: least recently used
  (the key whose last insert/access is oldest); None when empty;
* when a key returned by ``victim()`` is then removed, ``L`` becomes that key's priority. Removing any
  other key leaves ``L`` unchanged; removing an unknown key does nothing.

Grade with ``cdnlab grade cache-replacement --solution path/to/policy.py``; use it in an edge with
``eviction: "policy:LFUDA"`` (the directory of policy.py on PYTHONPATH).
"""

from __future__ import annotations

from collections.abc import Hashable


class LFUDA:
    """LFU with dynamic aging; ties broken by least recent use."""

    def __init__(self) -> None:
        self.age = 0.0  # L
        # TODO: your bookkeeping: per key its count, its priority and when it was last used

    def insert(self, key: Hashable, size: int) -> None:
        """A new key was stored: count 1, priority L + 1, most recently used."""
        raise NotImplementedError("TODO LFUDA.insert: count = 1, priority = L + 1")

    def access(self, key: Hashable) -> None:
        """A hit: count + 1, priority L + count, most recently used (unknown keys: ignore)."""
        raise NotImplementedError("TODO LFUDA.access: count += 1, priority = L + count")

    def remove(self, key: Hashable) -> None:
        """The key left the store; if it is the key victim() just returned, L = its priority."""
        raise NotImplementedError("TODO LFUDA.remove: forget the key; age the cache if it was the victim")

    def victim(self) -> Hashable | None:
        """The key with the lowest priority (ties: least recently used), without removing it."""
        raise NotImplementedError("TODO LFUDA.victim: lowest priority, ties -> least recently used")
