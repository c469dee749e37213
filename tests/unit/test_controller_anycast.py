"""IP anycast: nearest healthy member per ingress, liveness withdrawal, drain, reroute, affinity mode."""

from __future__ import annotations

import networkx as nx
import pytest

from contract.netview import NetView
from controller import packets as pk
from controller.core import ControllerCore
from controller.examples import random_view, triangle
from controller.flows import PacketOut
from controller.graph import SwitchGraph
from controller.simulate import FakeNet, connect_all, ip_packet, port_event

VIP, VMAC = "10.0.0.100", "02:cd:1a:00:01:00"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def setup(
    view: NetView | None = None, mode: str = "destination"
) -> tuple[NetView, ControllerCore, FakeNet, Clock]:
    v = view or triangle(mode=mode)
    clock = Clock()
    core, net = ControllerCore(v, clock=clock), FakeNet(v)
    connect_all(core, net)
    return v, core, net, clock


def vip_dest(v: NetView, net: FakeNet, client: str, sport: int = 40000, vip: str = VIP, vmac: str = VMAC):
    r = net.send(client, ip_packet(v, client, vip, vmac, sport=sport))
    assert not r.loop
    return r


def reached(v: NetView, net: FakeNet, client: str, **kw) -> str | None:
    r = vip_dest(v, net, client, **kw)
    assert len(r.delivered) <= 1
    if not r.delivered:
        return None
    host, pkt = r.delivered[0]
    assert pkt["eth_dst"] == v.host(host).mac and pkt["ipv4_dst"] == kw.get("vip", VIP)  # member NIC accepts
    return host


def brute_force_nearest(v: NetView, ingress: str, members: list[str]) -> str:
    g = SwitchGraph(v).graph()
    d = nx.single_source_dijkstra_path_length(g, ingress)
    return min(members, key=lambda m: (d[v.host(m).switch] + v.host(m).delay_ms, m))


def test_each_ingress_reaches_its_nearest_member() -> None:
    v, core, net, _ = setup()
    assert [reached(v, net, c) for c in ("hch1", "hch2", "hch3")] == ["hch4", "hch5", "hch5"]
    # the member's answer (from the VIP) comes back to the client
    r = net.send("hch5", ip_packet(v, "hch5", "10.0.0.2", v.host("hch2").mac) | {"ipv4_src": VIP})
    assert r.hosts == ["hch2"]


@pytest.mark.parametrize("seed", range(6))
def test_random_views_nearest_member(seed: int) -> None:
    v = random_view(seed)
    svc = v.anycast[0]
    _, core, net, _ = setup(v)
    for h in v.hosts:
        if h.name in svc.members:
            continue  # a member reaches the VIP on its own loopback, never on the wire
        assert reached(v, net, h.name, vip=str(svc.vip), vmac=svc.vmac) == brute_force_nearest(
            v, h.switch, svc.members
        ), h.name


def _probe_round(core: ControllerCore, net: FakeNet, answer: dict[str, str]) -> list:
    """Run one tick; members answer per ``answer`` (member -> 'synack' | 'rst' | 'none')."""
    outs = core.tick()
    net.apply([m for m in outs if not isinstance(m, PacketOut)])
    replies = []
    for po in [m for m in outs if isinstance(m, PacketOut)]:
        p = pk.parse(po.data)
        if p.ip_proto != 6 or p.ip_dst != VIP:
            continue
        member = next(h for h in core.view.hosts if h.mac == p.eth_dst)
        assert po.actions[0].port == member.port and po.dpid == core.view.switch(member.switch).dpid
        kind = answer.get(member.name, "synack")
        if kind == "none":
            continue
        flags = pk.TCP_SYN | pk.TCP_ACK if kind == "synack" else pk.TCP_RST | pk.TCP_ACK
        data = pk.tcp_packet(member.mac, p.eth_src, VIP, p.ip_src, p.dport, p.sport, 7, p.tcp_seq + 1, flags)
        # the reply reaches the controller through the switch's probe rule
        r = net.send(
            member.name,
            {
                "eth_src": member.mac,
                "eth_dst": p.eth_src,
                "eth_type": 0x0800,
                "ipv4_src": VIP,
                "ipv4_dst": p.ip_src,
                "ip_proto": 6,
                "tcp_src": 80,
                "tcp_dst": p.sport,
            },
        )
        assert len(r.to_controller) == 1 and not r.delivered
        dpid, port, _ = r.to_controller[0]
        out = core.packet_in(dpid, port, data)
        if kind == "synack":  # the controller resets the half-open connection
            rst = [pk.parse(m.data) for m in out if isinstance(m, PacketOut)]
            assert rst and rst[0].tcp_flags == pk.TCP_RST and rst[0].tcp_seq == p.tcp_seq + 1
        net.apply([m for m in out if not isinstance(m, PacketOut)])
        replies.append(member.name)
    return replies


