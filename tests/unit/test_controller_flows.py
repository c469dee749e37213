"""Flow/group mod data objects, diffing, the fake flow table, packet builders, and the Ryu translation."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether

from controller import packets as pk
from controller.core import ControllerCore, derive_probe_ip
from controller.examples import triangle
from controller.flows import (
    COOKIE_NS,
    TABLE_FORWARD,
    Bucket,
    FlowEntry,
    FlowMod,
    GroupAction,
    GroupMod,
    Output,
    PacketOut,
    SetField,
    SwitchState,
    diff_switch,
    match,
    wipe,
)
from controller.simulate import FakeSwitch


def test_match_checks_prerequisites() -> None:
    assert match(ipv4_dst="10.0.0.1", eth_type=0x0800) == (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.1"))
    with pytest.raises(ValueError, match="needs eth_type"):
        match(ipv4_dst="10.0.0.1")
    with pytest.raises(ValueError, match="needs ip_proto"):
        match(eth_type=0x0800, tcp_dst=80)
    with pytest.raises(ValueError, match="unknown"):
        match(vlan=3)


def _state(*flows: FlowEntry, groups: dict[int, GroupMod] | None = None) -> SwitchState:
    return SwitchState({f.key: f for f in flows}, groups or {})


def test_diff_turns_old_into_new_in_safe_order() -> None:
    a = FlowEntry(1, 100, match(eth_type=0x0800, ipv4_dst="10.0.0.1"), (Output(1),))
    b = FlowEntry(1, 100, match(eth_type=0x0800, ipv4_dst="10.0.0.2"), (Output(2),))
    b2 = FlowEntry(1, 100, b.match, (Output(3),))
    g = GroupMod(1, "add", 7, "all", (Bucket((Output(1),)),))
    c = FlowEntry(0, 500, match(eth_type=0x0800, ipv4_dst="239.1.1.1"), (GroupAction(7),))
    old, new = _state(a, b), _state(b2, c, groups={7: g})
    sw = FakeSwitch(1)
    for m in diff_switch(1, SwitchState(), old):
        sw.apply(m)
    msgs = diff_switch(1, old, new)
    kinds = [(type(m).__name__, m.command) for m in msgs]
    assert kinds[0] == ("GroupMod", "add")  # the group exists before the flow pointing at it
    assert ("FlowMod", "delete_strict") in kinds
    for m in msgs:
        sw.apply(m)
    assert sw.flows == new.flows and set(sw.groups) == {7} and not sw.errors
    # removing the group: flow deleted first, group last
    msgs = diff_switch(1, new, _state(b2))
    assert [(type(m).__name__, m.command) for m in msgs] == [
        ("FlowMod", "delete_strict"),
        ("GroupMod", "delete"),
    ]
    assert diff_switch(1, new, new) == []


def test_wipe_deletes_only_our_cookie_namespace() -> None:
    sw = FakeSwitch(1)
    ours = FlowEntry(0, 10, match(eth_type=0x0806), (Output(1),))
    lldp = FlowEntry(0, 0xFFFF, match(eth_type=0x88CC), (Output(2),), cookie=0)
    for e in (ours, lldp):
        sw.apply(FlowMod(1, "add", e))
    sw.apply(GroupMod(1, "add", 3, "all", ()))
    for m in wipe(1):
        sw.apply(m)
    assert list(sw.flows.values()) == [lldp] and sw.groups == {}


def test_fake_switch_reports_missing_groups() -> None:
    sw = FakeSwitch(1)
    sw.apply(FlowMod(1, "add", FlowEntry(0, 1, (), (GroupAction(9),))))
    sw.apply(GroupMod(1, "modify", 4, "all", ()))
    assert len(sw.errors) == 2


def test_packet_builders_are_valid_per_scapy() -> None:
    for raw in (
        pk.tcp_packet(
            "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 1234, 80, 5, 0, pk.TCP_SYN
        ),
        pk.icmp_echo("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 77, 1),
        pk.igmp_query("02:00:00:00:00:01", "10.0.0.254"),
    ):
        e = Ether(raw)
        ref = e.copy()
        del ref[IP].chksum
        if TCP in ref:
            del ref[TCP].chksum
        if ICMP in ref:
            del ref[ICMP].chksum
        assert bytes(Ether(bytes(ref))) == raw  # scapy computes the same checksums
    arp = Ether(pk.arp_reply("02:00:00:00:00:05", "10.0.0.5", "02:00:00:00:00:01", "10.0.0.1"))
    assert (arp[ARP].op, arp[ARP].psrc, arp[ARP].hwsrc, arp.dst) == (
        2,
        "10.0.0.5",
        "02:00:00:00:00:05",
        "02:00:00:00:00:01",
    )
    p = pk.parse(
        pk.tcp_packet(
            "02:00:00:00:00:01",
            "02:00:00:00:00:02",
            "10.0.0.1",
            "10.0.0.2",
            1234,
            80,
            5,
            9,
            pk.TCP_SYN | pk.TCP_ACK,
        )
    )
    assert (p.sport, p.dport, p.tcp_seq, p.tcp_ack, p.tcp_flags) == (1234, 80, 5, 9, 0x12)
    assert pk.multicast_mac("239.129.2.3") == "01:00:5e:01:02:03"


def test_probe_ip_is_derived_on_link_and_unused() -> None:
    v = triangle()
    assert derive_probe_ip(v) == "10.0.0.254"
    data = v.model_dump(mode="json")
    data["hosts"][0]["ip"] = "10.0.0.254"
    from contract.netview import NetView

    assert derive_probe_ip(NetView.model_validate(data)) == "10.0.0.253"


def test_to_ryu_translation_serializes() -> None:
    adapter = pytest.importorskip("controller.ryu_adapter")
    from controller.flows import to_ryu

    class DP:
        ofproto = adapter.ofproto_v1_3
        ofproto_parser = adapter.ofproto_v1_3_parser
        id = 0xC1

    core = ControllerCore(triangle())
    msgs = core.switch_connected(0xC1) + [
        FlowMod(
            0xC1,
            "add",
            FlowEntry(
                0,
                700,
                match(eth_type=0x0800, ipv4_dst="10.0.0.100", ip_proto=6, tcp_src=5),
                (SetField("eth_dst", "02:00:00:00:00:04"),),
                goto=TABLE_FORWARD,
                cookie=COOKIE_NS | 5,
                idle_timeout=30,
            ),
        ),
        GroupMod(0xC1, "add", 3, "all", (Bucket((Output(1),)), Bucket((Output(2),)))),
        PacketOut(0xC1, b"\x00" * 60, (SetField("eth_dst", "02:00:00:00:00:04"), Output(0xFFFFFFF9)), 3),
    ]
    kinds = set()
    for m in msgs:
        r = to_ryu(DP(), m)
        r.set_xid(1)
        r.serialize()
        assert len(r.buf) >= 16
        kinds.add(type(r).__name__)
    assert kinds == {
        "OFPFlowMod",
        "OFPGroupMod",
        "OFPPacketOut",
        "OFPFlowStatsRequest",
        "OFPGroupDescStatsRequest",
    }
