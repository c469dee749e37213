"""Unicast routing: shortest paths by configured delay, consistent next hops, no loops, rerouting."""

from __future__ import annotations

import itertools
import json

import pytest

from contract.config import ConfigError
from contract.netview import NetView, load_view
from controller.core import ControllerCore
from controller.examples import random_view, triangle
from controller.flows import cookie_generation
from controller.graph import SwitchGraph, compare_links
from controller.routing import compute_routes, host_path
from controller.simulate import FakeNet, answer_state, connect_all, ip_packet, normalised_tables, port_event


def _all_pairs_ok(view: NetView, net: FakeNet, skip: set[str] = frozenset()) -> None:
    for a, b in itertools.permutations([h.name for h in view.hosts], 2):
        if a in skip or b in skip:
            continue
        hb = view.host(b)
        r = net.send(a, ip_packet(view, a, str(hb.ip), hb.mac))
        assert not r.loop, f"{a}->{b} loops"
        assert r.hosts == [b], f"{a}->{b} delivered to {r.hosts}"


def test_triangle_shortest_paths_follow_delay() -> None:
    v = triangle()
    r = compute_routes(SwitchGraph(v).graph())
    assert r.dist["hc1"]["hc3"] == 10  # via hc2 (5+5) beats the direct 12 ms link
    assert r.path["hc1"]["hc3"] == ["hc1", "hc2", "hc3"]
    assert host_path(v, r, "hch1", "hch3") == ["hc1", "hc2", "hc3"]
    assert r.port["hc1"]["hc3"] == 1


def test_every_host_reaches_every_host_on_cycle() -> None:
    v = triangle()
    core, net = ControllerCore(v), FakeNet(v)
    connect_all(core, net)
    _all_pairs_ok(v, net)
    assert not net.errors()


def test_arp_is_answered_by_controller_never_flooded() -> None:
    from controller import packets as pk

    v = triangle()
    core, net = ControllerCore(v), FakeNet(v)
    connect_all(core, net)
    h1 = v.host("hch1")
    r = net.send("hch1", {"eth_src": h1.mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806})
    assert r.delivered == [] and len(r.to_controller) == 1
    dpid, port, _ = r.to_controller[0]
    req = pk.ethernet(
        "ff:ff:ff:ff:ff:ff",
        h1.mac,
        pk.ETH_ARP,
        bytes.fromhex("0001080006040001")
        + pk.mac_bytes(h1.mac)
        + pk.ip_bytes("10.0.0.1")
        + bytes(6)
        + pk.ip_bytes("10.0.0.3"),
    )
    (out,) = core.packet_in(dpid, port, req)
    rep = pk.parse(out.data)
    assert (rep.arp_op, rep.arp_sha, rep.arp_spa, rep.eth_dst) == (2, v.host("hch3").mac, "10.0.0.3", h1.mac)
    assert out.actions[0].port == port
    # the VIP is answered with the virtual MAC; unknown addresses are not answered
    vip = req[:-4] + pk.ip_bytes("10.0.0.100")
    assert pk.parse(core.packet_in(dpid, port, vip)[0].data).arp_sha == "02:cd:1a:00:01:00"
    assert core.packet_in(dpid, port, req[:-4] + pk.ip_bytes("10.0.0.77")) == []


def test_malformed_packet_in_is_dropped_and_counted() -> None:
    core = ControllerCore(triangle())
    assert core.packet_in(0xC1, 3, b"\x01\x02") == []
    assert core.packet_in(0xC1, 3, bytes(14) + b"\x45") == []
    assert core.bad_packets == 1  # the second is an unknown ethertype 0x0000: ignored, not malformed
    assert core.packet_in(0xC1, 3, bytes(12) + b"\x08\x00" + b"\x45\x00\x00") == []
    assert core.bad_packets == 2


