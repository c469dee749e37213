"""A byte-capacity object store with a pluggable replacement policy (see :mod:`testbed.services.eviction`).

Entries are sized by their body plus header bytes. Putting an entry evicts victims chosen by the policy
until it fits; an entry larger than the whole capacity is refused. The store knows nothing of HTTP: the
edge cache keeps its entries (anything with a ``size`` attribute, or pass ``size``) in it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

from testbed.services.eviction import LRU, EvictionPolicy


class ObjectStore:
    """Maps keys to sized values within ``capacity_bytes``; ``policy`` picks eviction victims."""

    def __init__(self, capacity_bytes: int, policy: EvictionPolicy | None = None) -> None:
        if capacity_bytes <= 0:
            raise ValueError("capacity_bytes must be positive")
        self.capacity_bytes = capacity_bytes
        self.policy: EvictionPolicy = policy if policy is not None else LRU()
        self._items: dict[Hashable, tuple[Any, int]] = {}
        self.used_bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def keys(self) -> Iterator[Hashable]:
        return iter(list(self._items))

    def get(self, key: Hashable) -> Any | None:
        """The value (and tell the policy it was used), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self.policy.access(key)
        return item[0]

    def peek(self, key: Hashable) -> Any | None:
        """The value without counting a use."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: Hashable, value: Any, size: int | None = None) -> list[Hashable]:
        """Store ``value`` (replacing any old one); return the keys evicted to make room.

        An object bigger than the capacity is not stored (and nothing is evicted for it).
        """
        if size is None:
            size = int(value.size)
        if size > self.capacity_bytes:
            self.remove(key)
            return []
        self.remove(key)
        evicted: list[Hashable] = []
        while self.used_bytes + size > self.capacity_bytes:
            victim = self.policy.victim()
            if victim is None or victim not in self._items:
                # a policy that lost track: fall back to insertion order rather than loop forever
                victim = next(iter(self._items))
            self.remove(victim)
            self.evictions += 1
            evicted.append(victim)
        self._items[key] = (value, size)
        self.used_bytes += size
        self.policy.insert(key, size)
        return evicted

    def replace_value(self, key: Hashable, value: Any) -> None:
        """Swap the value of a stored key in place (e.g. headers refreshed by a 304), keeping its size."""
        item = self._items.get(key)
        if item is not None:
            self._items[key] = (value, item[1])

    def remove(self, key: Hashable) -> bool:
        item = self._items.pop(key, None)
        if item is None:
            return False
        self.used_bytes -= item[1]
        self.policy.remove(key)
        return True

    def clear(self) -> None:
        for key in list(self._items):
            self.remove(key)
