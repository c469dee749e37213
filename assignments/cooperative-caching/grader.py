"""Grader of lab cooperative-caching: the home of an object inside an edge cluster.

Direct stage: the student's ``home``/``rank`` must name a member, agree whatever the members' order, spread
keys evenly and move only a leaving member's keys (rendezvous or consistent hashing). Network stage: a
cluster of edges on one switch, each edge running the student's functions in a sandbox (they replace
``testbed.services.hashing``'s); every client fetches the same objects through its own edge. If the edges
agree on each object's home (a hash that is the same in every process), the origin serves each object
once and the rest are cluster hits: the origin offload is measured.
"""

from __future__ import annotations

import random
from collections import Counter
from types import ModuleType
from typing import Any

from testbed.grade import Check, Fail

TITLE = "Cooperative caching: the home of an object in an edge cluster (rendezvous hashing)"
MODULE = "cluster_hash"
#: the testbed's own hashing: a submission may not re-export it (contract.import_guard)
REFERENCE = tuple(f"testbed.services.hashing:{n}" for n in ("home", "rank", "score"))
PRELOAD = ("testbed.services.hashing",)
SLIDES = 'lecture slide 20 ("check other servers in local cluster"), slide 7 (cache cooperation)'
PATCH = {"testbed.services.hashing:home": "home", "testbed.services.hashing:rank": "rank"}


def _fns(mod: ModuleType) -> tuple[Any, Any]:
    h, r = getattr(mod, "home", None), getattr(mod, "rank", None)
    if not callable(h) or not callable(r):
        raise Fail("your module needs functions home(key, members) and rank(key, members)")
    return h, r


def _keys(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"/img/img{rng.randrange(10**6):06d}.jpg" for _ in range(n)]


def check_interface(mod: ModuleType) -> str:
    home, rank = _fns(mod)
    members = ["e1", "e2", "e3"]
    for k in _keys(50, 1):
        h, r = home(k, members), rank(k, members)
        if h not in members:
            raise Fail(f"home({k!r}, {members}) returned {h!r}: expected one of the members")
        if sorted(r) != sorted(members) or r[0] != h:
            raise Fail(
                f"rank({k!r}, {members}) returned {r!r}: expected every member once, home first ({h!r})"
            )
    if home("/x", []) is not None:
        raise Fail("home(key, []) must be None (no members)")
    return "home is a member, rank a permutation starting with it, None without members"


def check_order(mod: ModuleType) -> str:
    home, _ = _fns(mod)
    members = ["e_a", "e_b", "e_c", "e_d", "e_e"]
    rng = random.Random(2)
    for k in _keys(400, 2):
        shuffled = members[:]
        rng.shuffle(shuffled)
        if home(k, shuffled) != home(k, members):
            raise Fail(
                f"home({k!r}) is {home(k, members)!r} for members {members} but {home(k, shuffled)!r} for "
                f"{shuffled}: every edge lists the cluster in its own order, and they must agree"
            )
    return "400 keys: the same home whatever the members' order"


def _balance(mod: ModuleType, members: list[str], n: int, tolerance: float, label: str) -> str:
    home, _ = _fns(mod)
    counts = Counter(home(k, members) for k in _keys(n, 3))
    fair = n / len(members)
    worst = max(abs(counts.get(m, 0) - fair) / fair for m in members)
    if worst > tolerance:
        raise Fail(
            f"[{label}] {n} keys over {len(members)} members: {dict(sorted(counts.items()))}; a member is "
            f"{worst:.0%} off its fair share {fair:.0f} (allowed {tolerance:.0%})"
        )
    return f"{label}: {n} keys, every member within {worst:.0%} of its share"


def check_balance(mod: ModuleType) -> str:
    return _balance(mod, ["e1", "e2", "e3", "e4", "e5"], 10_000, 0.15, "5 members")


def _disruption(mod: ModuleType, members: list[str], gone: str, label: str) -> str:
    home, _ = _fns(mod)
    rest = [m for m in members if m != gone]
    keys = _keys(4000, 4)
    moved = [k for k in keys if home(k, members) != gone and home(k, rest) != home(k, members)]
    if moved:
        k = moved[0]
        raise Fail(
            f"[{label}] {gone} left the cluster, and {len(moved)} keys that were not on it moved too, e.g. "
            f"{k!r}: {home(k, members)!r} -> {home(k, rest)!r} (their caches go cold for nothing)"
        )
    orphans = Counter(home(k, rest) for k in keys if home(k, members) == gone)
    if len(orphans) < min(2, len(rest)):
        raise Fail(f"[{label}] all of {gone}'s keys went to one member {dict(orphans)}: spread them")
    return f"{label}: only {gone}'s {sum(orphans.values())} keys moved, spread over {len(orphans)} members"


def check_disruption(mod: ModuleType) -> str:
    return _disruption(mod, ["e1", "e2", "e3", "e4"], "e2", "4 members, e2 leaves")


