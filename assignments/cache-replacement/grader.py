"""Grader of lab cache-replacement: LFU with Dynamic Aging behind testbed/services/eviction.py's Protocol.

The student's ``LFUDA`` is compared step by step with a small, obviously-correct O(n) model of the rules on
crafted and random traces, then run inside the real :class:`testbed.services.store.ObjectStore` (capacity
never exceeded, every victim a stored key) and on a seeded Zipf(0.8) request trace, where its hit ratio
must be at least FIFO's.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from types import ModuleType
from typing import Any

from testbed.grade import Check, Fail
from testbed.services.eviction import FIFO, LRU
from testbed.services.store import ObjectStore

TITLE = "Cache replacement: LFU with dynamic aging (LFU-DA) in the edge's object store"
MODULE = "policy"
CLASS = "LFUDA"
#: no reference in the testbed (LFU-DA is the lab's own); the model below never loads in the sandbox
REFERENCE: tuple[str, ...] = ()
SLIDE = 'lecture slide 13 "Content and Internet Traffic" (Zipf popularity) and slide 7 (working set > disk)'


class RefLFUDA:
    """The rules, written for clarity rather than speed."""

    def __init__(self) -> None:
        self.age = 0.0
        self.count: dict[Hashable, int] = {}
        self.prio: dict[Hashable, float] = {}
        self.last: dict[Hashable, int] = {}
        self.tick = 0
        self.cand: Hashable | None = None

    def _touch(self, key: Hashable) -> None:
        self.prio[key] = self.age + self.count[key]
        self.tick += 1
        self.last[key] = self.tick

    def insert(self, key: Hashable, size: int) -> None:
        self.count[key] = 1
        self._touch(key)

    def access(self, key: Hashable) -> None:
        if key in self.count:
            self.count[key] += 1
            self._touch(key)

    def remove(self, key: Hashable) -> None:
        if key not in self.count:
            return
        if self.cand == key:
            self.age = self.prio[key]
        self.cand = None
        for d in (self.count, self.prio, self.last):
            del d[key]

    def victim(self) -> Hashable | None:
        if not self.count:
            return None
        self.cand = min(self.count, key=lambda k: (self.prio[k], self.last[k]))
        return self.cand


def _new(mod: ModuleType) -> Any:
    cls = getattr(mod, CLASS, None)
    if not isinstance(cls, type):
        raise Fail(f"your module has no class {CLASS}")
    missing = [m for m in ("insert", "access", "remove", "victim") if not callable(getattr(cls, m, None))]
    if missing:
        raise Fail(f"{CLASS} lacks {', '.join(missing)} (see testbed/services/eviction.py EvictionPolicy)")
    return cls()


def _replay(mod: ModuleType, ops: list[tuple], label: str) -> str:
    """Apply ``ops`` to the student's policy and the model; after each op both must name the same victim."""
    stu, ref = _new(mod), RefLFUDA()
    done: list[str] = []
    for op in ops:
        if op[0] == "evict":
            v = ref.victim()
            got = stu.victim()
            if got != v:
                raise Fail(f"[{label}] after {_show(done)}: victim() expected {v!r}, got {got!r}")
            ref.remove(v)
            stu.remove(v)
            done.append(f"evict {v}")
        else:
            name, key = op
            args = (key, 100) if name == "insert" else (key,)
            getattr(ref, name)(*args)
            getattr(stu, name)(*args)
            done.append(f"{name} {key}")
        want, got = ref.victim(), stu.victim()
        if got != want:
            raise Fail(f"[{label}] after {_show(done)}: victim() expected {want!r}, got {got!r}")
    return f"{len(ops)} operations match LFU-DA"


def _show(done: list[str]) -> str:
    return ", ".join(done) if len(done) <= 12 else "..., " + ", ".join(done[-12:])


def check_interface(mod: ModuleType) -> str:
    p = _new(mod)
    if p.victim() is not None:
        raise Fail("victim() of an empty policy: expected None")
    p.insert("a", 10)
    v1, v2 = p.victim(), p.victim()
    if v1 != "a" or v2 != "a":
        raise Fail(
            f"one key 'a' stored: victim() twice expected 'a', 'a' (victim must not remove), got {v1!r}, {v2!r}"
        )
    p.remove("zzz")  # unknown: ignored
    p.remove("a")
    if p.victim() is not None:
        raise Fail("after remove('a') the policy is empty: victim() expected None")
    return "insert/access/remove/victim present; victim() does not remove"


