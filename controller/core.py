"""The whole controller as a pure state machine (faucet's "valve" style): events in, OpenFlow messages out.

:class:`ControllerCore` owns the view, the link states, anycast health, IGMP state and what each switch
holds; every method takes an event (switch connected, port status, packet-in bytes, timer tick, REST
command) and returns the :mod:`controller.flows` messages to send. Proactive state is recomputed from
scratch after each change and diffed against what each switch holds, so only changed rules are sent.
The Ryu app (controller/app.py) only translates events and messages; tests drive this class directly
against fake flow tables (controller/simulate.py).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import struct
import time
from collections import deque
from typing import Any

from contract.netview import NetView
from controller import packets as pk
from controller.anycast import ServiceState, affinity_flow, anycast_flows, choose
from controller.flows import (
    COOKIE_AFFINITY,
    COOKIE_NS_MASK,
    ETH_ARP,
    ETH_IP,
    GEN_MAX,
    GEN_MIN,
    OFPP_CONTROLLER,
    OFPP_TABLE,
    PROTO_ICMP,
    PROTO_IGMP,
    PROTO_UDP,
    TABLE_CLASSIFY,
    TABLE_FORWARD,
    FlowEntry,
    FlowMod,
    Message,
    Output,
    PacketOut,
    SetField,
    StateRequest,
    SwitchState,
    affinity_cookie,
    diff_switch,
    match,
    next_generation,
    stale_cleanup,
    stamp,
)
from controller.graph import SwitchGraph, compare_links
from controller.heartbeats import BeatTransition, HeartbeatMonitor, copy_flows, heartbeat_sources
from controller.liveness import Liveness, Transition
from controller.multicast import (
    IgmpQuery,
    IgmpSnooper,
    Tree,
    all_trees,
    base_flows,
    parse_igmp,
    tree_flows,
)
from controller.routing import compute_routes, unicast_flows

log = logging.getLogger(__name__)

PRIO_PUNT = 1000
AFFINITY_ALL_MASK = COOKIE_NS_MASK | (0xFF << 40)


def derive_probe_ip(view: NetView) -> str:
    """An unused address on the hosts' subnet: the last-but-one address of the smallest network (at
    least a /24) holding every host address and VIP."""
    addrs = [h.ip for h in view.hosts] + [a.vip for a in view.anycast]
    if not addrs:
        return "10.255.255.254"
    lo, hi = int(min(addrs)), int(max(addrs))
    plen = 24
    while plen > 0 and (lo >> (32 - plen)) != (hi >> (32 - plen)):
        plen -= 1
    net = ipaddress.IPv4Network((lo >> (32 - plen) << (32 - plen), plen))
    used = {int(a) for a in addrs}
    cand = int(net.broadcast_address) - 1
    while cand in used:
        cand -= 1
    return str(ipaddress.IPv4Address(cand))


class ControllerCore:
    """``generation``: the first cookie generation (default: random, so a restarted controller differs
    from its predecessor); every switch connection takes the next one."""

    def __init__(
        self,
        view: NetView,
        clock: Any = time.monotonic,
        generation: int | None = None,
        wall_clock_us: Any = None,
    ) -> None:
        """``clock``: seconds for timeouts (monotonic); ``wall_clock_us``: the wall clock in microseconds,
        to bound heartbeats' age (None: unbounded, as in the pure tests; the app passes the real one)."""
        self.view = view
        self.clock = clock
        self.sg = SwitchGraph(view)
        self.routes = compute_routes(self.sg.graph())
        self.mode: str = view.anycast_mode
        self.services = {a.name: ServiceState(a, i) for i, a in enumerate(view.anycast)}
        self.snooper = IgmpSnooper(view.igmp_query_interval_s, view.igmp_response_s, view.igmp_robustness)
        self.liveness = Liveness()
        for a in view.anycast:
            for m in a.members:
                self.liveness.add(a.name, m, a.probe)
        self.probe_ip = str(view.probe_ip) if view.probe_ip else derive_probe_ip(view)
        self.probe_mac = view.probe_mac.lower()
        self.sw_by_dpid = {s.dpid: s.name for s in view.switches}
        self.host_at = {(h.switch, h.port): h for h in view.hosts}
        self.arp_table: dict[str, str] = {str(h.ip): h.mac.lower() for h in view.hosts}
        for a in view.anycast:
            self.arp_table[str(a.vip)] = a.vmac.lower()
        self.arp_table[self.probe_ip] = self.probe_mac
        self.connected: set[int] = set()
        self._want: dict[str, SwitchState] | None = None  # desired() as of the last sync
        self.installed: dict[int, SwitchState] = {}  # as stamped with the switch's generation
        self.gen: dict[int, int] = {}  # dpid -> generation of its current connection
        self.pending: dict[int, dict[str, set[int]]] = {}  # dpid -> state replies received so far
        self._gen = generation if generation is not None else random.SystemRandom().randint(GEN_MIN, GEN_MAX)
        if not GEN_MIN <= self._gen <= GEN_MAX:
            raise ValueError(f"generation must be in [{GEN_MIN}, {GEN_MAX}]")
        self.group_ids: dict[tuple[str, str], int] = {}
        self.events: deque[tuple[float, str]] = deque(maxlen=200)
        self.lldp_mismatches: list[str] = []
        self.lldp_checked = False
        self.bad_packets = 0
        self._probe_seq = random.Random(4)
        self.heartbeats: HeartbeatMonitor | None = None
        if view.control is not None:
            members = {m: str(view.host(m).ip) for m in heartbeat_sources(view)}
            self.heartbeats = HeartbeatMonitor(view.control, members, wall_clock_us)

    # ----------------------------------------------------------------- helpers
    def note(self, text: str) -> None:
        self.events.append((time.time(), text))
        log.info("%s", text)

    def _gid(self, source: str, group: str) -> int:
        return self.group_ids.setdefault((source, group), len(self.group_ids) + 1)

    def desired(self) -> dict[str, SwitchState]:
        """What every switch should hold (proactive rules and groups)."""
        st = {s.name: SwitchState() for s in self.view.switches}

        def add(s: str, e: FlowEntry) -> None:
            st[s].flows[e.key] = e

        punts = [
            FlowEntry(TABLE_CLASSIFY, PRIO_PUNT, match(eth_type=ETH_ARP), (Output(OFPP_CONTROLLER),)),
            FlowEntry(
                TABLE_CLASSIFY,
                PRIO_PUNT,
                match(eth_type=ETH_IP, ipv4_dst=self.probe_ip),
                (Output(OFPP_CONTROLLER),),
            ),
            *base_flows(),
            FlowEntry(TABLE_CLASSIFY, 0, (), goto=TABLE_FORWARD),
            FlowEntry(TABLE_FORWARD, 0, ()),  # table-miss: drop
        ]
        for s in st:
            for e in punts:
                add(s, e)
        for s, fl in unicast_flows(self.view, self.routes).items():
            for e in fl:
                add(s, e)
        for svc in self.services.values():
            for s, fl in anycast_flows(self.view, self.routes, svc, self.mode).items():
                for e in fl:
                    add(s, e)
        trees: dict[tuple[str, str], tuple[Tree, int]] = {}
        for tree in all_trees(self.view, self.routes, self.snooper):
            gid = self._gid(tree.source, tree.group)
            trees[(tree.source, tree.group)] = (tree, gid)
            flows, groups = tree_flows(self.view, tree, gid)
            for s, fl in flows.items():
                for e in fl:
                    add(s, e)
            for s, g in groups.items():
                st[s].groups[gid] = g
        if self.view.control is not None:
            for s, fl in copy_flows(self.view, self.view.control, trees).items():
                for e in fl:
                    add(s, e)
        return st

    def sync(self) -> list[Message]:
        """Diff desired against installed state on every connected switch.

        Every change of what :meth:`desired` reads (routes, anycast health, memberships, mode) is followed
        by a call of this, so the desired state it computes is kept for :meth:`_sync_switch`."""
        self._want = want = self.desired()
        out: list[Message] = []
        for s in self.view.switches:
            if s.dpid in self.connected:
                out += self._diff_switch(s.dpid, want[s.name])
        return out

    def _sync_switch(self, dpid: int) -> list[Message]:
        """Bring one switch to the desired state: a switch connecting changes no other switch's rules, so
        it costs one switch's diff, not a recomputation for the whole network (a 197-switch graph took
        140 s of controller time to come up when every connection resynced every switch)."""
        if self._want is None:
            self._want = self.desired()
        return self._diff_switch(dpid, self._want[self.sw_by_dpid[dpid]])

    def _diff_switch(self, dpid: int, want: SwitchState) -> list[Message]:
        new = stamp(want, self.gen[dpid])
        out = diff_switch(dpid, self.installed.get(dpid, SwitchState()), new)
        self.installed[dpid] = new
        return out

    def _delete_affinity(self, cookie: int, mask: int) -> list[Message]:
        e = FlowEntry(TABLE_CLASSIFY, 0, (), cookie=cookie)
        return [FlowMod(d, "delete", e, cookie_mask=mask) for d in sorted(self.connected)]

    def _host_ports(self, dpid: int) -> list[tuple[int, Any]]:
        s = self.sw_by_dpid.get(dpid)
        return [(h.port, h) for h in self.view.hosts if h.switch == s]

    def _general_queries(self, dpids: list[int]) -> list[Message]:
        data = pk.igmp_query(
            self.probe_mac,
            self.probe_ip,
            max_resp_s=self.view.igmp_response_s,
            qrv=self.view.igmp_robustness,
            qqic_s=int(self.view.igmp_query_interval_s),
        )
        return [PacketOut(d, data, (Output(p),)) for d in dpids for p, _ in self._host_ports(d)]

    # ----------------------------------------------------------------- events
    def switch_connected(self, dpid: int) -> list[Message]:
        if dpid not in self.sw_by_dpid:
            self.note(f"switch dpid {dpid:#x} is not in the view: ignored")
            return []
        gen, self._gen = self._gen, next_generation(self._gen)
        self.connected.add(dpid)
        self.gen[dpid] = gen
        self.installed[dpid] = SwitchState()
        self.pending[dpid] = {}
        self.note(f"switch {self.sw_by_dpid[dpid]} (dpid {dpid}) connected: installing generation {gen:#x}")
        # No flush: whatever the switch holds keeps forwarding while the new generation is added over it
        # (identical rules are replaced in place); what is left of older generations goes in switch_state.
        return (
            self._sync_switch(dpid)
            + [StateRequest(dpid, "flows"), StateRequest(dpid, "groups")]
            + self._general_queries([dpid])
        )

    def switch_state(self, dpid: int, what: str, ids: set[int]) -> list[Message]:
        """A switch's complete answer to a :class:`StateRequest` (``flows``: cookies of the flows in our
        namespace; ``groups``: group ids). Once both are in, delete the other generations' leftovers."""
        got = self.pending.get(dpid)
        if got is None or what not in ("flows", "groups"):
            return []
        got[what] = set(ids)
        if len(got) < 2:
            return []
        del self.pending[dpid]
        out = stale_cleanup(dpid, self.gen[dpid], got["flows"], got["groups"])
        self.note(
            f"switch {self.sw_by_dpid[dpid]} resynced: {len(out)} stale cookie/group deletes "
            f"(generation {self.gen[dpid]:#x})"
        )
        return out

    def switch_disconnected(self, dpid: int) -> None:
        if dpid in self.connected:
            self.connected.discard(dpid)
            self.installed.pop(dpid, None)
            self.pending.pop(dpid, None)
            self.note(f"switch {self.sw_by_dpid.get(dpid, dpid)} disconnected")

    def port_status(self, dpid: int, port: int, up: bool) -> list[Message]:
        s = self.sw_by_dpid.get(dpid)
        if s is None:
            return []
        out: list[Message] = []
        if self.sg.set_link_state(s, port, up):
            self.note(f"link at {s}:{port} {'up' if up else 'down'}: rerouting")
            self.routes = compute_routes(self.sg.graph())
        h = self.host_at.get((s, port))
        if h is not None:
            for svc in self.services.values():
                mh = svc.health.get(h.name)
                if mh is not None and mh.link_up != up:
                    mh.link_up = up
                    mh.reason = "" if up else "access link down"
                    self.note(
                        f"anycast {svc.view.name}: member {h.name} access link {'up' if up else 'down'}"
                    )
                    if not up:
                        idx = svc.view.members.index(h.name)
                        out += self._delete_affinity(
                            affinity_cookie(svc.index, idx), AFFINITY_ALL_MASK | 0xFFFFFFFFFF
                        )
        return out + self.sync()

    def packet_in(self, dpid: int, in_port: int, data: bytes) -> list[Message]:
        """A packet sent to the controller by a table-0 flow; malformed packets are counted and dropped."""
        try:
            p = pk.parse(data)
            return self._packet_in(dpid, in_port, p, data)
        except (pk.PacketError, ValueError) as e:
            self.bad_packets += 1
            log.debug("dropping malformed packet from dpid %s port %s: %s", dpid, in_port, e)
            return []

    def _packet_in(self, dpid: int, in_port: int, p: pk.Packet, data: bytes) -> list[Message]:
        if p.eth_type == ETH_ARP:
            mac = self.arp_table.get(p.arp_tpa)
            if p.arp_op != 1 or mac is None or p.arp_spa == p.arp_tpa:
                return []
            return [PacketOut(dpid, pk.arp_reply(mac, p.arp_tpa, p.arp_sha, p.arp_spa), (Output(in_port),))]
        if p.eth_type != ETH_IP:
            return []
        if p.ip_dst == self.probe_ip:
            return self._probe_reply(dpid, in_port, p)
        if p.ip_proto == PROTO_IGMP:
            return self._igmp(dpid, in_port, p)
        if p.ip_proto == PROTO_UDP and self.heartbeats and self.heartbeats.is_control(p.ip_dst, p.dport):
            return self._heartbeat(p)
        for svc in self.services.values():
            if p.ip_dst == str(svc.view.vip) and p.eth_dst == svc.view.vmac.lower():
                return self._affinity(dpid, in_port, p, data, svc)
        return []

    def _probe_reply(self, dpid: int, in_port: int, p: pk.Packet) -> list[Message]:
        now = self.clock()
        out: list[Message] = []
        tr: Transition | None = None
        if p.ip_proto == 6:
            if p.tcp_flags & pk.TCP_RST:
                tr = self.liveness.answer(p.dport, False, now)
            elif p.tcp_flags & pk.TCP_SYN and p.tcp_flags & pk.TCP_ACK:
                tr = self.liveness.answer(p.dport, True, now)
                rst = pk.tcp_packet(
                    self.probe_mac,
                    p.eth_src,
                    self.probe_ip,
                    p.ip_src,
                    p.dport,
                    p.sport,
                    p.tcp_ack,
                    0,
                    pk.TCP_RST,
                )
                out.append(PacketOut(dpid, rst, (Output(in_port),)))
        elif p.ip_proto == PROTO_ICMP and p.icmp_type == 0:
            tr = self.liveness.answer(p.icmp_id, True, now)
        if tr is not None:
            out += self._apply_transitions([tr])
        return out

    def _apply_transitions(self, trs: list[Transition]) -> list[Message]:
        out: list[Message] = []
        for t in trs:
            svc = self.services[t.service]
            mh = svc.health[t.member]
            mh.alive = t.alive
            mh.reason = t.reason if not t.alive else (mh.reason if not mh.heartbeat_alive else "")
            self.note(
                f"anycast {t.service}: member {t.member} {'alive' if t.alive else 'withdrawn'} ({t.reason})"
            )
            if not t.alive:
                idx = svc.view.members.index(t.member)
                out += self._delete_affinity(
                    affinity_cookie(svc.index, idx), AFFINITY_ALL_MASK | 0xFFFFFFFFFF
                )
        return out + (self.sync() if trs else [])

    def _heartbeat(self, p: pk.Packet) -> list[Message]:
        """A control-group datagram copied by a member's switch (controller/heartbeats.py)."""
        assert self.heartbeats is not None
        (ulen,) = struct.unpack("!H", p.l4[4:6])
        if not 8 <= ulen <= len(p.l4):
            self.heartbeats.bad("malformed")
            return []
        tr = self.heartbeats.feed(p.l4[8:ulen], p.ip_src, self.clock())
        return self._apply_beats([tr] if tr else [])

    def _apply_beats(self, trs: list[BeatTransition]) -> list[Message]:
        """Heartbeat liveness changes: OR-combined with the probes through ``MemberHealth.healthy``."""
        out: list[Message] = []
        changed = False
        for t in trs:
            for svc in self.services.values():
                mh = svc.health.get(t.member)
                if mh is None or mh.heartbeat_alive == t.alive:
                    continue
                changed = True
                mh.heartbeat_alive = t.alive
                if not t.alive:
                    mh.reason = t.reason
                elif mh.alive and mh.link_up:
                    mh.reason = ""
                self.note(
                    f"anycast {svc.view.name}: member {t.member} heartbeats "
                    f"{'resumed' if t.alive else 'stopped: withdrawn'} ({t.reason})"
                )
                if not t.alive:
                    idx = svc.view.members.index(t.member)
                    out += self._delete_affinity(
                        affinity_cookie(svc.index, idx), AFFINITY_ALL_MASK | 0xFFFFFFFFFF
                    )
        return out + (self.sync() if changed else [])

    def _can_hear(self, member: str) -> bool:
        return self.view.switch(self.view.host(member).switch).dpid in self.connected

    def _igmp(self, dpid: int, in_port: int, p: pk.Packet) -> list[Message]:
        h = self.host_at.get((self.sw_by_dpid.get(dpid, ""), in_port))
        if h is None:
            return []
        msg = parse_igmp(p.l4)
        if isinstance(msg, IgmpQuery):
            return []
        changed, queries = False, []
        for rec in msg:
            c, q = self.snooper.record(h.name, rec, self.clock())
            changed |= c
            queries += q
            if c:
                self.note(f"IGMP: {h.name} {rec.group} record type {rec.kind} sources {sorted(rec.sources)}")
        out: list[Message] = [
            PacketOut(
                dpid,
                pk.igmp_query(self.probe_mac, self.probe_ip, g, self.view.igmp_last_member_s),
                (Output(in_port),),
            )
            for g in queries
        ]
        return out + (self.sync() if changed else [])

    def _affinity(
        self, dpid: int, in_port: int, p: pk.Packet, data: bytes, svc: ServiceState
    ) -> list[Message]:
        s = self.sw_by_dpid.get(dpid)
        if s is None or self.mode != "affinity":
            return []
        m = choose(self.view, self.routes, svc)[s]
        if m is None:
            return []
        e = affinity_flow(
            self.view, svc, m, p.ip_src, p.ip_proto, p.sport, p.dport, self.view.affinity_idle_s
        )
        mac = self.view.host(m).mac.lower()
        return [
            FlowMod(dpid, "add", e),
            PacketOut(dpid, data, (SetField("eth_dst", mac), Output(OFPP_TABLE)), in_port),
        ]

    def _can_probe(self, service: str, member: str) -> bool:
        return self.view.switch(self.view.host(member).switch).dpid in self.connected

    def tick(self) -> list[Message]:
        """Timers: liveness probes and their timeouts, IGMP membership expiry and general queries."""
        now = self.clock()
        sends, trs = self.liveness.tick(now, self._can_probe)
        out: list[Message] = []
        for ps in sends:
            svc = self.services[ps.service]
            h = self.view.host(ps.member)
            dpid = self.view.switch(h.switch).dpid
            if dpid not in self.connected:
                continue
            if ps.kind == "tcp":
                data = pk.tcp_packet(
                    self.probe_mac,
                    h.mac.lower(),
                    self.probe_ip,
                    str(svc.view.vip),
                    ps.token,
                    svc.view.port,
                    self._probe_seq.getrandbits(32),
                    0,
                    pk.TCP_SYN,
                )
            else:
                data = pk.icmp_echo(self.probe_mac, h.mac.lower(), self.probe_ip, str(h.ip), ps.token, 1)
            out.append(PacketOut(dpid, data, (Output(h.port),)))
        out += self._apply_transitions(trs)
        if self.heartbeats is not None:
            out += self._apply_beats(self.heartbeats.tick(now, self._can_hear))
        if self.snooper.expire(now):
            self.note("IGMP: memberships expired")
            out += self.sync()
        if self.snooper.query_due(now):
            out += self._general_queries(sorted(self.connected))
        return out

    # ----------------------------------------------------------------- REST commands
    def set_drained(self, service: str, member: str, drained: bool) -> list[Message]:
        svc = self.services.get(service)
        if svc is None:
            raise KeyError(f"no anycast service {service!r}")
        if member not in svc.health:
            raise KeyError(f"{member!r} is not a member of {service!r}")
        svc.health[member].drained = drained
        self.note(f"anycast {service}: member {member} {'drained' if drained else 'restored'}")
        return self.sync()

    def set_mode(self, mode: str) -> list[Message]:
        if mode not in ("destination", "affinity"):
            raise ValueError(f"mode must be 'destination' or 'affinity', not {mode!r}")
        out: list[Message] = []
        if mode != self.mode and mode == "destination":
            out += self._delete_affinity(COOKIE_AFFINITY, AFFINITY_ALL_MASK)
        self.mode = mode
        self.note(f"anycast mode: {mode}")
        return out + self.sync()

    def set_lldp_links(self, discovered: set[tuple[int, int, int, int]]) -> list[str]:
        new = compare_links(self.view, discovered)
        if new != self.lldp_mismatches:
            for m in new:
                self.note(f"LLDP mismatch: {m}")
        self.lldp_mismatches = new
        self.lldp_checked = True
        return new

    # ----------------------------------------------------------------- snapshots (REST)
    def topology(self) -> dict[str, Any]:
        return {
            "switches": [
                {
                    "name": s.name,
                    "dpid": s.dpid,
                    "connected": s.dpid in self.connected,
                    "synced": s.dpid in self.connected and s.dpid not in self.pending,
                    "generation": self.gen.get(s.dpid) if s.dpid in self.connected else None,
                }
                for s in self.view.switches
            ],
            "links": [
                {**link.model_dump(), "up": i not in self.sg.down} for i, link in enumerate(self.sg.links)
            ],
            "hosts": [{**h.model_dump(mode="json")} for h in self.view.hosts],
            "lldp_mismatches": self.lldp_mismatches,
            "lldp_checked": self.lldp_checked,
            "probe_ip": self.probe_ip,
            "events": [{"t": t, "event": e} for t, e in list(self.events)[-50:]],
        }

    def anycast(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "services": {}}
        if self.heartbeats is not None:
            out["control"] = self.heartbeats.status()
        now = self.clock()
        live = self.liveness.status()
        for name, svc in self.services.items():
            out["services"][name] = {
                "vip": str(svc.view.vip),
                "vmac": svc.view.vmac.lower(),
                "port": svc.view.port,
                "members": {
                    m: {
                        "host": m,
                        "ip": str(self.view.host(m).ip),
                        "healthy": h.healthy,
                        "alive": h.alive,
                        "link_up": h.link_up,
                        "drained": h.drained,
                        "reason": h.reason,
                        "probe": live.get(f"{name}/{m}"),
                        **self._beat_status(m, now),
                    }
                    for m, h in svc.health.items()
                },
                "choice": choose(self.view, self.routes, svc),
            }
        return out

    def _beat_status(self, member: str, now: float) -> dict[str, Any]:
        if self.heartbeats is None:
            return {"heartbeat_age_ms": None, "load": None}
        return self.heartbeats.member_status(member, now)

    def multicast(self) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        for (g, h), m in sorted(self.snooper.members.items()):
            groups.setdefault(g, {"igmp_members": {}, "static": []})["igmp_members"][h] = {
                "mode": m.mode,
                "sources": sorted(m.sources),
            }
        for sg in self.view.multicast_static:
            groups.setdefault(str(sg.group), {"igmp_members": {}, "static": []})["static"].append(
                {"source": sg.source, "members": sg.members}
            )
        trees = [
            {
                "group": t.group,
                "source": t.source,
                "members": sorted(t.members),
                "unreachable": sorted(t.unreachable),
                "group_id": self.group_ids.get((t.source, t.group)),
                "switches": {
                    s: {"in_port": t.in_port[s], "out_ports": sorted(p)}
                    for s, p in sorted(t.out_ports.items())
                },
            }
            for t in all_trees(self.view, self.routes, self.snooper)
        ]
        return {"groups": groups, "trees": trees}
