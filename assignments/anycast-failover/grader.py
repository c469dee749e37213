"""Grader of lab anycast-failover: the student's ``choose`` drives the controller on a fake network.

Direct checks call ``choose(view, routes, svc)`` on small networks with known answers. Network checks put
the student's function in place of ``controller.anycast.choose`` (the controller core and the flow builder
both call it), connect a :class:`controller.core.ControllerCore` to a :class:`controller.simulate.FakeNet`
and walk a packet from every client to the VIP: it must arrive at exactly the nearest healthy member
(the testbed's reference choice), with that member's MAC, also after a member dies, is drained, and links
fail.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import controller.anycast as anycast_mod
import controller.core as core_mod
from contract.netview import NetView
from controller.anycast import ServiceState
from controller.anycast import choose as ref_choose
from controller.core import ControllerCore
from controller.examples import random_view, triangle
from controller.graph import SwitchGraph
from controller.liveness import Transition
from controller.routing import compute_routes
from controller.simulate import FakeNet, connect_all, ip_packet, port_event
from testbed.grade import Check, Fail

TITLE = "IP anycast: nearest healthy member per ingress switch, failover and drain"
MODULE = "anycast_choice"
#: the reference implementation a submission may not import (contract.import_guard)
REFERENCE = ("controller.anycast:choose",)
SLIDE = 'lecture slides 11-12 "Server Selection" / "Trade-offs" (routing based: IP anycast)'


def _fn(mod: ModuleType) -> Callable[..., dict[str, str | None]]:
    f = getattr(mod, "choose", None)
    if not callable(f):
        raise Fail("your module has no function choose(view, routes, svc)")
    return f


def _line_view(members: list[str]) -> NetView:
    """hc1 -3ms- hc2 -3ms- hc3; hch4 at hc3 and hch5 at hc1 (1 ms each): from hc2 both cost 4 ms."""
    mac = lambda i: f"02:00:00:00:01:{i:02x}"  # noqa: E731
    return NetView.model_validate(
        {
            "switches": [{"name": f"hc{i}", "dpid": 0x200 + i} for i in (1, 2, 3)],
            "links": [
                {"a": "hc1", "a_port": 1, "b": "hc2", "b_port": 1, "delay_ms": 3},
                {"a": "hc2", "a_port": 2, "b": "hc3", "b_port": 1, "delay_ms": 3},
            ],
            "hosts": [
                {"name": "hch1", "mac": mac(1), "ip": "10.0.2.1", "switch": "hc2", "port": 3, "delay_ms": 1},
                {"name": "hch4", "mac": mac(4), "ip": "10.0.2.4", "switch": "hc3", "port": 3, "delay_ms": 1},
                {"name": "hch5", "mac": mac(5), "ip": "10.0.2.5", "switch": "hc1", "port": 3, "delay_ms": 1},
            ],
            "anycast": [
                {
                    "name": "web",
                    "vip": "10.0.2.100",
                    "vmac": "02:cd:1a:00:03:00",
                    "port": 80,
                    "members": members,
                }
            ],
        }
    )


def _direct(mod: ModuleType, view: NetView, svc: ServiceState, routes: Any, want: dict, label: str) -> None:
    got = _fn(mod)(view, routes, svc)
    if not isinstance(got, dict):
        raise Fail(f"[{label}] choose() must return a dict switch -> member, got {type(got).__name__}")
    if got != want:
        diff = {
            s: (want.get(s), got.get(s)) for s in sorted(set(want) | set(got)) if want.get(s) != got.get(s)
        }
        raise Fail(f"[{label}] expected {want}, got {got} (switch: (expected, got) {diff})")


def check_triangle(mod: ModuleType) -> str:
    v = triangle()
    svc = ServiceState(v.anycast[0], 0)
    routes = compute_routes(SwitchGraph(v).graph())
    _direct(
        mod,
        v,
        svc,
        routes,
        {"hc1": "hch4", "hc2": "hch5", "hc3": "hch5"},
        "triangle: hc1-hc2 5 ms, hc2-hc3 5 ms, hc3-hc1 12 ms; hch4 at hc1 (+2 ms), hch5 at hc3 (+1 ms)",
    )
    return "nearest member by path delay + access delay"


def check_ties(mod: ModuleType) -> str:
    v = _line_view(["hch5", "hch4"])
    svc = ServiceState(v.anycast[0], 0)
    routes = compute_routes(SwitchGraph(v).graph())
    _direct(
        mod,
        v,
        svc,
        routes,
        {"hc1": "hch5", "hc2": "hch4", "hc3": "hch4"},
        "line hc1-hc2-hc3, members listed [hch5, hch4], both 4 ms from hc2: tie goes to the smaller name",
    )
    return "ties broken by name, not by list order"


def check_health(mod: ModuleType) -> str:
    v = triangle()
    routes = compute_routes(SwitchGraph(v).graph())
    cases = [
        ("hch5 drained", {"hch5": ("drained", True)}, dict.fromkeys(("hc1", "hc2", "hc3"), "hch4")),
        ("hch4 dead (liveness)", {"hch4": ("alive", False)}, dict.fromkeys(("hc1", "hc2", "hc3"), "hch5")),
        ("hch5 access link down", {"hch5": ("link_up", False)}, dict.fromkeys(("hc1", "hc2", "hc3"), "hch4")),
        (
            "both unhealthy",
            {"hch4": ("alive", False), "hch5": ("drained", True)},
            dict.fromkeys(("hc1", "hc2", "hc3")),
        ),
    ]
    for label, changes, want in cases:
        svc = ServiceState(v.anycast[0], 0)
        for m, (attr, val) in changes.items():
            setattr(svc.health[m], attr, val)
        _direct(mod, v, svc, routes, want, f"triangle, {label}")
    return "only healthy members (alive, link up, not drained)"


def check_unreachable(mod: ModuleType) -> str:
    v = _line_view(["hch4", "hch5"])
    sg = SwitchGraph(v)
    sg.set_link_state("hc2", 2, False)  # hc3 (and hch4) cut off from hc1, hc2
    routes = compute_routes(sg.graph())
    svc = ServiceState(v.anycast[0], 0)
    _direct(
        mod,
        v,
        svc,
        routes,
        {"hc1": "hch5", "hc2": "hch5", "hc3": "hch4"},
        "line with hc2-hc3 down: each side reaches only its own member",
    )
    svc.health["hch5"].alive = False
    _direct(
        mod,
        v,
        svc,
        routes,
        {"hc1": None, "hc2": None, "hc3": "hch4"},
        "line with hc2-hc3 down and hch5 dead: hc1, hc2 have no reachable healthy member",
    )
    return "unreachable members skipped (routes.dist has no entry)"


@contextmanager
def _plugged(mod: ModuleType) -> Iterator[None]:
    f = _fn(mod)
    saved = (anycast_mod.choose, core_mod.choose)
    anycast_mod.choose = core_mod.choose = f  # type: ignore[assignment]
    try:
        yield
    finally:
        anycast_mod.choose, core_mod.choose = saved


def _verify_all(v: NetView, core: ControllerCore, net: FakeNet, label: str) -> int:
    """Every non-member host sends to every VIP: exactly the reference member gets it, with its MAC."""
    n = 0
    for name, svc in core.services.items():
        want = ref_choose(v, core.routes, svc)
        for h in v.hosts:
            if h.name in svc.view.members:
                continue
            r = net.send(h.name, ip_packet(v, h.name, str(svc.view.vip), svc.view.vmac))
            exp = want[h.switch]
            got = [d for d, _ in r.delivered]
            if r.loop:
                raise Fail(f"[{label}] {h.name} -> VIP of {name}: the packet loops")
            if got != ([exp] if exp else []):
                raise Fail(
                    f"[{label}] {h.name} (ingress {h.switch}) -> VIP of {name}: expected delivery to "
                    f"{[exp] if exp else 'nobody (no healthy reachable member)'}, got {got}"
                )
            if exp and r.delivered[0][1]["eth_dst"] != v.host(exp).mac.lower():
                raise Fail(f"[{label}] {h.name} -> VIP: delivered to {exp} without its MAC (ingress rewrite)")
            n += 1
    if net.errors():
        raise Fail(f"[{label}] switch errors: {net.errors()[:3]}")
    return n


def _setup(v: NetView) -> tuple[ControllerCore, FakeNet]:
    core, net = ControllerCore(v, clock=lambda: 100.0), FakeNet(v)
    connect_all(core, net)
    return core, net


def check_walk(mod: ModuleType) -> str:
    n = 0
    with _plugged(mod):
        for v, label in [(triangle(), "triangle")] + [(random_view(s), f"random view {s}") for s in range(4)]:
            core, net = _setup(v)
            n += _verify_all(v, core, net, label)
    return f"{n} client->VIP packets delivered to the nearest healthy member"


def check_member_dies(mod: ModuleType) -> str:
    with _plugged(mod):
        for v, label in [(triangle(), "triangle")] + [(random_view(s), f"random view {s}") for s in (1, 2)]:
            core, net = _setup(v)
            svc = next(iter(core.services.values()))
            chosen = sorted({m for m in ref_choose(v, core.routes, svc).values() if m})
            victim = chosen[0]
            net.apply(core._apply_transitions([Transition(svc.view.name, victim, False, "probe timeout")]))
            _verify_all(v, core, net, f"{label}, member {victim} died")
            net.apply(core.set_drained(svc.view.name, [m for m in svc.view.members if m != victim][0], True))
            _verify_all(v, core, net, f"{label}, {victim} dead and another member drained")
            net.apply(core._apply_transitions([Transition(svc.view.name, victim, True, "probe ok")]))
            _verify_all(v, core, net, f"{label}, {victim} back")
    return "withdrawal, drain and restore all move traffic to the right member"


def check_link_fails(mod: ModuleType) -> str:
    rng = random.Random(12)
    with _plugged(mod):
        for v, label in [(triangle(), "triangle")] + [(random_view(s), f"random view {s}") for s in (0, 3)]:
            core, net = _setup(v)
            links = rng.sample(list(v.links), min(3, len(v.links)))
            for link in links:
                port_event(core, net, link.a, link.b, up=False)
                _verify_all(v, core, net, f"{label}, link {link.a}-{link.b} down")
            for link in links:
                port_event(core, net, link.a, link.b, up=True)
            _verify_all(v, core, net, f"{label}, links restored")
    return "rerouted after link failures and back"


# ---------------------------------------------------------------------------------------------------------
# network stage: the student's choose() inside the real Ryu controller, clients curl the VIP

PATCH = {"controller.anycast:choose": "choose", "controller.core:choose": "choose"}
OBJECT = "/img/img0001.jpg"
#: not in the handout: a ring where one client's two members tie (4 + 1 ms each way) and one client's
#: nearest member is the far one by hop count
HIDDEN_TOPOLOGY = {
    "name": "ring4",
    "description": "grader's hidden ring: two anycast edges, a tie, a short long way round",
    "subnet": "10.66.0.0/24",
    "regions": [{"name": "ring"}],
    "switches": [{"name": f"hr{i}", "region": "ring"} for i in (1, 2, 3, 4)],
    "links": [
        {"a": "hr1", "b": "hr2", "delay_ms": 4},
        {"a": "hr2", "b": "hr3", "delay_ms": 4},
        {"a": "hr3", "b": "hr4", "delay_ms": 3},
        {"a": "hr4", "b": "hr1", "delay_ms": 8},
    ],
    "hosts": [
        {"name": "origin", "role": "origin", "region": "ring", "switch": "hr1", "link": {"delay_ms": 1}},
        {"name": "ea", "role": "edge", "region": "ring", "switch": "hr1", "link": {"delay_ms": 1}},
        {"name": "eb", "role": "edge", "region": "ring", "switch": "hr3", "link": {"delay_ms": 1}},
        {"name": "ca", "role": "client", "region": "ring", "switch": "hr1", "link": {"delay_ms": 1}},
        {"name": "cb", "role": "client", "region": "ring", "switch": "hr2", "link": {"delay_ms": 1}},
        {"name": "cc", "role": "client", "region": "ring", "switch": "hr4", "link": {"delay_ms": 1}},
    ],
    "anycast": [{"name": "http", "vip": "10.66.0.200", "port": 80, "members": ["ea", "eb"]}],
}


def _expected(cn: Any, clients: list[str], dead: set[str]) -> dict[str, str | None]:
    """Each client's member by the reference choice on the running network's view."""
    from pathlib import Path

    from contract.netview import load_view

    view = load_view(Path(cn.run_dir) / "netview.json")
    routes = compute_routes(SwitchGraph(view).graph())
    svc = ServiceState(view.anycast[0], 0)
    for m in dead:
        svc.health[m].alive = False
    by_switch = ref_choose(view, routes, svc)
    return {h.name: by_switch[h.switch] for h in view.hosts if h.name in clients}


def _network(mod: ModuleType, topo: Any, label: str) -> str:
    import time

    from testbed.grade_network import controller_errors, lab_network, served_by, submission_of
    from testbed.net.launch import CdnOptions
    from testbed.util import DeadlineExceeded, wait_until

    sub = submission_of(mod, REFERENCE, PATCH)
    with lab_network(topo, CdnOptions(roles=("origin", "edge")), controller_submission=sub) as (cn, svc):
        vip = cn.topo.anycast[0].vip
        url = f"http://{vip}{OBJECT}"
        clients = [h.name for h in cn.topo.hosts_with("client")]

        def reach(want: dict[str, str | None], what: str, timeout: float) -> None:
            for c in clients:
                try:
                    wait_until(lambda c=c: served_by(cn, c, url) == want[c], timeout, 0.2, what=what)
                except DeadlineExceeded:
                    got = served_by(cn, c, url)
                    errs = controller_errors(cn)
                    raise Fail(
                        f"[{label}, {what}] {c} (at {cn.topo.host(c).switch}) reached "
                        f"{got or 'no edge'} through the anycast VIP {vip}, expected {want[c]}"
                        + (f"; the controller logged: {errs[-1]}" if errs else "")
                    ) from None

        want = _expected(cn, clients, set())
        reach(want, "every edge up", 10)
        victim = want[clients[0]]
        assert victim is not None
        t0 = time.monotonic()
        svc.fail(victim)
        reach(_expected(cn, clients, {victim}), f"{victim} killed", 10)
        failover = time.monotonic() - t0
        svc.recover(victim)
        reach(want, f"{victim} back", 15)
    return f"{label}: {len(clients)} clients at their nearest edge; failover from {victim} in {failover:.1f} s, and back"


def check_network_mini(mod: ModuleType) -> str:
    return _network(mod, "mini", "mini")


def check_network_hidden(mod: ModuleType) -> str:
    from testbed.net.spec import parse_topology

    return _network(mod, parse_topology(HIDDEN_TOPOLOGY, "the grader's hidden topology"), "hidden topology")


def checks() -> list[Check]:
    return [
        Check(
            "nearest member (triangle)", check_triangle, f"{SLIDE}; member_cost = routes.dist + access delay"
        ),
        Check("ties broken by member name", check_ties, "compare (cost, name) tuples"),
        Check(
            "only healthy members",
            check_health,
            "MemberHealth.healthy = alive and link_up and not drained (controller/anycast.py)",
        ),
        Check(
            "unreachable members skipped",
            check_unreachable,
            "routes.dist[s] lacks switches in another partition: member_cost returns None",
        ),
        Check("fake network: every ingress to its nearest member", check_walk, SLIDE, timeout=15),
        Check(
            "failover: member dies, drain, restore",
            check_member_dies,
            'lecture slide 11 ("Any alive node: to provide fault tolerance")',
            timeout=15,
        ),
        Check(
            "failover: links fail and recover",
            check_link_fails,
            "routes are recomputed on port status; your choose() sees the new routes.dist",
            timeout=15,
        ),
        Check(
            "network (mini): the real controller steers every client, fails over and back",
            check_network_mini,
            "your choose() runs inside the Ryu controller; clients curl the VIP; an edge is killed",
            timeout=600,
            points=2,
            stage="network",
        ),
        Check(
            "network (hidden topology): nearest member, ties and failover",
            check_network_hidden,
            "a topology not in the handout: path delay + access delay, ties by name, only healthy members",
            timeout=600,
            points=2,
            visibility="after_due_date",
            stage="network",
        ),
    ]
