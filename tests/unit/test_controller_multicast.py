"""Multicast: IGMP snooping state machine and (S,G) shortest-path trees on fake switches."""

from __future__ import annotations

import itertools
import random
import warnings

import networkx as nx
import pytest

from controller import packets as pk

with warnings.catch_warnings():  # the contrib IGMP layers are deprecated but stable across scapy versions
    warnings.simplefilter("ignore", DeprecationWarning)
    from scapy.contrib.igmp import IGMP
    from scapy.contrib.igmpv3 import IGMPv3gr, IGMPv3mr
from contract.netview import NetView
from controller.core import ControllerCore
from controller.examples import random_view, triangle
from controller.flows import PacketOut
from controller.graph import SwitchGraph
from controller.multicast import (
    ALLOW_NEW,
    BLOCK_OLD,
    CHANGE_TO_EXCLUDE,
    CHANGE_TO_INCLUDE,
    MODE_IS_EXCLUDE,
    IgmpQuery,
    IgmpRecord,
    IgmpSnooper,
    parse_igmp,
)
from controller.simulate import FakeNet, connect_all, port_event

G = "239.2.2.2"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def setup(view: NetView | None = None):
    v = view or triangle()
    clock = Clock()
    core, net = ControllerCore(v, clock=clock), FakeNet(v)
    connect_all(core, net)
    return v, core, net, clock


def igmp_frame(v: NetView, host: str, igmp: bytes, dst: str = "224.0.0.22") -> bytes:
    h = v.host(host)
    return pk.ethernet(
        pk.multicast_mac(dst),
        h.mac,
        pk.ETH_IP,
        pk.ipv4(str(h.ip), dst, 2, igmp, ttl=1, options=pk.ROUTER_ALERT),
    )


def send_igmp(v, core, net, host: str, igmp: bytes) -> list:
    """The host sends an IGMP message: it must reach the controller (never other hosts)."""
    h = v.host(host)
    r = net.send(
        host,
        {
            "eth_src": h.mac,
            "eth_dst": "01:00:5e:00:00:16",
            "eth_type": 0x0800,
            "ipv4_src": str(h.ip),
            "ipv4_dst": "224.0.0.22",
            "ip_proto": 2,
        },
    )
    assert r.delivered == [] and len(r.to_controller) == 1
    dpid, port, _ = r.to_controller[0]
    out = core.packet_in(dpid, port, igmp_frame(v, host, igmp))
    net.apply([m for m in out if not isinstance(m, PacketOut)])
    return [m for m in out if isinstance(m, PacketOut)]


def join(v, core, net, host: str, group: str = G, v2: bool = False):
    raw = (
        bytes(IGMP(type=0x16, gaddr=group))
        if v2
        else bytes(IGMPv3mr(records=[IGMPv3gr(rtype=4, maddr=group)]))
    )
    return send_igmp(v, core, net, host, raw)


def leave(v, core, net, host: str, group: str = G, v2: bool = False):
    raw = (
        bytes(IGMP(type=0x17, gaddr=group))
        if v2
        else bytes(IGMPv3mr(records=[IGMPv3gr(rtype=3, maddr=group)]))
    )
    return send_igmp(v, core, net, host, raw)


def receivers(v: NetView, net: FakeNet, source: str, group: str = G) -> list[str]:
    h = v.host(source)
    r = net.send(
        source,
        {
            "eth_src": h.mac,
            "eth_dst": pk.multicast_mac(group),
            "eth_type": 0x0800,
            "ipv4_src": str(h.ip),
            "ipv4_dst": group,
            "ip_proto": 17,
            "udp_src": 5000,
            "udp_dst": 5001,
        },
    )
    assert not r.loop
    assert r.to_controller == []
    return r.hosts  # sorted; a duplicate delivery would appear twice


