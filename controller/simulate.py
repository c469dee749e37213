"""A fake OpenFlow 1.3 network (pure) that applies :mod:`controller.flows` messages and walks packets.

Used by the unit tests (and usable by anyone) to check forwarding without a switch: a packet (a dict of
match fields) enters at a host's port; each switch runs table 0 -> goto -> table 1 with priorities,
set-field, output and ALL groups; outputs to link ports continue at the peer switch. The walk records
deliveries to host ports, packets sent to the controller, drops and loops.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from contract.netview import NetView
from controller.flows import (
    COOKIE_NS,
    COOKIE_NS_MASK,
    OFPG_ALL,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    OFPP_TABLE,
    FlowEntry,
    FlowMod,
    GroupAction,
    GroupMod,
    Message,
    Output,
    PacketOut,
    SetField,
    StateRequest,
)


def _field_matches(value: Any, want: Any) -> bool:
    if value is None:
        return False
    if isinstance(want, tuple):  # (addr, mask)
        v, m = (int(ipaddress.IPv4Address(x)) for x in want)
        return int(ipaddress.IPv4Address(value)) & m == v & m
    if isinstance(want, str) and isinstance(value, str):
        return value.lower() == want.lower()
    return value == want


def entry_matches(e: FlowEntry, pkt: dict[str, Any]) -> bool:
    return all(_field_matches(pkt.get(k), v) for k, v in e.match)


@dataclass
class FakeSwitch:
    dpid: int
    flows: dict[tuple, FlowEntry] = field(default_factory=dict)
    groups: dict[int, GroupMod] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def apply(self, msg: Message) -> None:
        if isinstance(msg, FlowMod):
            e = msg.entry
            if msg.command == "add":
                for a in e.actions:
                    if isinstance(a, GroupAction) and a.group_id not in self.groups:
                        self.errors.append(f"flow {e} uses missing group {a.group_id}")
                self.flows[e.key] = e
            elif msg.command == "delete_strict":
                self.flows.pop(e.key, None)
            else:  # delete, non-strict: by table (0xff = all), cookie/mask and match subset
                for k, f in list(self.flows.items()):
                    if e.table != 0xFF and f.table != e.table:
                        continue
                    if (f.cookie & msg.cookie_mask) != (e.cookie & msg.cookie_mask):
                        continue
                    if all(dict(f.match).get(mk) == mv for mk, mv in e.match):
                        del self.flows[k]
        elif isinstance(msg, GroupMod):
            if msg.command == "delete":
                if msg.group_id == OFPG_ALL:
                    self.groups.clear()
                else:
                    self.groups.pop(msg.group_id, None)
            elif msg.command == "add":
                if msg.group_id in self.groups:
                    self.errors.append(f"group {msg.group_id} added twice")
                self.groups[msg.group_id] = msg
            else:
                if msg.group_id not in self.groups:
                    self.errors.append(f"group {msg.group_id} modified before being added")
                self.groups[msg.group_id] = msg

    def lookup(self, table: int, pkt: dict[str, Any]) -> FlowEntry | None:
        best = None
        for e in self.flows.values():
            if e.table == table and entry_matches(e, pkt) and (best is None or e.priority > best.priority):
                best = e
        return best

    def our_flows(self) -> int:
        return sum(1 for e in self.flows.values() if e.cookie & COOKIE_NS_MASK)


@dataclass
class WalkResult:
    delivered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (host, packet as received)
    to_controller: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)  # (dpid, in_port, pkt)
    loop: bool = False
    hops: int = 0

    @property
    def hosts(self) -> list[str]:
        return sorted(h for h, _ in self.delivered)


class FakeNet:
    """Fake switches wired as in a :class:`NetView`; link state can be toggled to match port-status."""

    def __init__(self, view: NetView) -> None:
        self.view = view
        self.switches = {s.dpid: FakeSwitch(s.dpid) for s in view.switches}
        self.name_dpid = {s.name: s.dpid for s in view.switches}
        self.peer: dict[tuple[int, int], tuple[int, int]] = {}
        self.link_of: dict[tuple[int, int], int] = {}
        for i, link in enumerate(view.links):
            a, b = (self.name_dpid[link.a], link.a_port), (self.name_dpid[link.b], link.b_port)
            self.peer[a], self.peer[b] = b, a
            self.link_of[a] = self.link_of[b] = i
        self.host_at = {(self.name_dpid[h.switch], h.port): h.name for h in view.hosts}
        self.down: set[int] = set()
        self.packet_outs: list[PacketOut] = []
        self.state_requests: list[StateRequest] = []

    def apply(self, msgs: list[Message]) -> None:
        for m in msgs:
            if isinstance(m, PacketOut):
                self.packet_outs.append(m)
            elif isinstance(m, StateRequest):
                self.state_requests.append(m)
            else:
                self.switches[m.dpid].apply(m)

    def state_replies(self) -> list[tuple[int, str, set[int]]]:
        """Answer the pending :class:`StateRequest`s as a switch would (our cookies / group ids now);
        returns ``(dpid, what, ids)`` for :meth:`ControllerCore.switch_state`."""
        out = []
        for r in self.state_requests:
            sw = self.switches[r.dpid]
            if r.what == "flows":
                ids = {e.cookie for e in sw.flows.values() if e.cookie & COOKIE_NS_MASK == COOKIE_NS}
            else:
                ids = set(sw.groups)
            out.append((r.dpid, r.what, ids))
        self.state_requests.clear()
        return out

    def errors(self) -> list[str]:
        return [e for s in self.switches.values() for e in s.errors]

    def send(self, host: str, pkt: dict[str, Any], max_hops: int = 64) -> WalkResult:
        """Inject ``pkt`` from ``host``'s NIC and walk it through the network."""
        h = self.view.host(host)
        res = WalkResult()
        seen: set[tuple] = set()
        self._walk(self.name_dpid[h.switch], h.port, dict(pkt), res, seen, max_hops)
        return res

    def _walk(
        self, dpid: int, in_port: int, pkt: dict[str, Any], res: WalkResult, seen: set, budget: int
    ) -> None:
        key = (dpid, in_port, tuple(sorted(pkt.items())))
        if key in seen or budget <= 0:
            res.loop = True
            return
        seen.add(key)
        res.hops += 1
        sw = self.switches[dpid]
        pkt = {**pkt, "in_port": in_port}
        table = 0
        while True:
            e = sw.lookup(table, pkt)
            if e is None:
                return
            outs = self._actions(sw, e.actions, pkt)
            for port, p in outs:
                self._emit(dpid, in_port, port, p, res, seen, budget)
            if e.goto is None:
                return
            table = e.goto
            # actions applied before goto change the packet seen by later tables
            for a in e.actions:
                if isinstance(a, SetField):
                    pkt[a.field] = a.value

    def _actions(
        self, sw: FakeSwitch, actions: tuple, pkt: dict[str, Any]
    ) -> list[tuple[int, dict[str, Any]]]:
        p = dict(pkt)
        outs: list[tuple[int, dict[str, Any]]] = []
        for a in actions:
            if isinstance(a, SetField):
                p[a.field] = a.value
            elif isinstance(a, Output):
                outs.append((a.port, dict(p)))
            elif isinstance(a, GroupAction):
                g = sw.groups.get(a.group_id)
                if g is None:
                    sw.errors.append(f"packet hit missing group {a.group_id}")
                    continue
                for b in g.buckets:
                    outs += self._actions(sw, b.actions, p)
        return outs

    def _emit(
        self, dpid: int, in_port: int, port: int, p: dict[str, Any], res: WalkResult, seen: set, budget: int
    ) -> None:
        p = {k: v for k, v in p.items() if k != "in_port"}
        if port == OFPP_CONTROLLER:
            res.to_controller.append((dpid, in_port, p))
            return
        if port == OFPP_IN_PORT:
            port = in_port
        elif port == in_port or port == OFPP_TABLE:
            return  # OpenFlow never outputs to the ingress port implicitly
        if (dpid, port) in self.host_at:
            res.delivered.append((self.host_at[(dpid, port)], p))
            return
        if (dpid, port) in self.peer and self.link_of[(dpid, port)] not in self.down:
            nd, np_ = self.peer[(dpid, port)]
            self._walk(nd, np_, p, res, seen, budget - 1)

    def packet_out(self, po: PacketOut, pkt: dict[str, Any]) -> WalkResult:
        """Walk a controller packet-out (whose frame has fields ``pkt``), honouring OFPP_TABLE."""
        res = WalkResult()
        sw = self.switches[po.dpid]
        for port, p in self._actions(sw, po.actions, pkt):
            if port == OFPP_TABLE:
                self._walk(po.dpid, po.in_port, p, res, set(), 64)
            else:
                self._emit(po.dpid, po.in_port, port, p, res, set(), 64)
        return res

    def set_link(self, a: str, b: str, up: bool) -> list[tuple[int, int]]:
        """Toggle the link between switches a and b; return the (dpid, port) ends for port-status events."""
        for i, link in enumerate(self.view.links):
            if {link.a, link.b} == {a, b}:
                (self.down.discard if up else self.down.add)(i)
                return [(self.name_dpid[link.a], link.a_port), (self.name_dpid[link.b], link.b_port)]
        raise KeyError(f"no link {a}-{b}")


