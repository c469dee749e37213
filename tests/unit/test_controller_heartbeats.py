"""The controller consumes the CDN's multicast heartbeats (controller/heartbeats.py) by packet-in.

Fake packet-ins against :class:`ControllerCore` on the fake OpenFlow network of controller/simulate.py:
heartbeats keep a member up, silence withdraws it (OR-combined with the SYN probes), forged or bad
datagrams are ignored and counted, and the copy-to-controller rules leave multicast delivery unchanged.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from contract import mcast_wire as wire
from contract.config import ConfigError
from contract.mcast_wire import Role
from contract.netview import ControlView, NetView, load_view
from controller import packets as pk
from controller.core import ControllerCore
from controller.examples import triangle
from controller.flows import OFPP_CONTROLLER, FlowMod, PacketOut
from controller.simulate import FakeNet, connect_all, ip_packet

VIP, VMAC = "10.0.0.100", "02:cd:1a:00:01:00"
GROUP, PORT = "239.10.0.2", 7401
KEY = b"this run's key"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make_view(control: bool = True, hch5_tree: bool = True, **ctl: object) -> NetView:
    """triangle(): members hch4 (hc1) and hch5 (hc3) multicast heartbeats to GROUP (static trees)."""
    d = triangle().model_dump(mode="json")
    d["multicast_static"].append({"group": GROUP, "source": "hch4", "members": ["hch2", "hch3"]})
    if hch5_tree:
        d["multicast_static"].append({"group": GROUP, "source": "hch5", "members": ["hch2"]})
    if control:
        d["control"] = {"key": KEY.hex(), "miss_limit": 3, **ctl}
    return NetView.model_validate(d)


class Cdn:
    """A core on a fake network, with members that answer probes and send heartbeats."""

    def __init__(self, view: NetView | None = None, wall_us: list[int] | None = None) -> None:
        self.v = view or make_view()
        self.clock = Clock()
        wall = (lambda: wall_us[0]) if wall_us is not None else None
        self.core = ControllerCore(self.v, clock=self.clock, wall_clock_us=wall)
        self.net = FakeNet(self.v)
        connect_all(self.core, self.net)
        self.ts_us = 1_700_000_000_000_000

    def apply(self, out: list) -> list:
        self.net.apply([m for m in out if not isinstance(m, PacketOut)])
        return out

    def datagram(
        self,
        member: str,
        *,
        key: bytes | None = KEY,
        session: int = 2,
        name: str | None = None,
        msg: wire.Message | None = None,
        ts_us: int | None = None,
    ) -> bytes:
        if ts_us is None:
            self.ts_us += 1000
            ts_us = self.ts_us
        h = self.v.host(member)
        msg = msg or wire.Heartbeat(name or member, Role.EDGE, ts_us, 500, str(h.ip), 12.5, 4096, 0.25, 7)
        return wire.encode(msg, session_id=session, sender_id=7, seq=1, key=key)

    def send(self, member: str, payload: bytes, udp_len: int | None = None) -> list:
        """``member`` multicasts ``payload`` to the control group; what reaches the controller goes in."""
        h = self.v.host(member)
        udp = struct.pack("!HHHH", 40000, PORT, udp_len or 8 + len(payload), 0) + payload
        frame = pk.ethernet(pk.multicast_mac(GROUP), h.mac, pk.ETH_IP, pk.ipv4(str(h.ip), GROUP, 17, udp))
        r = self.net.send(member, ip_packet(self.v, member, GROUP, pk.multicast_mac(GROUP), 17, 40000, PORT))
        out = []
        for dpid, port, _ in r.to_controller:
            out += self.apply(self.core.packet_in(dpid, port, frame))
        return out

    def beat(self, member: str, **kw: object) -> list:
        return self.send(member, self.datagram(member, **kw))

    def probe_round(self, refuse: frozenset[str] = frozenset()) -> None:
        """One tick; every member answers its SYN probe with SYN-ACK (or RST if in ``refuse``)."""
        for po in self.apply(self.core.tick()):
            if not isinstance(po, PacketOut):
                continue
            p = pk.parse(po.data)
            if p.ip_proto != 6 or p.ip_dst != VIP:
                continue
            m = next(h for h in self.v.hosts if h.mac == p.eth_dst)
            flags = pk.TCP_RST | pk.TCP_ACK if m.name in refuse else pk.TCP_SYN | pk.TCP_ACK
            data = pk.tcp_packet(m.mac, p.eth_src, VIP, p.ip_src, p.dport, p.sport, 7, p.tcp_seq + 1, flags)
            self.apply(self.core.packet_in(self.v.switch(m.switch).dpid, m.port, data))

    def run(self, seconds: float, beating: set[str], refuse: frozenset[str] = frozenset()) -> None:
        """Advance ``seconds`` in 0.1 s steps, probes answered; ``beating`` members send every 0.5 s."""
        for i in range(round(seconds / 0.1)):
            self.clock.t += 0.1
            if i % 5 == 4:
                for m in sorted(beating):
                    self.beat(m)
            self.probe_round(refuse)

    def reached(self, client: str) -> str | None:
        r = self.net.send(client, ip_packet(self.v, client, VIP, VMAC))
        return r.delivered[0][0] if r.delivered else None

    def member(self, m: str) -> dict:
        return self.core.anycast()["services"]["web"]["members"][m]


def test_heartbeats_keep_members_up_and_report_load() -> None:
    c = Cdn()
    c.run(3.0, {"hch4", "hch5"})
    assert c.reached("hch1") == "hch4" and c.reached("hch3") == "hch5"
    snap = c.core.anycast()
    assert snap["control"]["received"] == 12 and snap["control"]["errors"] == {}
    assert snap["control"]["keyed"] is True and snap["control"]["group"] == GROUP
    m = c.member("hch4")
    assert m["healthy"] and m["heartbeat_alive"] is True and m["heartbeats"] == 6
    assert m["heartbeat_age_ms"] is not None and 0 <= m["heartbeat_age_ms"] <= 500
    assert m["load"] == {"requests_per_s": 12.5, "bytes_served": 4096, "cache_fill": 0.25, "cache_objects": 7}


def test_silence_withdraws_member_and_resuming_restores_it() -> None:
    c = Cdn()
    c.run(2.0, {"hch4", "hch5"})
    c.run(1.4, {"hch5"})  # hch4 silent for 1.4 s < 3 x 500 ms: still in
    assert c.reached("hch1") == "hch4"
    c.run(0.4, {"hch5"})  # silent for 1.8 s: withdrawn although its probes still succeed
    m = c.member("hch4")
    assert not m["healthy"] and m["heartbeat_alive"] is False and m["alive"] is True
    assert "heartbeats stopped" in m["reason"] and m["heartbeat_age_ms"] > 1500
    assert c.reached("hch1") == "hch5" and c.core.anycast()["services"]["web"]["choice"]["hc1"] == "hch5"
    c.beat("hch4")  # one heartbeat brings it back (the probes agree)
    assert c.member("hch4")["healthy"] and c.member("hch4")["reason"] == ""
    assert c.reached("hch1") == "hch4"
    assert any("heartbeats stopped" in e["event"] for e in c.core.topology()["events"])


def test_probes_and_heartbeats_are_or_combined() -> None:
    c = Cdn()
    c.run(1.0, {"hch5"})  # hch4 never heard from: probes alone judge it
    assert c.member("hch4")["healthy"] and c.member("hch4")["heartbeat_age_ms"] is None
    c.run(0.5, {"hch4", "hch5"}, refuse=frozenset({"hch4"}))  # heartbeats fine, process refuses: down
    assert not c.member("hch4")["healthy"] and c.member("hch4")["heartbeat_alive"] is True
    assert c.reached("hch1") == "hch5"
    c.run(1.0, {"hch4", "hch5"})  # probes recover (threshold 2) with heartbeats still coming: back
    assert c.member("hch4")["healthy"] and c.reached("hch1") == "hch4"


def test_forged_and_bad_datagrams_are_ignored_and_counted() -> None:
    c = Cdn()
    c.run(1.0, {"hch4", "hch5"})
    c.run(2.0, {"hch5"})
    assert not c.member("hch4")["healthy"]
    stale = c.datagram("hch4", ts_us=c.ts_us - 10_000)  # a valid heartbeat, older than the last one
    before = c.core.anycast()["control"]["received"]
    c.beat("hch4", key=b"wrong key")  # forged: bad HMAC
    c.beat("hch4", key=None)  # unkeyed where a key is configured
    c.beat("hch4", session=9)
    c.beat("hch5", name="hch4")  # hch5 speaking for hch4
    c.send("hch4", stale)
    c.send("hch4", c.datagram("hch4")[:-3])  # truncated
    c.send("hch4", c.datagram("hch4"), udp_len=4)  # UDP length below its header
    c.send(
        "hch4",
        c.datagram("hch4", msg=wire.Invalidate(1, wire.InvalAction.PURGE, 0, ((wire.Match.EXACT, "/a"),))),
    )
    out = c.core.packet_in(0xC1, 3, b"\x01\x00\x5e")  # not even an Ethernet header
    assert out == [] and c.core.bad_packets == 1
    snap = c.core.anycast()["control"]
    assert snap["received"] == before
    assert snap["errors"] == {
        "auth": 2,
        "wrong_session": 1,
        "sender_mismatch": 1,
        "replay": 1,
        "malformed": 2,
        "not_heartbeat": 1,
    }
    assert not c.member("hch4")["healthy"] and c.reached("hch1") == "hch5"
    c.beat("hch4")  # a genuine heartbeat still works after all that
    assert c.member("hch4")["healthy"] and c.reached("hch1") == "hch4"


def test_only_members_are_copied_and_strangers_are_counted() -> None:
    c = Cdn()
    r = c.net.send("hch1", ip_packet(c.v, "hch1", GROUP, pk.multicast_mac(GROUP), 17, 40000, PORT))
    assert r.to_controller == []  # no copy rule for a host that is no anycast member
    h = c.v.host("hch1")
    payload = c.datagram("hch1")
    udp = struct.pack("!HHHH", 40000, PORT, 8 + len(payload), 0) + payload
    frame = pk.ethernet(pk.multicast_mac(GROUP), h.mac, pk.ETH_IP, pk.ipv4(str(h.ip), GROUP, 17, udp))
    assert c.core.packet_in(0xC1, 3, frame) == []
    assert c.core.anycast()["control"]["errors"] == {"unknown_sender": 1}


@pytest.mark.parametrize("hch5_tree", [True, False])
def test_multicast_delivery_unchanged_by_copy_rules(hch5_tree: bool) -> None:
    plain, copied = Cdn(make_view(False, hch5_tree)), Cdn(make_view(True, hch5_tree))
    for src in [h.name for h in plain.v.hosts]:
        for group, port in ((GROUP, PORT), (GROUP, 9999), ("239.1.1.1", PORT)):
            pkt = ip_packet(plain.v, src, group, pk.multicast_mac(group), 17, 40000, port)
            a, b = plain.net.send(src, pkt), copied.net.send(src, pkt)
            assert sorted(a.delivered) == sorted(b.delivered), (src, group, port)
            assert not a.loop and not b.loop and a.to_controller == []
            copy = group == GROUP and port == PORT and src in ("hch4", "hch5")
            assert len(b.to_controller) == (1 if copy else 0), (src, group, port)
    d = {
        h: sorted(
            x
            for x, _ in plain.net.send(
                h, ip_packet(plain.v, h, GROUP, "01:00:5e:0a:00:02", 17, 1, PORT)
            ).delivered
        )
        for h in ("hch4", "hch5")
    }
    assert d["hch4"] == ["hch2", "hch3"] and d["hch5"] == (
        ["hch2", "hch3"] if hch5_tree else []
    )  # static members are per group
    assert plain.net.errors() == [] and copied.net.errors() == []
    # the copy rules are the only difference in the switches' tables
    extra = {(dpid, k) for dpid, s in copied.net.switches.items() for k in s.flows} - {
        (dpid, k) for dpid, s in plain.net.switches.items() for k in s.flows
    }
    assert {(dpid, k[1]) for dpid, k in extra} == {(0xC1, 550), (0xC3, 550)}
    for dpid, k in extra:
        assert copied.net.switches[dpid].flows[k].actions[-1].port == OFPP_CONTROLLER


def test_withdrawal_by_silence_deletes_affinity_flows() -> None:
    c = Cdn(make_view(True))
    c.apply(c.core.set_mode("affinity"))
    c.run(1.0, {"hch4", "hch5"})
    c.clock.t += 5.0
    out = c.core.tick()
    dels = [
        m
        for m in out
        if isinstance(m, FlowMod) and m.command == "delete" and m.entry.cookie >> 40 & 0xFF == 1
    ]
    assert dels and not c.member("hch4")["healthy"] and not c.member("hch5")["healthy"]


def test_disconnected_switch_is_not_judged() -> None:
    c = Cdn()
    c.run(1.0, {"hch4", "hch5"})
    c.core.switch_disconnected(0xC1)  # hch4's switch: its heartbeats cannot reach us
    c.clock.t += 10.0
    c.core.tick()
    assert c.member("hch4")["heartbeat_alive"] is True and c.member("hch5")["heartbeat_alive"] is False
    c.apply(c.core.switch_connected(0xC1))
    c.clock.t += 1.0
    c.core.tick()
    assert c.member("hch4")["heartbeat_alive"] is True  # a fresh window after reconnecting


def test_control_view_validation_and_defaults(tmp_path: Path) -> None:
    v = make_view(True)
    assert v.control is not None and v.control.key_bytes == KEY and v.control.session_id == 2
    assert str(v.control.group) == GROUP and v.control.port == PORT and v.control.interval_ms is None
    d = v.model_dump(mode="json")
    for bad, field in (
        ({"group": "10.0.0.9"}, "control.group"),
        ({"key": "xyz"}, "key"),
        ({"miss_limit": 0}, "miss_limit"),
        ({"bogus": 1}, "bogus"),
    ):
        p = tmp_path / "view.json"
        p.write_text(json.dumps({**d, "control": {**d["control"], **bad}}))
        with pytest.raises(ConfigError, match=field):
            load_view(p)
    off = Cdn(make_view(False))
    snap = off.core.anycast()
    assert "control" not in snap and snap["services"]["web"]["members"]["hch4"]["heartbeat_age_ms"] is None


def test_view_interval_overrides_advertised_interval() -> None:
    c = Cdn(make_view(True, interval_ms=100))  # 3 x 100 ms although heartbeats say 500 ms
    c.run(1.0, {"hch4", "hch5"})
    c.run(0.4, {"hch5"})
    assert not c.member("hch4")["healthy"]


def test_builder_shares_the_key_with_the_services(tmp_path: Path) -> None:
    from testbed.net.build import BuildOptions, CdnNet
    from testbed.net.launch import CdnOptions, CdnServices
    from testbed.net.spec import load_topology

    topo = load_topology("mini")  # parsed only: nothing is built
    cn = CdnNet(topo, BuildOptions(run_dir=tmp_path, extra={"control": {"miss_limit": 4}}))
    assert cn.mcast.key and cn.control is not None
    ctl = ControlView.model_validate(cn.control)
    assert ctl.key_bytes == cn.mcast.key.encode() and ctl.miss_limit == 4
    assert (str(ctl.group), ctl.port, ctl.session_id) == (GROUP, PORT, 2)
    svc = CdnServices(cn, CdnOptions(multicast=True))
    assert svc.mcast is cn.mcast
    assert svc.edge_config("e1")["control"]["key"] == cn.mcast.key
    assert CdnNet(topo, BuildOptions(run_dir=tmp_path)).control is None


def test_the_controller_and_the_edges_read_one_control_session(tmp_path: Path) -> None:
    """Moving the control channel (``extra["control"]``: port, group, session, key) moves it for the edges
    and the listening services too: one plan, so the controller cannot listen where no edge sends."""
    from testbed.net.build import BuildOptions, CdnNet
    from testbed.net.launch import CdnOptions, CdnServices
    from testbed.net.spec import load_topology

    topo = load_topology("mini")
    moved = {"port": 7999, "group": "239.10.9.9", "session_id": 7, "key": "k" * 16}
    cn = CdnNet(topo, BuildOptions(run_dir=tmp_path, extra={"control": moved}))
    ctl = ControlView.model_validate(cn.control)
    assert (str(ctl.group), ctl.port, ctl.session_id, ctl.key_bytes) == ("239.10.9.9", 7999, 7, b"k" * 16)
    svc = CdnServices(cn, CdnOptions(multicast=True))
    sent = svc.edge_config("e1")["control"]
    assert (sent["group"]["group"], sent["group"]["port"], sent["session_id"], sent["key"]) == (
        "239.10.9.9", 7999, 7, "k" * 16)
    heard = svc.redirector_config("redir")["control"]
    assert (heard["group"]["group"], heard["group"]["port"], heard["session_id"]) == ("239.10.9.9", 7999, 7)
    # the ingest session keeps its own group, port and id
    ingest = svc.edge_config("e1")["ingest"]
    assert (ingest["group"]["group"], ingest["group"]["port"], ingest["session_id"]) == ("239.1.1.1", 7400, 1)


def test_a_recording_replayed_to_a_controller_that_just_started_does_not_revive_the_member() -> None:
    """No last heartbeat to compare with: the bound against the controller's wall clock drops it."""
    wall = [1_700_000_000_000_000 + 3600 * 10**6]  # an hour after the recording was made
    c = Cdn(wall_us=wall)
    recording = c.datagram("hch4", ts_us=1_700_000_000_000_000)
    c.ts_us = wall[0] - 10**6  # the live members' heartbeats are sent now
    c.run(1.0, {"hch5"}, refuse=frozenset({"hch4"}))  # hch4 is dead: probes refused, never heard
    c.send("hch4", recording)
    assert c.core.anycast()["control"]["errors"] == {"stale": 1}
    assert not c.member("hch4")["healthy"] and c.reached("hch1") == "hch5"
    before = c.core.anycast()["control"]["received"]
    c.send("hch4", c.datagram("hch4", ts_us=wall[0] - 200_000))  # a heartbeat sent 0.2 s ago counts
    assert c.core.anycast()["control"]["received"] == before + 1