def test_link_down_reroutes_and_link_up_restores() -> None:
    v = triangle()
    core, net = ControllerCore(v), FakeNet(v)
    connect_all(core, net)
    port_event(core, net, "hc1", "hc2", up=False)
    _all_pairs_ok(v, net)
    assert core.routes.path["hc1"]["hc2"] == ["hc1", "hc3", "hc2"]
    port_event(core, net, "hc2", "hc3", up=False)  # now a line hc2 - hc1 - hc3 ... hc2 is cut off
    assert not core.routes.reachable("hc1", "hc2")
    _all_pairs_ok(v, net, skip={"hch2"})
    port_event(core, net, "hc1", "hc2", up=True)
    port_event(core, net, "hc2", "hc3", up=True)
    _all_pairs_ok(v, net)
    assert core.routes.path["hc1"]["hc3"] == ["hc1", "hc2", "hc3"]
    assert not net.errors()


@pytest.mark.parametrize("seed", range(8))
def test_random_cyclic_graphs_with_failures(seed: int) -> None:
    v = random_view(seed)
    core, net = ControllerCore(v), FakeNet(v)
    connect_all(core, net)
    _all_pairs_ok(v, net)
    g = SwitchGraph(v).graph()
    import networkx as nx

    # fail links one by one while the graph stays connected; every pair must still be delivered
    for link in v.links:
        g2 = g.copy()
        g2.remove_edge(link.a, link.b)
        if not nx.is_connected(g2):
            continue
        port_event(core, net, link.a, link.b, up=False)
        _all_pairs_ok(v, net)
        port_event(core, net, link.a, link.b, up=True)
    assert not net.errors()


def test_reconnect_reinstalls_same_state_under_a_new_generation() -> None:
    v = triangle()
    core, net = ControllerCore(v), FakeNet(v)
    connect_all(core, net)
    before = normalised_tables(net)
    old_gen = core.gen[0xC2]
    core.switch_disconnected(0xC2)
    net.apply(core.switch_connected(0xC2))
    answer_state(core, net)
    assert normalised_tables(net) == before
    assert core.gen[0xC2] != old_gen
    assert {cookie_generation(e.cookie) for e in net.switches[0xC2].flows.values()} == {core.gen[0xC2]}
    assert {g >> 16 for g in net.switches[0xC2].groups} == {core.gen[0xC2]}  # hc2 is on the static tree
    assert not net.errors()
    assert core.switch_connected(0x999) == []  # unknown switch: ignored


def test_view_validation_names_field(tmp_path) -> None:
    data = triangle().model_dump(mode="json")
    data["links"][0]["b"] = "nope"
    p = tmp_path / "view.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown switch 'nope'"):
        load_view(p)
    data = triangle().model_dump(mode="json")
    data["hosts"][0]["mac"] = "zz"
    data["extra"] = 1
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        load_view(p)
    assert "hosts[0].mac" in str(e.value) and "extra" in str(e.value)
    p.write_text(json.dumps(triangle().model_dump(mode="json")))
    assert load_view(p) == triangle()


def test_lldp_cross_check_reports_mismatches() -> None:
    v = triangle()
    seen = set()
    for link in v.links[:2]:
        a, b = v.switch(link.a).dpid, v.switch(link.b).dpid
        seen |= {(a, link.a_port, b, link.b_port), (b, link.b_port, a, link.a_port)}
    seen.add((0xC1, 9, 0xC2, 9))
    out = compare_links(v, seen)
    assert any("hc3:2 -> hc1:2 not seen" in m for m in out)
    assert any("LLDP found link hc1:9 -> hc2:9" in m for m in out)
    assert len(out) == 3
    core = ControllerCore(v)
    assert core.set_lldp_links(seen) == out and core.topology()["lldp_mismatches"] == out


def test_link_is_up_only_when_both_ports_are_up() -> None:
    g = SwitchGraph(triangle())
    assert g.set_link_state("hc1", 1, up=False) is True
    assert g.set_link_state("hc2", 1, up=False) is False  # other end: no change
    assert g.set_link_state("hc2", 1, up=True) is False  # one end still down
    assert not g.graph().has_edge("hc1", "hc2")
    assert g.set_link_state("hc1", 1, up=True) is True
    assert g.graph().has_edge("hc1", "hc2")
    assert g.set_link_state("hc1", 3, up=False) is False  # a host port is not a link
