"""Grader of lab multicast-tree: the student's ``build_tree`` drives the controller's multicast on a fake network.

Direct checks compare the Tree for small cases with known answers and check, on random networks, that each
member hangs off the tree by a shortest path (the in_port chain back to the source adds up to the
shortest-path delay). Network checks put the student's function in place of
``controller.multicast.build_tree`` (used by ``all_trees``), connect a ``ControllerCore`` to a ``FakeNet``
and send from each group's source: every member must receive exactly one copy, non-members none, no loops,
also after links fail (tree repair) and come back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import networkx as nx

import controller.multicast as mc
from contract.netview import NetView
from controller import packets as pk
from controller.core import ControllerCore
from controller.examples import random_view, triangle
from controller.graph import SwitchGraph
from controller.multicast import build_tree as ref_build_tree
from controller.routing import compute_routes
from controller.simulate import FakeNet, connect_all, port_event
from testbed.grade import Check, Fail
from testbed.measure.host_programs import MCAST_RECEIVER, MCAST_SENDER

TITLE = "IP multicast: per-(source, group) shortest-path trees as per-switch ports, and repair"
MODULE = "mcast_tree"
#: the reference implementation a submission may not import (contract.import_guard)
REFERENCE = ("controller.multicast:build_tree",)
SLIDE = 'lecture slide 9 "Content Distribution Networks" (content replication to many CDN servers)'
GROUP = "239.1.1.1"


def _fn(mod: ModuleType) -> Callable[..., Any]:
    f = getattr(mod, "build_tree", None)
    if not callable(f):
        raise Fail("your module has no function build_tree(view, routes, source, group, members)")
    return f


def _shape(t: Any) -> dict[str, Any]:
    return {
        "members": sorted(t.members),
        "unreachable": sorted(t.unreachable),
        "in_port": dict(sorted(t.in_port.items())),
        "out_ports": {s: sorted(p) for s, p in sorted(t.out_ports.items())},
    }


def _call(mod: ModuleType, v: NetView, routes: Any, source: str, members: set[str]) -> Any:
    t = _fn(mod)(v, routes, source, GROUP, set(members))
    if not isinstance(t, mc.Tree):
        raise Fail(f"build_tree must return a controller.multicast.Tree, got {type(t).__name__}")
    return t


def _same(mod: ModuleType, v: NetView, routes: Any, source: str, members: set[str], label: str) -> None:
    want = _shape(ref_build_tree(v, routes, source, GROUP, set(members)))
    got = _shape(_call(mod, v, routes, source, members))
    if got != want:
        diff = {k: {"expected": want[k], "got": got[k]} for k in want if want[k] != got[k]}
        raise Fail(f"[{label}] source {source}, members {sorted(members)}: {diff}")


def check_triangle(mod: ModuleType) -> str:
    v = triangle()
    routes = compute_routes(SwitchGraph(v).graph())
    _same(mod, v, routes, "hch1", {"hch3"}, "triangle: hc1->hc3 via hc2 (10 ms) beats the direct 12 ms link")
    _same(mod, v, routes, "hch1", {"hch2", "hch3", "hch4"}, "triangle, three members")
    return "in_port and out_ports per switch as expected"


def check_edge_cases(mod: ModuleType) -> str:
    v = triangle()
    routes = compute_routes(SwitchGraph(v).graph())
    _same(mod, v, routes, "hch1", {"hch1", "hch3"}, "the source is never its own member")
    _same(mod, v, routes, "hch1", set(), "no members: an empty tree (no in_port, no out_ports)")
    _same(mod, v, routes, "hch1", {"hch4"}, "member on the source's own switch")
    return "source excluded, empty tree, local member"


def check_unreachable(mod: ModuleType) -> str:
    v = triangle()
    sg = SwitchGraph(v)
    sg.set_link_state("hc1", 1, False)  # hc1-hc2
    sg.set_link_state("hc2", 2, False)  # hc2-hc3: hc2 cut off
    routes = compute_routes(sg.graph())
    _same(mod, v, routes, "hch1", {"hch2", "hch3"}, "hc2 cut off: hch2 unreachable, hch3 via the direct link")
    return "unreachable members listed, not routed"


def _link_delay(v: NetView) -> dict[tuple[str, int], tuple[str, float]]:
    out: dict[tuple[str, int], tuple[str, float]] = {}
    for link in v.links:
        out[(link.a, link.a_port)] = (link.b, link.delay_ms)
        out[(link.b, link.b_port)] = (link.a, link.delay_ms)
    return out


def check_shortest(mod: ModuleType) -> str:
    rng = random.Random(4607)
    n = 0
    for seed in range(5):
        v = random_view(seed)
        routes = compute_routes(SwitchGraph(v).graph())
        peer = _link_delay(v)
        names = [h.name for h in v.hosts]
        for _ in range(3):
            src = rng.choice(names)
            members = set(rng.sample(names, 5)) - {src}
            t = _call(mod, v, routes, src, members)
            root = v.host(src).switch
            for m in sorted(members):
                sw, total, hops = v.host(m).switch, 0.0, 0
                if v.host(m).port not in t.out_ports.get(sw, set()):
                    raise Fail(
                        f"random view {seed}, source {src}: member {m}'s host port {v.host(m).port} is not "
                        f"in out_ports[{sw}] = {sorted(t.out_ports.get(sw, set()))}"
                    )
                while sw != root:
                    if sw not in t.in_port or (sw, t.in_port[sw]) not in peer:
                        raise Fail(
                            f"random view {seed}, source {src}: switch {sw} (towards member {m}) has "
                            f"in_port {t.in_port.get(sw)}, which is not a link towards the source"
                        )
                    up, d = peer[(sw, t.in_port[sw])]
                    total, sw, hops = total + d, up, hops + 1
                    if hops > len(v.switches):
                        raise Fail(f"random view {seed}: in_port chain from member {m} loops")
                if abs(total - routes.dist[root][v.host(m).switch]) > 1e-9:
                    raise Fail(
                        f"random view {seed}, source {src}: member {m} is reached over {total} ms, the "
                        f"shortest path is {routes.dist[root][v.host(m).switch]} ms"
                    )
                n += 1
    return f"{n} members each on a shortest path"


@contextmanager
def _plugged(mod: ModuleType) -> Iterator[None]:
    f = _fn(mod)
    saved = mc.build_tree
    mc.build_tree = f  # type: ignore[assignment]
    try:
        yield
    finally:
        mc.build_tree = saved


def _view_with_groups(seed: int) -> NetView:
    rng = random.Random(seed)
    d = random_view(seed).model_dump(mode="json")
    names = [h["name"] for h in d["hosts"]]
    d["multicast_static"] = [
        {"group": f"239.9.{seed}.{i}", "source": src, "members": sorted(set(rng.sample(names, 4)) - {src})}
        for i, src in enumerate(rng.sample(names, 2))
    ]
    return NetView.model_validate(d)


def _receivers(v: NetView, net: FakeNet, source: str, group: str) -> tuple[list[str], bool]:
    h = v.host(source)
    r = net.send(
        source,
        {
            "eth_src": h.mac.lower(),
            "eth_dst": pk.multicast_mac(group),
            "eth_type": 0x0800,
            "ipv4_src": str(h.ip),
            "ipv4_dst": group,
            "ip_proto": 17,
            "udp_src": 5000,
            "udp_dst": 5001,
        },
    )
    return r.hosts, r.loop


def _verify(v: NetView, net: FakeNet, label: str) -> int:
    g = SwitchGraph(v).graph()
    for i in net.down:
        g.remove_edge(v.links[i].a, v.links[i].b)
    n = 0
    for sg in v.multicast_static:
        src_sw = v.host(sg.source).switch
        want = sorted(m for m in set(sg.members) - {sg.source} if nx.has_path(g, src_sw, v.host(m).switch))
        got, loop = _receivers(v, net, sg.source, str(sg.group))
        if loop:
            raise Fail(f"[{label}] ({sg.source}, {sg.group}): the packet loops")
        if got != want:
            dup = sorted({h for h in got if got.count(h) > 1})
            extra = sorted(set(got) - set(want))
            missing = sorted(set(want) - set(got))
            raise Fail(
                f"[{label}] ({sg.source}, {sg.group}): expected exactly one copy at each of {want}, got "
                f"{got} (duplicates {dup}, non-members {extra}, missing {missing})"
            )
        n += 1
    if net.errors():
        raise Fail(f"[{label}] switch errors: {net.errors()[:3]}")
    return n


def _setup(v: NetView) -> tuple[ControllerCore, FakeNet]:
    core, net = ControllerCore(v, clock=lambda: 100.0), FakeNet(v)
    connect_all(core, net)
    return core, net


def check_delivery(mod: ModuleType) -> str:
    n = 0
    with _plugged(mod):
        for v, label in [(triangle(), "triangle")] + [
            (_view_with_groups(s), f"random view {s}") for s in range(5)
        ]:
            core, net = _setup(v)
            n += _verify(v, net, label)
    return f"{n} (S, G) sends: one copy per member, none elsewhere"


def check_repair(mod: ModuleType) -> str:
    rng = random.Random(2236)
    n = 0
    with _plugged(mod):
        for v, label in [(triangle(), "triangle")] + [
            (_view_with_groups(s), f"random view {s}") for s in (1, 3, 5)
        ]:
            core, net = _setup(v)
            links = rng.sample(list(v.links), min(3, len(v.links)))
            for link in links:
                port_event(core, net, link.a, link.b, up=False)
                n += _verify(v, net, f"{label}, link {link.a}-{link.b} down")
            for link in links:
                port_event(core, net, link.a, link.b, up=True)
            n += _verify(v, net, f"{label}, links restored")
    return f"{n} sends after failures and repairs, all exact"


# ---------------------------------------------------------------------------------------------------------
# network stage: the student's build_tree inside the real Ryu controller; hosts join a group with IGMP

PATCH = {"controller.multicast:build_tree": "build_tree"}
GROUP, PORT, BURST = "239.5.5.5", 5005, 10
#: not in the handout: a ring with a chord, so a failed link has a way round
HIDDEN_TOPOLOGY = {
    "name": "mring",
    "description": "grader's hidden ring with a chord: trees must be repaired round a failed link",
    "subnet": "10.67.0.0/24",
    "regions": [{"name": "ring"}],
    "switches": [{"name": f"mr{i}", "region": "ring"} for i in (1, 2, 3, 4, 5)],
    "links": [
        {"a": "mr1", "b": "mr2", "delay_ms": 1},
        {"a": "mr2", "b": "mr3", "delay_ms": 1},
        {"a": "mr3", "b": "mr4", "delay_ms": 1},
        {"a": "mr4", "b": "mr5", "delay_ms": 1},
        {"a": "mr5", "b": "mr1", "delay_ms": 1},
        {"a": "mr2", "b": "mr5", "delay_ms": 3},
    ],
    "hosts": [
        {"name": "origin", "role": "origin", "region": "ring", "switch": "mr1"},
        {"name": "e1", "role": "edge", "region": "ring", "switch": "mr2"},
        {"name": "e2", "role": "edge", "region": "ring", "switch": "mr3"},
        {"name": "e3", "role": "edge", "region": "ring", "switch": "mr4"},
        {"name": "e4", "role": "edge", "region": "ring", "switch": "mr5"},
        {"name": "e5", "role": "edge", "region": "ring", "switch": "mr3"},
    ],
}


def _mcast_network(
    mod: ModuleType,
    topo: Any,
    label: str,
    members: list[str],
    others: list[str],
    fail: tuple[str, str] | None,
) -> str:
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from testbed.grade_network import controller_errors, lab_network, submission_of
    from testbed.net.launch import CdnOptions
    from testbed.util import DeadlineExceeded, timeout_scale, wait_until

    sub = submission_of(mod, REFERENCE, PATCH)
    with lab_network(topo, CdnOptions(roles=("origin",)), controller_submission=sub) as (cn, svc):
        tmp = Path(tempfile.mkdtemp(prefix="cdnlab-grade-mc-", dir=cn.run_dir))
        outs = {n: tmp / f"{n}.txt" for n in members + others}
        procs: list[Any] = []
        try:
            for n in members:
                outs[n].write_text("")
                h = cn.host(n)
                procs.append(
                    h.popen([sys.executable, "-c", MCAST_RECEIVER, GROUP, str(PORT), cn.ip(n), str(outs[n])])
                )
            for n in others:  # not joined: what reaches their NIC at all
                h = cn.host(n)
                procs.append(
                    h.popen(
                        ["tcpdump", "-l", "-n", "-i", f"{n}-eth0", "udp", "and", "dst", GROUP],
                        stdout=open(outs[n], "w"),  # noqa: SIM115 - closed with the process
                        stderr=subprocess.DEVNULL,
                    )
                )

            def joined() -> set[str]:
                g = cn.rest("/multicast")["groups"].get(GROUP, {})
                return set(g.get("igmp_members", {}))

            wait_until(lambda: joined() >= set(members), 15, 0.2, what="IGMP joins seen by the controller")
            src = cn.host("origin")

            def burst(tag: str, what: str) -> None:
                src.cmd(
                    f"{sys.executable} -c '{MCAST_SENDER}' {GROUP} {PORT} {cn.ip('origin')} {tag} {BURST}"
                )
                try:
                    wait_until(
                        lambda: all(outs[n].read_text().count(f"{tag}-") >= BURST for n in members),
                        5,
                        0.1,
                        what=what,
                    )
                except DeadlineExceeded:
                    pass
                time.sleep(0.5)  # late duplicates
                got = {n: outs[n].read_text().count(f"{tag}-") for n in members}
                if any(v != BURST for v in got.values()):
                    errs = controller_errors(cn)
                    raise Fail(
                        f"[{label}, {what}] origin sent {BURST} datagrams to {GROUP}: expected exactly {BURST} at "
                        f"each member, got {got}" + (f"; the controller logged: {errs[-1]}" if errs else "")
                    )

            burst("a", "every link up")
            if fail is not None:
                cn.net.configLinkStatus(fail[0], fail[1], "down")
                time.sleep(1.0 * timeout_scale())  # port status reaches the controller; trees rebuilt
                burst("b", f"link {fail[0]}-{fail[1]} down")
        finally:
            for p in procs:
                p.kill()
                p.wait()
        strays = {n: outs[n].read_text().count(GROUP) for n in others}
        if any(strays.values()):
            raise Fail(f"[{label}] hosts that never joined {GROUP} received its datagrams: {strays}")
    return f"{label}: exactly {BURST} copies at each of {len(members)} members, none elsewhere" + (
        f", also after {fail[0]}-{fail[1]} failed" if fail else ""
    )


def check_network_visible(mod: ModuleType) -> str:
    return _mcast_network(mod, "multicast", "multicast", ["e1", "e3", "e6"], ["e2", "e8"], None)


def check_network_hidden(mod: ModuleType) -> str:
    from testbed.net.spec import parse_topology

    topo = parse_topology(HIDDEN_TOPOLOGY, "the grader's hidden topology")
    return _mcast_network(mod, topo, "hidden topology", ["e2", "e3", "e4"], ["e5"], ("mr1", "mr5"))


def checks() -> list[Check]:
    tree = "one Dijkstra tree rooted at the source's switch: reverse routes.path[member switch][root]"
    return [
        Check("tree ports (triangle)", check_triangle, f"{SLIDE}; {tree}"),
        Check(
            "source excluded, empty and local groups",
            check_edge_cases,
            "Tree(source, group, members - {source})",
        ),
        Check("unreachable members", check_unreachable, "routes.reachable(member switch, root)"),
        Check("members on shortest paths", check_shortest, tree, timeout=10),
        Check(
            "fake network: exactly one copy per member",
            check_delivery,
            "in_port must be the port towards the source (RPF check), out_ports the children",
            timeout=15,
        ),
        Check(
            "repair after link failures",
            check_repair,
            "trees are rebuilt from the new routes after port status; nothing stale in your function",
            timeout=15,
        ),
        Check(
            "network (multicast): the real controller, IGMP joins, one copy per member",
            check_network_visible,
            "your build_tree runs inside the Ryu controller; receivers join with IGMP; tcpdump at non-members",
            timeout=600,
            points=2,
            stage="network",
        ),
        Check(
            "network (hidden topology): a ring, a link fails",
            check_network_hidden,
            "trees are rebuilt after the port status: still exactly one copy per member",
            timeout=600,
            points=2,
            visibility="after_due_date",
            stage="network",
        ),
    ]