def check_hidden(mod: ModuleType) -> str:
    big = [f"edge-{i:02d}" for i in range(1, 18)]
    return "; ".join(
        [
            _balance(mod, big, 34_000, 0.2, "17 similar names"),
            _disruption(mod, big, "edge-07", "17 members, edge-07 leaves"),
        ]
    )


# ---------------------------------------------------------------------------------------------------------
# network stage: a cluster of edges, each with the student's home(); clients fetch through their own edge


def _cluster_topology(n: int, name: str, subnet: str) -> dict[str, Any]:
    hosts: list[dict[str, Any]] = [
        {"name": "origin", "role": "origin", "region": "c", "switch": "cs1", "link": {"delay_ms": 10}}
    ]
    for i in range(1, n + 1):
        hosts.append(
            {"name": f"ce{i}", "role": "edge", "region": "c", "switch": "cs1", "link": {"delay_ms": 1}}
        )
        hosts.append(
            {"name": f"cc{i}", "role": "client", "region": "c", "switch": "cs1", "link": {"delay_ms": 1}}
        )
    return {
        "name": name,
        "description": f"a cluster of {n} edges on one switch, one client each",
        "subnet": subnet,
        "regions": [{"name": "c"}],
        "switches": [{"name": "cs1", "region": "c"}],
        "links": [],
        "hosts": hosts,
    }


def _network(mod: ModuleType, n: int, objects: int, label: str, subnet: str) -> str:
    import json

    from testbed.grade_network import lab_network, submission_of
    from testbed.net.launch import CdnOptions
    from testbed.net.spec import parse_topology

    topo = parse_topology(_cluster_topology(n, f"cluster{n}", subnet), "the grader's cluster topology")
    sub = submission_of(mod, REFERENCE, PATCH, preload=PRELOAD)
    opts = CdnOptions(
        roles=("origin", "edge"), cooperation="cluster", submissions={"edge": sub.model_dump(mode="json")}
    )
    with lab_network(topo, opts) as (cn, svc):
        out = cn.host("cc1").cmd(f"curl -s -m 5 http://{cn.ip('origin')}/_origin/catalog")
        cat = json.loads(out[out.index("{") :])
        paths = [o["path"] for o in cat["objects"] if o["class"] in ("image", "js", "css")][:objects]
        codes: Counter[str] = Counter()
        for i in range(1, n + 1):  # every client asks its own edge for every object
            script = " ".join(
                f"curl -s -m 5 -o /dev/null -w '%{{http_code}}\\n' http://{cn.ip(f'ce{i}')}{p};"
                for p in paths
            )
            codes.update(cn.host(f"cc{i}").cmd(script).split())
        stats = svc.service_stats("origin")
        fetched = sum(stats["by_path"].get(p, 0) for p in paths)
    line = (
        f"{label}: {n} edges x {len(paths)} objects = {n * len(paths)} requests, the origin served {fetched} "
        f"(offload {1 - fetched / (n * len(paths)):.0%}; ideal: each object once, {len(paths)})"
    )
    if codes.get("200", 0) != n * len(paths):
        raise Fail(f"not every request got 200: {dict(codes)}; {line}")
    if fetched > len(paths):
        raise Fail(
            f"the edges disagreed on homes, so objects were fetched from the origin more than once: {line} "
            "(is your hash the same in every process? Python's hash() of a str is not)"
        )
    return line


def check_network_visible(mod: ModuleType) -> str:
    return _network(mod, 3, 30, "3 edges", "10.69.0.0/24")


def check_network_hidden(mod: ModuleType) -> str:
    return _network(mod, 5, 40, "hidden: 5 edges", "10.70.0.0/24")


def checks() -> list[Check]:
    return [
        Check(
            "interface: home(key, members), rank(key, members)", check_interface, "testbed/services/edge/cooperation.py"
        ),
        Check("every member order gives the same home", check_order, SLIDES),
        Check("balance: each member near its fair share", check_balance, "a good hash spreads keys evenly"),
        Check(
            "a member leaves: only its keys move",
            check_disruption,
            "Thaler & Ravishankar 1998 (rendezvous hashing); Karger et al. 1997 (consistent hashing)",
        ),
        Check(
            "hidden: 17 members with similar names",
            check_hidden,
            "names that differ in one character must not share a home",
            timeout=20,
            visibility="after_due_date",
        ),
        Check(
            "network (3 edges): one origin fetch per object across the cluster",
            check_network_visible,
            "your home() runs in every edge; an edge that misses asks the home, which asks the origin once",
            timeout=600,
            points=2,
            stage="network",
        ),
        Check(
            "network (hidden: 5 edges): one origin fetch per object",
            check_network_hidden,
            "more members, more objects",
            timeout=600,
            points=2,
            visibility="after_due_date",
            stage="network",
        ),
    ]
