"""Grader of lab server-selection: the student's redirector policy, on network maps and in the CDN.

Direct stage: the student's ``Selector`` gets the redirector's mapping spec of a topology (network map per
client prefix, computed by the testbed from the topology's link delays) and must send every client to an
edge at the lowest RTT (ground truth: the topology's lowest-delay paths), never to a down edge, rank
``count`` edges by RTT and keep ``source_key`` consistent. Network stage: the redirector of ``globe`` runs
the student's policy (sandbox inside the redirector); every client follows its redirect, and the share
sent to a nearest edge is compared with IP anycast's share in the same network; then an edge dies.
"""

from __future__ import annotations

import ipaddress
import random
import re
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from testbed.grade import Check, Fail
from testbed.services.mapping import Decision, MappingSpec, MapRequest, StaticEdgeState

TITLE = (
    "Server selection: design the redirector's choice from the network map, beat anycast, survive failures"
)
MODULE = "selector"
CLASS = "Selector"
#: the testbed's own nearest-edge policies: a submission may not re-export them (contract.import_guard)
REFERENCE = tuple(
    f"testbed.services.mapping:{n}" for n in ("NetworkMap", "LatencyMap", "LoadAware", "EcsAware")
)
PRELOAD = ("testbed.services.mapping",)
SLIDES = 'lecture slides 11-12 "Server Selection" ("closest replica", "any alive node") and "Trade-offs"'
POLICY = "testbed.services.mapping:GeoByResolver"  # any importable policy: the spec is what matters


FakeState = StaticEdgeState  # the named edges are down


def _case(topo: Any) -> tuple[MappingSpec, dict[str, str], dict[str, dict[str, float]]]:
    """(the redirector's mapping spec, client -> address, client -> edge -> RTT) of ``topo``, offline."""
    import shutil

    from testbed.net.build import BuildOptions, CdnNet
    from testbed.net.launch import CdnOptions, CdnServices
    from testbed.net.spec import load_topology

    if isinstance(topo, str):
        topo = load_topology(topo)
    run = Path(tempfile.mkdtemp(prefix="cdnlab-grade-plan-"))
    try:
        cn = CdnNet(topo, BuildOptions(run_dir=run))
        svc = CdnServices(cn, CdnOptions())
        spec = MappingSpec.model_validate(svc.mapping(POLICY, "redirector"))
        clients = [h.name for h in topo.hosts_with("client")]
        rows = svc.rtt_rows()
        return spec, {c: cn.ip(c) for c in clients}, {c: rows[c] for c in clients}
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _new(mod: ModuleType, spec: MappingSpec) -> Any:
    cls = getattr(mod, CLASS, None)
    if not isinstance(cls, type):
        raise Fail(f"your module has no class {CLASS}")
    return cls(spec)


def _names(d: Any, label: str, count: int) -> list[str]:
    if not isinstance(d, Decision):
        raise Fail(f"[{label}] choose() must return a Decision, got {type(d).__name__}")
    names = [e.name for e in d.edges]
    if len(names) > count or len(set(names)) != len(names):
        raise Fail(f"[{label}] choose(count={count}) returned {names}: at most {count} distinct edges")
    return names


def _nearest(mod: ModuleType, topo: Any, label: str) -> str:
    spec, addr, rows = _case(topo)
    pol = _new(mod, spec)
    wrong = []
    for c, ip in addr.items():
        got = _names(
            pol.choose(MapRequest("/img/img0001.jpg", ipaddress.ip_address(ip)), FakeState(), 1), label, 1
        )
        best = min(rows[c].values())
        if not got or rows[c][got[0]] > best + 1e-6:
            wrong.append(
                f"{c} -> {got[0] if got else 'nothing'} ({rows[c].get(got[0], 'n/a') if got else '-'} ms, best {best} ms)"
            )
    if wrong:
        raise Fail(
            f"[{label}] not sent to a nearest edge: {'; '.join(wrong[:4])}"
            + (" ..." if len(wrong) > 4 else "")
        )
    return f"{label}: all {len(addr)} clients at a lowest-RTT edge"


def check_interface(mod: ModuleType) -> str:
    spec, addr, _ = _case("mini")
    pol = _new(mod, spec)
    ip = ipaddress.ip_address(next(iter(addr.values())))
    names = _names(pol.choose(MapRequest("/x", ip), FakeState(), 2), "mini", 2)
    if len(names) != 2:
        raise Fail(f"mini has two live edges: choose(count=2) must return both, got {names}")
    if _names(pol.choose(MapRequest("/x", ip), FakeState({"e1", "e2"}), 1), "mini", 1):
        raise Fail("every edge down: choose() must return no edge (the redirector then answers 503)")
    return "Selector(spec).choose(req, state, count) -> Decision"