FREQ = [
    ("insert", "a"), ("insert", "b"), ("insert", "c"), ("insert", "d"), ("access", "a"), ("access", "a"),
    ("access", "b"), ("access", "d"), ("access", "d"), ("access", "d"), ("evict",), ("evict",), ("evict",),
]  # fmt: skip
TIES = [
    ("insert", "a"),
    ("insert", "b"),
    ("insert", "c"),
    ("access", "b"),
    ("access", "a"),
    ("access", "c"),
    ("evict",),
    ("insert", "d"),
    ("access", "d"),
    ("evict",),
    ("evict",),
]
AGING = (
    [("insert", "x")]
    + [("access", "x")] * 4
    + [op for i in range(12) for op in (("insert", f"k{i}"), ("access", f"k{i}"), ("evict",))]
)
PURGE = [
    ("insert", "a"),
    ("insert", "b"),
    ("insert", "c"),
    ("access", "c"),
    ("remove", "b"),
    ("remove", "nope"),
    ("evict",),
    ("insert", "d"),
    ("insert", "e"),
    ("access", "e"),
    ("evict",),
    ("evict",),
]


def _random_ops(seed: int, n: int = 400) -> list[tuple]:
    rng = random.Random(seed)
    ops: list[tuple] = []
    model = RefLFUDA()
    for i in range(n):
        r = rng.random()
        keys = list(model.count)
        if not keys or r < 0.3:
            op: tuple = ("insert", f"n{i}")
        elif r < 0.75:
            op = ("access", rng.choice(keys))
        elif r < 0.92:
            op = ("evict",)
        else:
            v = model.victim()
            others = [k for k in keys if k != v]
            op = ("remove", rng.choice(others)) if others else ("evict",)
        if op[0] == "evict":
            model.remove(model.victim())
        elif op[0] == "insert":
            model.insert(op[1], 1)
        elif op[0] == "access":
            model.access(op[1])
        else:
            model.remove(op[1])
        model.victim()
        ops.append(op)
    return ops


def check_random(mod: ModuleType) -> str:
    for seed in (1, 2, 3):
        _replay(mod, _random_ops(seed), f"random trace, seed {seed}")
    return "3 random traces of 400 operations match LFU-DA"


class _Watch:
    """Wraps the student's policy inside the store and records victims that are not stored keys."""

    def __init__(self, inner: Any, store_keys: Any) -> None:
        self.inner, self.store_keys, self.bad = inner, store_keys, []

    def insert(self, key: Hashable, size: int) -> None:
        self.inner.insert(key, size)

    def access(self, key: Hashable) -> None:
        self.inner.access(key)

    def remove(self, key: Hashable) -> None:
        self.inner.remove(key)

    def victim(self) -> Hashable | None:
        v = self.inner.victim()
        if v not in self.store_keys():
            self.bad.append(v)
        return v


def check_store(mod: ModuleType) -> str:
    rng = random.Random(5)
    cap = 50_000
    store = ObjectStore(cap)
    watch = _Watch(_new(mod), lambda: store)
    store.policy = watch  # type: ignore[assignment]
    for i in range(3000):
        key = f"/o/{rng.randrange(300)}"
        if store.get(key) is None:
            store.put(key, object(), rng.randint(100, 9000))
        if i % 97 == 0 and len(store):
            store.remove(next(iter(store.keys())))
        if store.used_bytes > cap:
            raise Fail(f"request {i}: store holds {store.used_bytes} bytes > capacity {cap}")
        if watch.bad:
            raise Fail(
                f"request {i}: victim() returned {watch.bad[0]!r}, which is not stored (remove() "
                "must forget keys; victim() must pick among stored keys)"
            )
    return f"3000 requests, {store.evictions} evictions, capacity held, every victim stored"


def zipf_trace(seed: int = 42, objects: int = 2000, requests: int = 20_000, s: float = 0.8) -> list[int]:
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) ** s for k in range(objects)]
    return rng.choices(range(objects), weights=weights, k=requests)


def hit_ratio(policy: Any, trace: list[int], cache_objects: int = 200, size: int = 1000) -> float:
    store = ObjectStore(cache_objects * size, policy)
    hits = 0
    for k in trace:
        if store.get(k) is not None:
            hits += 1
        else:
            store.put(k, True, size)
    return hits / len(trace)


def check_zipf(mod: ModuleType) -> str:
    trace = zipf_trace()
    fifo, lru = hit_ratio(FIFO(), trace), hit_ratio(LRU(), trace)
    mine = hit_ratio(_new(mod), trace)
    line = f"Zipf(0.8), 2000 objects, cache 200: LFUDA {mine:.3f}, LRU {lru:.3f}, FIFO {fifo:.3f}"
    if mine < fifo:
        raise Fail(f"hit ratio below FIFO's: {line}")
    return line


# ---------------------------------------------------------------------------------------------------------
# network stage: the student's LFUDA as the eviction policy of real edges; a client replays a trace

DRIVER = r"""
import sys, urllib.request
base, paths = sys.argv[1], open(sys.argv[2]).read().split()
hits = errors = 0
for p in paths:
    try:
        with urllib.request.urlopen(base + p, timeout=5) as r:
            r.read()
            hits += r.headers.get("X-Cache", "").upper() == "HIT"
    except Exception:
        errors += 1
print(f"hits={hits} errors={errors}")
"""


