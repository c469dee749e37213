"""Lab cache-replacement, reference solution: LFU with Dynamic Aging (LFU-DA).

LFU-DA (Arlitt, Cherkasova, Dilley, Friedrich & Jin, "Evaluating content management techniques for Web
proxy caches", 2000) keeps LFU's strength on Zipf-like popularity (lecture: "Zipf popularity
distribution, 1/k") and fixes its weakness: objects that were popular once never leave a plain LFU cache.

* every stored key has a use count ``c`` (1 on insert, +1 per hit) and a priority ``P = L + c``,
  computed with the cache's *age* ``L`` at the time of that insert or hit;
* the victim is the key with the smallest ``P``; among equal priorities, the least recently used;
* when the victim is removed, ``L`` becomes its priority (so newcomers start at ``L + 1`` and old
  counts are worth less and less). Removing any other key (purge, replace) leaves ``L`` alone.

Plugs into :class:`testbed.services.store.ObjectStore` through the
:class:`testbed.services.eviction.EvictionPolicy` Protocol. O(log n) per operation with a lazy heap.

Instructors: this file is the answer key; strip ``solution/`` directories before handing labs out.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable


class LFUDA:
    """LFU with dynamic aging; ties broken by least recent use."""

    def __init__(self) -> None:
        self.age = 0.0  # L, the cache's inflation value
        self._count: dict[Hashable, int] = {}
        self._prio: dict[Hashable, tuple[float, int]] = {}  # key -> (priority, last-use tick)
        self._heap: list[tuple[float, int, Hashable]] = []
        self._tick = itertools.count()
        self._candidate: tuple[Hashable, float] | None = None

    def _push(self, key: Hashable) -> None:
        p = (self.age + self._count[key], next(self._tick))
        self._prio[key] = p
        heapq.heappush(self._heap, (p[0], p[1], key))
        if len(self._heap) > 4 * len(self._prio) + 64:  # drop stale heap entries now and then
            self._heap = [(pr, t, k) for k, (pr, t) in self._prio.items()]
            heapq.heapify(self._heap)

    def insert(self, key: Hashable, size: int) -> None:
        self._count[key] = 1
        self._push(key)

    def access(self, key: Hashable) -> None:
        if key in self._count:
            self._count[key] += 1
            self._push(key)

    def remove(self, key: Hashable) -> None:
        if key not in self._count:
            return
        if self._candidate is not None and self._candidate[0] == key:
            self.age = self._candidate[1]  # the victim leaves: the cache ages
        self._candidate = None
        del self._count[key]
        del self._prio[key]

    def victim(self) -> Hashable | None:
        while self._heap:
            pr, t, key = self._heap[0]
            if self._prio.get(key) == (pr, t):
                self._candidate = (key, pr)
                return key
            heapq.heappop(self._heap)  # stale: the key was used again or removed
        return None
