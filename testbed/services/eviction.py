"""Cache replacement policies behind one small Protocol, loadable by dotted path.

A store (:class:`testbed.services.store.ObjectStore`) tells its policy about every insert, access and
removal and asks it for a victim when it needs room. Built in: :class:`LRU` (least recently used),
:class:`LFU` (least frequently used, ties broken by least recent use; O(1) frequency buckets as in
Shah, Mitra & Matani, "An O(1) algorithm for implementing the LFU cache eviction scheme", 2010) and
:class:`FIFO` (insertion order). A classroom solution plugs its own class in with
``eviction: "mypkg.mymodule:MyPolicy"`` in the edge config; :func:`load_policy` resolves it.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Protocol, runtime_checkable


@runtime_checkable
class EvictionPolicy(Protocol):
    """What a replacement policy must implement. Keys are opaque and hashable; sizes are bytes."""

    def insert(self, key: Hashable, size: int) -> None:
        """A new key was stored (never called for a key already present)."""

    def access(self, key: Hashable) -> None:
        """A stored key was used (a cache hit)."""

    def remove(self, key: Hashable) -> None:
        """A key left the store (evicted, purged or replaced); unknown keys are ignored."""

    def victim(self) -> Hashable | None:
        """The key to evict next (without removing it), or None when empty."""


class LRU:
    """Least recently used: evict the key whose last insert or access is oldest."""

    def __init__(self) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def insert(self, key: Hashable, size: int) -> None:
        self._order[key] = None

    def access(self, key: Hashable) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    def victim(self) -> Hashable | None:
        return next(iter(self._order), None)


class FIFO(LRU):
    """First in, first out: accesses do not change the eviction order."""

    def access(self, key: Hashable) -> None:
        pass


class LFU:
    """Least frequently used (count of inserts + hits); among equals the least recently used goes first."""

    def __init__(self) -> None:
        self._freq: dict[Hashable, int] = {}
        self._buckets: dict[int, OrderedDict[Hashable, None]] = {}
        self._min = 0

    def _add(self, key: Hashable, f: int) -> None:
        self._freq[key] = f
        self._buckets.setdefault(f, OrderedDict())[key] = None

    def _drop(self, key: Hashable) -> int:
        f = self._freq.pop(key)
        bucket = self._buckets[f]
        del bucket[key]
        if not bucket:
            del self._buckets[f]
        return f

    def insert(self, key: Hashable, size: int) -> None:
        if key in self._freq:
            self._drop(key)
        self._add(key, 1)
        self._min = 1

    def access(self, key: Hashable) -> None:
        if key not in self._freq:
            return
        f = self._drop(key)
        self._add(key, f + 1)
        if self._min == f and f not in self._buckets:
            self._min = f + 1

    def remove(self, key: Hashable) -> None:
        if key in self._freq:
            self._drop(key)
            if self._min not in self._buckets:
                self._min = min(self._buckets, default=0)

    def victim(self) -> Hashable | None:
        if not self._freq:
            return None
        if self._min not in self._buckets:
            self._min = min(self._buckets)
        return next(iter(self._buckets[self._min]))


def load_policy_class(dotted: str) -> type:
    """Resolve ``"package.module:ClassName"`` (``.`` before the class name is accepted too)."""
    if ":" in dotted:
        mod_name, _, attr = dotted.partition(":")
    else:
        mod_name, _, attr = dotted.rpartition(".")
    if not mod_name or not attr:
        raise ValueError(f"{dotted!r} is not a dotted path like 'testbed.services.eviction:LRU'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {mod_name!r}: {e}") from None
    cls = getattr(mod, attr, None)
    if cls is None:
        raise ValueError(f"module {mod_name!r} has no attribute {attr!r}")
    missing = [m for m in ("insert", "access", "remove", "victim") if not callable(getattr(cls, m, None))]
    if missing:
        raise ValueError(f"{dotted} is not an eviction policy (missing {', '.join(missing)})")
    return cls


def load_policy(dotted: str) -> EvictionPolicy:
    """A fresh instance of the policy named by ``dotted``."""
    return load_policy_class(dotted)()