def test_parse_igmp_versions() -> None:
    assert parse_igmp(bytes(IGMP(type=0x16, gaddr=G))) == [IgmpRecord(MODE_IS_EXCLUDE, G)]
    assert parse_igmp(bytes(IGMP(type=0x17, gaddr=G))) == [IgmpRecord(CHANGE_TO_INCLUDE, G)]
    recs = parse_igmp(
        bytes(
            IGMPv3mr(
                records=[
                    IGMPv3gr(rtype=4, maddr=G),
                    IGMPv3gr(rtype=5, maddr="239.3.3.3", srcaddrs=["10.0.0.1", "10.0.0.2"]),
                ]
            )
        )
    )
    assert recs == [
        IgmpRecord(CHANGE_TO_EXCLUDE, G),
        IgmpRecord(ALLOW_NEW, "239.3.3.3", frozenset({"10.0.0.1", "10.0.0.2"})),
    ]
    assert parse_igmp(bytes(IGMP(type=0x11, gaddr="0.0.0.0"))) == IgmpQuery("0.0.0.0")
    for bad in (b"\x22\x00", bytes(IGMPv3mr(records=[IGMPv3gr(rtype=4, maddr=G)]))[:-2], b"\x99" + bytes(7)):
        with pytest.raises(pk.PacketError):
            parse_igmp(bad)


def test_snooper_state_machine() -> None:
    s = IgmpSnooper(query_interval=10, response_s=2, robustness=2)
    assert s.gmi == 22
    assert s.record("a", IgmpRecord(CHANGE_TO_EXCLUDE, G), now=0) == (True, [])
    assert s.record("a", IgmpRecord(MODE_IS_EXCLUDE, G), now=5) == (False, [])  # refresh only
    assert s.hosts_for(G, "10.0.0.9") == {"a"}
    s.record("a", IgmpRecord(BLOCK_OLD, G, frozenset({"10.0.0.9"})), now=6)  # exclude 10.0.0.9
    assert s.hosts_for(G, "10.0.0.9") == set() and s.hosts_for(G, "10.0.0.8") == {"a"}
    s.record("b", IgmpRecord(ALLOW_NEW, G, frozenset({"10.0.0.9"})), now=6)  # include {10.0.0.9}
    assert s.hosts_for(G, "10.0.0.9") == {"b"}
    assert s.record("b", IgmpRecord(BLOCK_OLD, G, frozenset({"10.0.0.9"})), now=7) == (True, [G])  # leave
    assert s.record("x", IgmpRecord(CHANGE_TO_EXCLUDE, "224.0.0.251"), now=7) == (
        False,
        [],
    )  # link-local: ignored
    assert not s.expire(now=27) and s.expire(now=28.1)  # a's last report at 6: GMI 22
    assert s.groups() == set()
    assert s.query_due(0) and not s.query_due(5) and s.query_due(10)


def test_static_group_reaches_exactly_its_members() -> None:
    v, core, net, _ = setup()
    assert receivers(v, net, "hch1", "239.1.1.1") == ["hch3"]
    assert receivers(v, net, "hch2", "239.1.1.1") == []  # not the static source: dropped


def test_dynamic_join_leave_and_queries() -> None:
    v, core, net, clock = setup()
    for src in ("hch1", "hch2", "hch3", "hch4", "hch5"):
        assert receivers(v, net, src) == []
    join(v, core, net, "hch2")
    join(v, core, net, "hch5", v2=True)
    assert receivers(v, net, "hch3") == ["hch2", "hch5"]
    assert receivers(v, net, "hch2") == ["hch5"]  # the source itself is not sent its own packet
    assert receivers(v, net, "hch1") == ["hch2", "hch5"]
    queries = leave(v, core, net, "hch2")
    assert receivers(v, net, "hch1") == ["hch5"]
    (q,) = queries  # a group-specific query to the leaving host's port
    qp = pk.parse(q.data)
    assert qp.ip_dst == G and q.actions[0].port == v.host("hch2").port and q.dpid == 0xC2
    leave(v, core, net, "hch5", v2=True)
    assert receivers(v, net, "hch1") == []
    # no stale (S,G) state: only the static group's rules and group remain
    assert sum(len(s.groups) for s in net.switches.values()) == 3
    assert core.multicast()["groups"].keys() == {"239.1.1.1"}


