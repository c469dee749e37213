"""Controller restart / switch reconnect: cookie generations instead of a flush (controller/flows.py).

A new controller (or a new connection) installs its state over what the switch holds, then deletes the
other generations' leftovers. Checked on the fake network message by message: at no point between two
OpenFlow messages does any host pair, the anycast VIP or the static multicast group stop working.
"""

from __future__ import annotations

import itertools
import socket

import pytest

from contract.netview import NetView
from controller import packets as pk
from controller.core import ControllerCore
from controller.examples import triangle
from controller.flows import (
    COOKIE_NS,
    GEN_MAX,
    GEN_MIN,
    FlowEntry,
    FlowMod,
    GroupMod,
    Message,
    Output,
    StateRequest,
    affinity_cookie,
    cookie_generation,
    group_id,
    match,
    next_generation,
    proactive_cookie,
    stale_cleanup,
)
from controller.simulate import FakeNet, connect_all, ip_packet, normalised_tables

VIP, VMAC = "10.0.0.100", "02:cd:1a:00:01:00"


def forwarding_ok(v: NetView, net: FakeNet) -> None:
    """All host pairs, the VIP from every client, and the static (hch1, 239.1.1.1) -> hch3 exactly once."""
    for a, b in itertools.permutations([h.name for h in v.hosts], 2):
        hb = v.host(b)
        assert net.send(a, ip_packet(v, a, str(hb.ip), hb.mac)).hosts == [b], f"{a}->{b}"
    for c in ("hch1", "hch2", "hch3"):
        assert len(net.send(c, ip_packet(v, c, VIP, VMAC)).delivered) == 1, f"{c}->VIP"
    mc = ip_packet(v, "hch1", "239.1.1.1", "01:00:5e:01:01:01", proto=17)
    assert net.send("hch1", mc).hosts == ["hch3"]


def apply_one_by_one(v: NetView, net: FakeNet, msgs: list[Message], check: bool = True) -> None:
    for m in msgs:
        net.apply([m])
        if check:
            forwarding_ok(v, net)


def test_restart_has_no_window_without_forwarding() -> None:
    v = triangle()
    old, net = ControllerCore(v, generation=100), FakeNet(v)
    connect_all(old, net)
    forwarding_ok(v, net)
    before = normalised_tables(net)
    # the old controller dies (the switches keep their tables); a new one connects every switch
    new = ControllerCore(v, generation=200)
    for d in net.switches:
        msgs = new.switch_connected(d)
        assert StateRequest(d, "flows") in msgs and StateRequest(d, "groups") in msgs
        assert not [m for m in msgs if isinstance(m, FlowMod) and m.command != "add"]  # no delete at all
        apply_one_by_one(v, net, msgs)
    for d, what, ids in net.state_replies():
        apply_one_by_one(v, net, new.switch_state(d, what, ids))
    assert not net.errors()
    assert normalised_tables(net) == before
    for d, sw in net.switches.items():
        assert {cookie_generation(e.cookie) for e in sw.flows.values()} == {new.gen[d]}
        assert all(g >> 16 == new.gen[d] for g in sw.groups)
    assert all(s["synced"] for s in new.topology()["switches"])


def test_restart_removes_rules_the_new_controller_does_not_want() -> None:
    """The old controller had a drained member and an IGMP-joined group; the new one knows neither, so
    its tables must end up exactly as a fresh install (stale rules and groups deleted)."""
    v = triangle()
    old, net = ControllerCore(v, generation=7), FakeNet(v)
    connect_all(old, net)
    net.apply(old.set_drained("web", "hch4", True))
    h2 = v.host("hch2")
    report = bytes([0x16, 0, 0, 0]) + socket.inet_aton("239.9.9.9")
    frame = pk.ethernet(
        pk.multicast_mac("239.9.9.9"), h2.mac, pk.ETH_IP, pk.ipv4(str(h2.ip), "239.9.9.9", 2, report, ttl=1)
    )
    net.apply(old.packet_in(0xC2, h2.port, frame))
    groups_before = sum(len(s.groups) for s in net.switches.values())
    assert old.multicast()["groups"].keys() == {"239.1.1.1", "239.9.9.9"}
    new = ControllerCore(v, generation=8)
    connect_all(new, net)
    fresh, fresh_net = ControllerCore(v, generation=9), FakeNet(v)
    connect_all(fresh, fresh_net)
    assert normalised_tables(net) == normalised_tables(fresh_net)
    assert sum(len(s.groups) for s in net.switches.values()) < groups_before
    assert not net.errors()
    forwarding_ok(v, net)