def ip_packet(
    view: NetView, src: str, dst_ip: str, dst_mac: str, proto: int = 6, sport: int = 40000, dport: int = 80
) -> dict[str, Any]:
    """A packet (match fields) as host ``src`` would send it to ``dst_ip`` at Ethernet ``dst_mac``."""
    h = view.host(src)
    p: dict[str, Any] = {
        "eth_src": h.mac.lower(),
        "eth_dst": dst_mac.lower(),
        "eth_type": 0x0800,
        "ipv4_src": str(h.ip),
        "ipv4_dst": dst_ip,
        "ip_proto": proto,
    }
    if proto == 6:
        p.update(tcp_src=sport, tcp_dst=dport)
    elif proto == 17:
        p.update(udp_src=sport, udp_dst=dport)
    return p


def connect_all(core: Any, net: FakeNet) -> None:
    """Connect every switch of ``net`` to ``core`` and apply what it sends."""
    for dpid in net.switches:
        net.apply(core.switch_connected(dpid))
    answer_state(core, net)


def answer_state(core: Any, net: FakeNet) -> None:
    """Deliver the fake switches' answers to the core's state requests and apply what it sends back."""
    for dpid, what, ids in net.state_replies():
        net.apply(core.switch_state(dpid, what, ids))


def port_event(core: Any, net: FakeNet, a: str, b: str, up: bool) -> None:
    """Take the link a-b down/up in the fake network and tell the core (port status from both ends)."""
    for dpid, port in net.set_link(a, b, up):
        net.apply(core.port_status(dpid, port, up))


def normalised_tables(net: FakeNet) -> dict[int, dict[tuple, tuple]]:
    """Every switch's flows as (actions, goto) by key, with cookies left out and group ids reduced to the
    tree number (``gid & 0xffff``): the forwarding state, whichever generation installed it."""

    def act(a: Any) -> Any:
        return GroupAction(a.group_id & 0xFFFF) if isinstance(a, GroupAction) else a

    return {
        d: {k: (tuple(act(a) for a in e.actions), e.goto) for k, e in s.flows.items()}
        for d, s in net.switches.items()
    }