def _network_hits(mod: ModuleType | None, trace_of: Any, capacity: int) -> tuple[int, int]:
    """Hits of the trace replayed from c1 through e1 of ``mini`` (the student's policy, or FIFO for None)."""
    import json
    import re
    import sys
    from pathlib import Path

    from testbed.grade_network import lab_network, submission_of
    from testbed.net.launch import CdnOptions

    if mod is None:
        opts = CdnOptions(roles=("origin", "edge"), eviction="testbed.services.eviction:FIFO")
    else:
        sub = submission_of(mod, REFERENCE, preload=("testbed.services.eviction",))
        opts = CdnOptions(
            roles=("origin", "edge"),
            eviction=f"{mod.__name__}:{CLASS}",
            submissions={"edge": sub.model_dump(mode="json")},
        )
    opts.edge_capacity_bytes = capacity
    with lab_network("mini", opts) as (cn, _svc):
        out = cn.host("c1").cmd(f"curl -s -m 5 http://{cn.ip('origin')}/_origin/catalog")
        cat = json.loads(out[out.index("{") :])
        small = [
            o["path"] for o in cat["objects"] if o["class"] in ("image", "js", "css") and o["size"] <= 40_000
        ]
        trace = trace_of(small)
        trace_file = Path(cn.run_dir) / "trace.txt"
        trace_file.write_text("\n".join(trace) + "\n")
        out = cn.host("c1").cmd(f"{sys.executable} -c '{DRIVER}' http://{cn.ip('e1')} {trace_file}")
        m = re.search(r"hits=(\d+) errors=(\d+)", out)
        if not m:
            raise Fail(f"the trace driver in c1 printed no result: {out.strip()[-300:]}")
        return int(m.group(1)), int(m.group(2))


def _zipf_paths(paths: list[str]) -> list[str]:
    rng = random.Random(5)
    objs = paths[:60]
    weights = [1 / (i + 1) ** 0.8 for i in range(len(objs))]
    return rng.choices(objs, weights, k=400)


def _scan_paths(paths: list[str]) -> list[str]:
    """A hot set of 8 objects asked again and again, interrupted by one-time scans of cold objects."""
    rng = random.Random(9)
    hot, cold = paths[:8], paths[8:]
    out: list[str] = []
    for i in range(300):
        out.append(rng.choice(hot))
        if i % 3 == 0:
            out.append(cold[(i // 3) % len(cold)])
    return out


def _network_compare(mod: ModuleType, trace_of: Any, label: str, strict: bool) -> str:
    capacity = 250_000
    fifo, fifo_err = _network_hits(None, trace_of, capacity)
    mine, err = _network_hits(mod, trace_of, capacity)
    if fifo_err or err:
        raise Fail(
            f"[{label}] requests failed through the edge: {err} with your policy, {fifo_err} with FIFO"
        )
    line = f"{label}: hits through e1 with your LFUDA {mine}, with FIFO {fifo} (edge capacity {capacity} B)"
    if mine < fifo or (strict and mine <= fifo):
        raise Fail(f"{'not above' if strict else 'below'} FIFO: {line}")
    return line


def check_network_zipf(mod: ModuleType) -> str:
    return _network_compare(mod, _zipf_paths, "mini, Zipf(0.8) over 60 objects", strict=False)


def check_network_scan(mod: ModuleType) -> str:
    return _network_compare(mod, _scan_paths, "hidden workload: a hot set and one-time scans", strict=True)


def checks() -> list[Check]:
    rules = "lab README (LFU-DA rules); Arlitt et al. 2000; testbed/services/eviction.py (Protocol)"
    return [
        Check("interface: the EvictionPolicy Protocol", check_interface, "testbed/services/eviction.py"),
        Check(
            "frequency: least used goes first",
            lambda m: _replay(m, FREQ, "frequency"),
            f"{SLIDE}; LFU keeps the popular head of a Zipf distribution",
        ),
        Check("ties: least recently used goes first", lambda m: _replay(m, TIES, "ties"), rules),
        Check(
            "aging: yesterday's hit leaves eventually",
            lambda m: _replay(m, AGING, "aging"),
            "L := priority of each evicted victim; newcomers get L + 1 (plain LFU would keep x forever)",
        ),
        Check("remove: purges forget keys, do not age", lambda m: _replay(m, PURGE, "purge"), rules),
        Check("random traces agree with LFU-DA", check_random, rules, timeout=10),
        Check(
            "store: capacity never exceeded, victims stored",
            check_store,
            "testbed/services/store.py calls victim() then remove(victim) until the new object fits",
        ),
        Check("Zipf(0.8): hit ratio at least FIFO's", check_zipf, f"{SLIDE}", timeout=20),
        Check(
            "network (mini): your LFUDA in a real edge, at least FIFO's hits",
            check_network_zipf,
            "the edge's ObjectStore calls your policy for every request a client in the network sends",
            timeout=600,
            points=2,
            stage="network",
        ),
        Check(
            "network (hidden workload): a hot set survives scans",
            check_network_scan,
            "LFU-DA keeps frequently used objects through a scan of one-time objects; FIFO does not",
            timeout=600,
            points=2,
            visibility="after_due_date",
            stage="network",
        ),
    ]