def test_switch_state_waits_for_both_replies_and_ignores_strangers() -> None:
    v = triangle()
    core, net = ControllerCore(v, generation=GEN_MAX), FakeNet(v)
    net.apply(core.switch_connected(0xC1))
    stale = proactive_cookie(5)
    assert core.switch_state(0xC1, "flows", {stale}) == []  # groups not in yet
    assert not core.topology()["switches"][0]["synced"]
    out = core.switch_state(0xC1, "groups", {group_id(5, 1)})
    assert [type(m).__name__ for m in out] == ["FlowMod", "GroupMod"]
    assert core.topology()["switches"][0]["synced"]
    assert core.switch_state(0xC1, "groups", {1}) == []  # not pending any more
    assert core.switch_state(0x999, "flows", set()) == []  # unknown switch
    assert core.gen[0xC1] == GEN_MAX
    net.apply(core.switch_connected(0xC2))
    assert core.gen[0xC2] == GEN_MIN  # wrapped


def test_stale_cleanup_only_touches_other_generations_of_ours() -> None:
    gen = 0x42
    cookies = {
        proactive_cookie(gen),  # ours, current
        proactive_cookie(0x41),  # previous run
        COOKIE_NS,  # a controller from before generations
        affinity_cookie(0, 1),  # per-flow affinity rules: kept (they idle out)
        0,  # not ours (e.g. LLDP)
    }
    groups = {group_id(gen, 1), group_id(0x41, 1), group_id(0x41, 2), 3}
    out = stale_cleanup(1, gen, cookies, groups)
    deleted = {m.entry.cookie for m in out if isinstance(m, FlowMod)}
    assert deleted == {proactive_cookie(0x41), COOKIE_NS}
    assert all(m.cookie_mask == 2**64 - 1 and m.command == "delete" for m in out if isinstance(m, FlowMod))
    assert {m.group_id for m in out if isinstance(m, GroupMod)} == {group_id(0x41, 1), group_id(0x41, 2), 3}
    # flows first (a group delete also removes the flows pointing at it)
    kinds = [type(m).__name__ for m in out]
    assert kinds == sorted(kinds, key=lambda k: k != "FlowMod")


def test_cleanup_on_a_fake_switch_keeps_affinity_and_foreign_flows() -> None:
    v = triangle()
    net = FakeNet(v)
    sw = net.switches[0xC1]
    lldp = FlowEntry(0, 0xFFFF, match(eth_type=0x88CC), (Output(0xFFFFFFFD),), cookie=0)
    aff = FlowEntry(0, 700, match(eth_type=0x0800, ipv4_dst=VIP), (Output(4),), cookie=affinity_cookie(0, 0))
    old = FlowEntry(0, 5, match(eth_type=0x0800, ipv4_dst="10.0.0.77"), (Output(1),), cookie=COOKIE_NS)
    net.apply([FlowMod(0xC1, "add", e) for e in (lldp, aff, old)])
    core = ControllerCore(v, generation=3)
    connect_all(core, net)
    assert lldp in sw.flows.values() and aff in sw.flows.values() and old not in sw.flows.values()
    forwarding_ok(v, net)


def test_generation_and_group_id_ranges() -> None:
    assert next_generation(GEN_MAX) == GEN_MIN and next_generation(GEN_MIN) == GEN_MIN + 1
    assert group_id(GEN_MAX, 0xFFFF) < 0xFFFFFF00  # OFPG_MAX
    for bad in ((0, 1), (GEN_MAX + 1, 1), (1, 0), (1, 0x10000)):
        with pytest.raises(ValueError):
            group_id(*bad)
    with pytest.raises(ValueError):
        ControllerCore(triangle(), generation=0)
    a, b = ControllerCore(triangle()), ControllerCore(triangle())
    assert GEN_MIN <= a._gen <= GEN_MAX and GEN_MIN <= b._gen <= GEN_MAX
