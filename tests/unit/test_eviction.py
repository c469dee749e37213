"""Replacement policies (LRU, LFU, FIFO), the byte-capacity store, and loading policies by dotted path."""

from __future__ import annotations

import pytest

from testbed.services.eviction import FIFO, LFU, LRU, load_policy
from testbed.services.store import ObjectStore


def fill(policy, accesses):
    """Capacity 3 objects of 10 bytes; insert a, b, c, run the accesses, insert d; return the victim."""
    s = ObjectStore(30, policy)
    for k in "abc":
        s.put(k, k, 10)
    for k in accesses:
        assert s.get(k) == k
    evicted = s.put("d", "d", 10)
    assert s.used_bytes == 30 and len(s) == 3
    return evicted


def test_lru_evicts_least_recently_used():
    assert fill(LRU(), "ab") == ["c"]
    assert fill(LRU(), "") == ["a"]


def test_fifo_ignores_accesses():
    assert fill(FIFO(), "aabbc") == ["a"]


def test_lfu_evicts_least_frequently_used_ties_by_recency():
    assert fill(LFU(), "aabbc") == ["c"]  # a:3 b:3 c:2
    assert fill(LFU(), "bca") == ["b"]  # all at 2: the least recently used of them


def test_lfu_new_entry_is_evicted_before_popular_ones():
    s = ObjectStore(30, LFU())
    for k in "abc":
        s.put(k, k, 10)
        s.get(k)
    s.put("d", "d", 10)  # evicts a (all at 2, a least recent)
    assert s.put("e", "e", 10) == ["d"]  # d has frequency 1


def test_store_capacity_and_oversize_objects():
    s = ObjectStore(100, LRU())
    assert s.put("big", b"x", 101) == [] and "big" not in s
    s.put("a", 1, 60)
    assert s.put("b", 2, 60) == ["a"]
    assert s.used_bytes == 60
    s.put("b", 3, 10)  # replacing adjusts the byte count
    assert s.used_bytes == 10 and s.peek("b") == 3
    assert s.remove("b") and not s.remove("b") and s.used_bytes == 0


class MRU:
    """A classroom-style custom policy: evict the most recently used."""

    def __init__(self):
        self.order = []

    def insert(self, key, size):
        self.order.append(key)

    def access(self, key):
        self.order.remove(key)
        self.order.append(key)

    def remove(self, key):
        if key in self.order:
            self.order.remove(key)

    def victim(self):
        return self.order[-1] if self.order else None


def test_load_policy_by_dotted_path_including_custom():
    assert isinstance(load_policy("testbed.services.eviction:LRU"), LRU)
    assert isinstance(load_policy("testbed.services.eviction.LFU"), LFU)
    mru = load_policy(f"{__name__}:MRU")
    assert fill(mru, "a") == ["a"]


@pytest.mark.parametrize("bad", ["nope", "testbed.services.eviction:Nope", "no.such.module:X", "json:dumps"])
def test_load_policy_errors(bad):
    with pytest.raises(ValueError):
        load_policy(bad)