def check_nearest_globe(mod: ModuleType) -> str:
    return _nearest(mod, "globe", "globe")


def check_failures(mod: ModuleType) -> str:
    spec, addr, rows = _case("globe")
    pol = _new(mod, spec)
    for c, ip in addr.items():
        ranked = sorted(rows[c], key=lambda e: rows[c][e])
        down = {ranked[0]}
        got = _names(pol.choose(MapRequest("/a", ipaddress.ip_address(ip)), FakeState(down), 1), "globe", 1)
        alive_best = min(v for e, v in rows[c].items() if e not in down)
        if not got or got[0] in down or rows[c][got[0]] > alive_best + 1e-6:
            raise Fail(
                f"[globe] {c}'s nearest edge {ranked[0]} is down: expected a nearest live edge "
                f"({alive_best} ms), got {got}"
            )
    return f"{len(addr)} clients: the nearest live edge when their nearest is down"


def check_ranking(mod: ModuleType) -> str:
    spec, addr, rows = _case("globe")
    pol = _new(mod, spec)
    for c, ip in addr.items():
        got = _names(pol.choose(MapRequest("/r", ipaddress.ip_address(ip)), FakeState(), 3), "globe", 3)
        rtts = [rows[c][e] for e in got]
        if len(got) != min(3, len(rows[c])) or rtts != sorted(rtts):
            raise Fail(
                f"[globe] {c}: choose(count=3) expected three edges by increasing RTT, got {got} ({rtts} ms)"
            )
    return "count=3: three edges, best first"


def check_source_key(mod: ModuleType) -> str:
    spec, addr, _ = _case("globe")
    pol = _new(mod, spec)
    rng = random.Random(3)
    seen: dict[Any, tuple[list[str], str]] = {}
    nets = [ipaddress.ip_network(f"{a}/24", strict=False) for a in addr.values()]
    for _ in range(300):
        net = rng.choice(nets)
        ip = net.network_address + rng.randrange(1, net.num_addresses - 1)
        req = MapRequest("/k", ip)
        key = pol.source_key(req)
        names = _names(pol.choose(req, FakeState(), 1), "globe", 1)
        if key in seen and seen[key][0] != names:
            raise Fail(
                f"source_key {key!r} was also the key of {seen[key][1]} answered {seen[key][0]}, but {ip} is "
                f"answered {names}: equal keys must give equal answers"
            )
        seen.setdefault(key, (names, str(ip)))
    return f"{len(seen)} distinct keys, each with one answer"


#: not in the handout: a ring where the nearest edge by hops is not the nearest by delay
HIDDEN_TOPOLOGY = {
    "name": "selring",
    "description": "grader's hidden ring: hop count and delay disagree",
    "subnet": "10.68.0.0/16",
    "regions": [{"name": "a"}, {"name": "b"}],
    "switches": [{"name": f"sr{i}", "region": "a" if i < 3 else "b"} for i in (1, 2, 3, 4)],
    "links": [
        {"a": "sr1", "b": "sr2", "delay_ms": 20},
        {"a": "sr2", "b": "sr3", "delay_ms": 2},
        {"a": "sr3", "b": "sr4", "delay_ms": 2},
        {"a": "sr4", "b": "sr1", "delay_ms": 3},
    ],
    "hosts": [
        {"name": "origin", "role": "origin", "region": "a", "switch": "sr1", "link": {"delay_ms": 1}},
        {"name": "ea", "role": "edge", "region": "a", "switch": "sr2", "link": {"delay_ms": 1}},
        {"name": "eb", "role": "edge", "region": "b", "switch": "sr4", "link": {"delay_ms": 1}},
        {"name": "ec", "role": "edge", "region": "b", "switch": "sr3", "link": {"delay_ms": 1}},
        {"name": "ca", "role": "client", "region": "a", "switch": "sr1", "link": {"delay_ms": 1}},
        {"name": "cb", "role": "client", "region": "a", "switch": "sr2", "link": {"delay_ms": 1}},
        {"name": "cc", "role": "client", "region": "b", "switch": "sr3", "link": {"delay_ms": 1}},
        {"name": "redir", "role": "redirector", "region": "a", "switch": "sr1", "link": {"delay_ms": 1}},
    ],
    "anycast": [{"name": "http", "vip": "10.68.0.200", "port": 80, "members": ["ea", "eb", "ec"]}],
}


def _hidden_topology() -> Any:
    from testbed.net.spec import parse_topology

    return parse_topology(HIDDEN_TOPOLOGY, "the grader's hidden topology")