def test_killed_process_rst_withdraws_at_once_and_recovers() -> None:
    v, core, net, clock = setup()
    assert sorted(_probe_round(core, net, {})) == ["hch4", "hch5"]
    clock.t += 0.02
    _probe_round(core, net, {"hch4": "rst"})
    assert not core.services["web"].health["hch4"].healthy
    assert reached(v, net, "hch1") == "hch5"
    snap = core.anycast()["services"]["web"]
    assert snap["choice"]["hc1"] == "hch5" and "RST" in snap["members"]["hch4"]["reason"]
    clock.t += 0.02
    _probe_round(core, net, {})
    assert reached(v, net, "hch1") == "hch5"  # one success is not enough (threshold 2)
    clock.t += 0.02
    _probe_round(core, net, {})
    assert reached(v, net, "hch1") == "hch4"


def test_dead_host_withdrawn_after_threshold_timeouts() -> None:
    v, core, net, clock = setup()
    _probe_round(core, net, {"hch4": "none"})
    clock.t += 0.02
    _probe_round(core, net, {"hch4": "none"})
    assert reached(v, net, "hch1") == "hch4"  # probes not yet timed out (60 ms)
    clock.t += 0.05  # first probe (t=0) expired: 1 failure
    _probe_round(core, net, {"hch4": "none"})
    assert core.services["web"].health["hch4"].alive
    clock.t += 0.02  # second probe expired: 2 consecutive failures -> withdrawn (within 100 ms)
    _probe_round(core, net, {"hch4": "none"})
    assert not core.services["web"].health["hch4"].alive
    assert reached(v, net, "hch1") == "hch5"


def test_late_or_foreign_probe_answers_are_ignored() -> None:
    v, core, net, _ = setup()
    m = v.host("hch4")
    bogus = pk.tcp_packet(m.mac, core.probe_mac, VIP, core.probe_ip, 80, 1234, 1, 1, pk.TCP_RST)
    core.packet_in(0xC1, 4, bogus)
    assert core.services["web"].health["hch4"].alive


def test_member_port_down_withdraws_and_drain_restore() -> None:
    v, core, net, _ = setup()
    net.apply(core.port_status(0xC1, 4, up=False))
    assert reached(v, net, "hch1") == "hch5"
    net.apply(core.port_status(0xC1, 4, up=True))
    assert reached(v, net, "hch1") == "hch4"
    net.apply(core.set_drained("web", "hch5", True))
    assert [reached(v, net, c) for c in ("hch1", "hch2", "hch3")] == ["hch4"] * 3
    net.apply(core.set_drained("web", "hch4", True))
    r = vip_dest(v, net, "hch1")
    assert r.delivered == [] and r.to_controller == []  # no healthy member: dropped, no loop
    net.apply(core.set_drained("web", "hch4", False))
    net.apply(core.set_drained("web", "hch5", False))
    assert [reached(v, net, c) for c in ("hch1", "hch2", "hch3")] == ["hch4", "hch5", "hch5"]
    with pytest.raises(KeyError):
        core.set_drained("web", "hch1", True)
    with pytest.raises(KeyError):
        core.set_drained("nope", "hch4", True)


def test_link_down_changes_choice_by_new_distances() -> None:
    v, core, net, _ = setup()
    port_event(core, net, "hc2", "hc3", up=False)
    assert reached(v, net, "hch2") == "hch4"  # hch5 now 5+12+1 away
    assert reached(v, net, "hch3") == "hch5"
    port_event(core, net, "hc2", "hc3", up=True)
    assert reached(v, net, "hch2") == "hch5"