def test_membership_expires_and_general_queries() -> None:
    v, core, net, clock = setup()
    outs = core.tick()
    qs = [pk.parse(m.data) for m in outs if isinstance(m, PacketOut) and pk.parse(m.data).ip_proto == 2]
    assert len(qs) == len(v.hosts) and {q.ip_dst for q in qs} == {"224.0.0.1"}
    join(v, core, net, "hch3")
    assert receivers(v, net, "hch1") == ["hch3"]
    clock.t += 125  # a query is due; no report refreshes the membership
    core.tick()
    clock.t += 250 + 10 + 1 - 125
    net.apply([m for m in core.tick() if not isinstance(m, PacketOut)])
    assert receivers(v, net, "hch1") == []
    assert core.multicast()["trees"] == [t for t in core.multicast()["trees"] if t["group"] == "239.1.1.1"]


def test_source_filtering_igmpv3_include() -> None:
    v, core, net, _ = setup()
    send_igmp(
        v, core, net, "hch3", bytes(IGMPv3mr(records=[IGMPv3gr(rtype=1, maddr=G, srcaddrs=["10.0.0.1"])]))
    )
    assert receivers(v, net, "hch1") == ["hch3"]
    assert receivers(v, net, "hch2") == []


def test_rpf_spoofed_source_dropped() -> None:
    v, core, net, _ = setup()
    join(v, core, net, "hch3")
    h2, h1 = v.host("hch2"), v.host("hch1")
    r = net.send(
        "hch2",
        {
            "eth_src": h2.mac,
            "eth_dst": pk.multicast_mac(G),
            "eth_type": 0x0800,
            "ipv4_src": str(h1.ip),
            "ipv4_dst": G,
            "ip_proto": 17,
            "udp_src": 1,
            "udp_dst": 2,
        },
    )
    assert r.delivered == [] and not r.loop


def test_tree_repair_on_link_failure() -> None:
    v, core, net, _ = setup()
    join(v, core, net, "hch2")
    join(v, core, net, "hch3")
    assert receivers(v, net, "hch1") == ["hch2", "hch3"]
    port_event(core, net, "hc1", "hc2", up=False)
    assert receivers(v, net, "hch1") == ["hch2", "hch3"]
    assert receivers(v, net, "hch1", "239.1.1.1") == ["hch3"]
    port_event(core, net, "hc2", "hc3", up=False)  # hc2 cut off
    assert receivers(v, net, "hch1") == ["hch3"]
    tree = next(t for t in core.multicast()["trees"] if t["group"] == G and t["source"] == "hch1")
    assert tree["unreachable"] == ["hch2"]
    port_event(core, net, "hc1", "hc2", up=True)
    port_event(core, net, "hc2", "hc3", up=True)
    assert receivers(v, net, "hch1") == ["hch2", "hch3"]
    assert not net.errors()


def test_malformed_igmp_is_counted_not_fatal() -> None:
    v, core, net, _ = setup()
    h = v.host("hch1")
    assert core.packet_in(0xC1, h.port, igmp_frame(v, "hch1", b"\x22\x00\x00")) == []
    assert core.bad_packets == 1
    join(v, core, net, "hch3")
    assert receivers(v, net, "hch1") == ["hch3"]


@pytest.mark.parametrize("seed", range(6))
def test_random_groups_exact_delivery_with_failures(seed: int) -> None:
    v = random_view(seed)
    v, core, net, _ = setup(v)
    rng = random.Random(seed)
    names = [h.name for h in v.hosts]
    members = set(rng.sample(names, 4))
    for m in members:
        join(v, core, net, m)
    base = SwitchGraph(v).graph()

    def check() -> None:
        g = base.copy()
        for i in net.down:
            g.remove_edge(v.links[i].a, v.links[i].b)
        for src in rng.sample(names, 4):
            sw = v.host(src).switch
            want = sorted(m for m in members - {src} if nx.has_path(g, sw, v.host(m).switch))
            assert receivers(v, net, src) == want, (src, net.down)

    check()
    for link in itertools.islice(rng.sample(list(v.links), len(v.links)), 4):
        port_event(core, net, link.a, link.b, up=False)
        check()
    for m in list(members)[:2]:
        leave(v, core, net, m)
        members.discard(m)
        check()
    assert not net.errors()