def check_hidden_topologies(mod: ModuleType) -> str:
    return "; ".join(
        _nearest(mod, t, label)
        for t, label in ((_hidden_topology(), "hidden ring"), ("catchment", "catchment"))
    )


# ---------------------------------------------------------------------------------------------------------
# network stage: the student's policy in the real redirector; clients follow its redirects


def _network(mod: ModuleType, topo: Any, label: str) -> str:
    from testbed.grade_network import lab_network, served_by, submission_of
    from testbed.net.launch import CdnOptions
    from testbed.util import DeadlineExceeded, wait_until

    sub = submission_of(mod, REFERENCE, preload=PRELOAD)
    opts = CdnOptions(
        roles=("origin", "edge", "redirector"),
        redirect_policy=f"{mod.__name__}:{CLASS}",
        submissions={"redirector": sub.model_dump(mode="json")},
    )
    with lab_network(topo, opts) as (cn, svc):
        rows = svc.rtt_rows()
        edges_by_ip = {cn.ip(e.name): e.name for e in cn.topo.hosts_with("edge")}
        redir = cn.ip(cn.topo.hosts_with("redirector")[0].name)
        clients = [h.name for h in cn.topo.hosts_with("client")]
        path = "/img/img0001.jpg"

        def redirected(c: str) -> str | None:
            out = cn.host(c).cmd(f"curl -s -m 3 -o /dev/null -w '%{{redirect_url}}' http://{redir}{path}")
            m = re.search(r"http://([\d.]+)", out)
            return edges_by_ip.get(m.group(1)) if m else None

        def nearest(c: str, down: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
            alive = {e: v for e, v in rows[c].items() if e not in down}
            best = min(alive.values())
            return {e for e, v in alive.items() if v <= best + 1e-6}

        mine = {c: redirected(c) for c in clients}
        ok = [c for c in clients if mine[c] in nearest(c)]
        vip = cn.topo.anycast[0].vip if cn.topo.anycast else None
        any_ok = [c for c in clients if vip and served_by(cn, c, f"http://{vip}{path}") in nearest(c)]
        line = f"{label}: your redirector sent {len(ok)}/{len(clients)} clients to a nearest edge" + (
            f", IP anycast {len(any_ok)}/{len(clients)}" if vip else ""
        )
        if len(ok) < len(clients) or len(ok) < len(any_ok):
            wrong = {c: mine[c] for c in clients if c not in ok}
            raise Fail(f"{line}; off the nearest: {wrong}")
        c0 = clients[0]
        victim = mine[c0]
        assert victim is not None
        svc.fail(victim)
        try:
            wait_until(
                lambda: redirected(c0) in nearest(c0, {victim}),
                10,
                0.3,
                what="redirect away from a dead edge",
            )
        except DeadlineExceeded:
            raise Fail(
                f"{line}; {victim} was killed but {c0} is still redirected to {redirected(c0)}"
            ) from None
        finally:
            svc.recover(victim)
    return f"{line}; {c0} moved off the killed {victim}"


def check_network_visible(mod: ModuleType) -> str:
    return _network(mod, "globe", "globe")


def check_network_hidden(mod: ModuleType) -> str:
    return _network(mod, _hidden_topology(), "hidden ring")


def checks() -> list[Check]:
    return [
        Check(
            "interface: Selector(spec).choose(req, state, count)",
            check_interface,
            "testbed/services/mapping.py",
        ),
        Check(
            "globe: every client to a lowest-RTT edge",
            check_nearest_globe,
            f"{SLIDES}; network_map",
            timeout=20,
        ),
        Check("failures: never a down edge, the nearest live one", check_failures, SLIDES, timeout=20),
        Check("count: edges ranked by RTT", check_ranking, "Decision.edges: best first", timeout=20),
        Check(
            "source_key: equal keys, equal answers",
            check_source_key,
            "the redirector caches per key",
            timeout=20,
        ),
        Check(
            "hidden topologies: every client to a lowest-RTT edge",
            check_hidden_topologies,
            "topologies not in the handout",
            timeout=30,
            visibility="after_due_date",
        ),
        Check(
            "network (globe): the real redirector, compared with IP anycast",
            check_network_visible,
            "your Selector runs in the redirector; every client follows its redirect; an edge is killed",
            timeout=600,
            points=2,
            stage="network",
        ),
        Check(
            "network (hidden topology): hop count and delay disagree",
            check_network_hidden,
            "a ring where the fewest hops is not the lowest delay",
            timeout=600,
            points=2,
            visibility="after_due_date",
            stage="network",
        ),
    ]