def _affinity_first_packet(v, core, net, client: str, sport: int) -> str | None:
    r = vip_dest(v, net, client, sport=sport)
    if not r.to_controller:
        return reached(v, net, client, sport=sport)
    assert r.delivered == []
    dpid, port, fields = r.to_controller[0]
    h = v.host(client)
    data = pk.tcp_packet(h.mac, VMAC, str(h.ip), VIP, sport, 80, 1, 0, pk.TCP_SYN)
    out = core.packet_in(dpid, port, data)
    net.apply([m for m in out if not isinstance(m, PacketOut)])
    (po,) = [m for m in out if isinstance(m, PacketOut)]
    rr = net.packet_out(po, fields)
    assert len(rr.delivered) == 1
    return rr.delivered[0][0]


def test_affinity_pins_flows_across_drain_and_repins_on_death() -> None:
    v, core, net, clock = setup(mode="affinity")
    assert _affinity_first_packet(v, core, net, "hch1", 5000) == "hch4"
    r = vip_dest(v, net, "hch1", sport=5000)
    assert r.hosts == ["hch4"] and not r.to_controller  # later packets: switch only
    net.apply(core.set_drained("web", "hch4", True))
    assert reached(v, net, "hch1", sport=5000) == "hch4"  # established flow keeps its member
    assert _affinity_first_packet(v, core, net, "hch1", 5001) == "hch5"  # new flows go elsewhere
    net.apply(core.set_drained("web", "hch4", False))
    assert reached(v, net, "hch1", sport=5001) == "hch5"  # restore does not move established flows
    # hch5 dies (RST): its flows are deleted; the flow is re-pinned on its next packet
    _probe_round(core, net, {"hch5": "rst"})
    assert vip_dest(v, net, "hch1", sport=5001).to_controller
    assert reached(v, net, "hch1", sport=5000) == "hch4"
    assert _affinity_first_packet(v, core, net, "hch1", 5001) == "hch4"
    # back to destination mode: affinity flows are removed, the ingress rule rewrites directly
    net.apply(core.set_mode("destination"))
    assert not any(e.priority == 700 for s in net.switches.values() for e in s.flows.values())
    assert reached(v, net, "hch2", sport=5000) == "hch4"  # hch5 still withdrawn
    with pytest.raises(ValueError):
        core.set_mode("nearest")


def test_destination_mode_moves_inflight_flows() -> None:
    v, core, net, _ = setup()
    assert reached(v, net, "hch1", sport=6000) == "hch4"
    net.apply(core.set_drained("web", "hch4", True))
    assert reached(v, net, "hch1", sport=6000) == "hch5"  # same 5-tuple, new member: TCP would break


def test_icmp_probes_and_no_probing_of_disconnected_switches() -> None:
    data = triangle().model_dump(mode="json")
    data["anycast"][0]["probe"] = {"kind": "icmp", "interval_ms": 20, "timeout_ms": 60, "threshold": 1}
    v = NetView.model_validate(data)
    clock = Clock()
    core, net = ControllerCore(v, clock=clock), FakeNet(v)
    net.apply(core.switch_connected(0xC1))  # hch4's switch only; hch5's (hc3) is not connected
    pos = [m for m in core.tick() if isinstance(m, PacketOut)]
    echo = [pk.parse(m.data) for m in pos if pk.parse(m.data).ip_proto == 1]
    assert [(e.ip_dst, e.icmp_type) for e in echo] == [("10.0.0.4", 8)]  # hch5 is not probed
    clock.t += 1
    core.tick()
    assert not core.services["web"].health["hch4"].alive  # unanswered (threshold 1)
    assert core.services["web"].health["hch5"].alive  # never failed for lack of a switch
    clock.t += 1
    e = next(
        pk.parse(m.data) for m in core.tick() if isinstance(m, PacketOut) and pk.parse(m.data).ip_proto == 1
    )
    reply = pk.ethernet(
        core.probe_mac,
        v.host("hch4").mac,
        pk.ETH_IP,
        pk.ipv4("10.0.0.4", core.probe_ip, 1, bytes([0, 0, 0, 0]) + e.icmp_id.to_bytes(2, "big") + bytes(2)),
    )
    core.packet_in(0xC1, 4, reply)
    assert core.services["web"].health["hch4"].alive
