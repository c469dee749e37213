"""IP multicast (pure): IGMP snooping and per-(source, group) shortest-path trees as OpenFlow groups.

* IGMP: IGMPv1/v2 reports and v2 leaves (RFC 2236), IGMPv3 reports with source filters (RFC 3376 4.2,
  router side 6.4), the controller acting as querier (general queries every Query Interval, a
  group-specific query on leave) and membership expiry after the Group Membership Interval
  (robustness * query interval + query response interval, RFC 3376 8.4). Every host has its own switch
  port, so the controller tracks each host's state explicitly and removes a member on leave at once
  ("fast leave", RFC 4541 2.1.1).
* Trees: for each (S, G), the union of shortest paths from S's switch to the members' switches, taken
  from the one Dijkstra tree rooted at S's switch (so it is a tree: no loops, no duplicates). Each switch
  on the tree gets an OpenFlow ALL group whose buckets are the child links and member host ports, reached
  by a flow matching (S, G) on the port towards S only (reverse-path check); other (S, G) packets drop.
  Recomputed on link failure and on membership change; non-members never get a bucket.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from contract.netview import NetView
from controller.flows import (
    ETH_IP,
    OFPP_CONTROLLER,
    PROTO_IGMP,
    TABLE_CLASSIFY,
    Bucket,
    FlowEntry,
    GroupAction,
    GroupMod,
    Output,
    match,
)
from controller.packets import PacketError
from controller.routing import Routes

PRIO_IGMP = 1000
PRIO_SG = 500
PRIO_SG_RPF_FAIL = 490
PRIO_MCAST_DROP = 300

# IGMPv3 group record types (RFC 3376 4.2.12)
MODE_IS_INCLUDE, MODE_IS_EXCLUDE, CHANGE_TO_INCLUDE, CHANGE_TO_EXCLUDE, ALLOW_NEW, BLOCK_OLD = (
    1,
    2,
    3,
    4,
    5,
    6,
)


@dataclass(frozen=True)
class IgmpRecord:
    """One membership change of a host: ``kind`` is a v3 record type; v1/v2 reports are IS_EXCLUDE {},
    a v2 leave is TO_INCLUDE {}."""

    kind: int
    group: str
    sources: frozenset[str] = frozenset()


@dataclass(frozen=True)
class IgmpQuery:
    group: str  # "0.0.0.0" for a general query


def parse_igmp(payload: bytes) -> list[IgmpRecord] | IgmpQuery:
    """Parse an IGMP message (the IPv4 payload); raise PacketError when malformed."""
    if len(payload) < 8:
        raise PacketError("IGMP message shorter than 8 bytes")
    typ = payload[0]
    group = str(ipaddress.IPv4Address(payload[4:8]))
    if typ == 0x11:
        return IgmpQuery(group)
    if typ in (0x12, 0x16):  # v1 / v2 membership report
        return [IgmpRecord(MODE_IS_EXCLUDE, group)]
    if typ == 0x17:  # v2 leave group
        return [IgmpRecord(CHANGE_TO_INCLUDE, group)]
    if typ != 0x22:
        raise PacketError(f"unknown IGMP type 0x{typ:02x}")
    (n,) = struct.unpack("!H", payload[6:8])
    off, out = 8, []
    for _ in range(n):
        if len(payload) < off + 8:
            raise PacketError("truncated IGMPv3 group record")
        rtype, aux, nsrc = struct.unpack("!BBH", payload[off : off + 4])
        g = str(ipaddress.IPv4Address(payload[off + 4 : off + 8]))
        end = off + 8 + 4 * nsrc
        if len(payload) < end + 4 * aux:
            raise PacketError("truncated IGMPv3 source list")
        srcs = frozenset(str(ipaddress.IPv4Address(payload[i : i + 4])) for i in range(off + 8, end, 4))
        if not 1 <= rtype <= 6:
            raise PacketError(f"unknown IGMPv3 record type {rtype}")
        out.append(IgmpRecord(rtype, g, srcs))
        off = end + 4 * aux
    return out


@dataclass
class Membership:
    mode: str  # "include" | "exclude"
    sources: frozenset[str]
    expires: float

    def accepts(self, source_ip: str) -> bool:
        return (source_ip in self.sources) if self.mode == "include" else (source_ip not in self.sources)


@dataclass
class IgmpSnooper:
    """Host memberships learned from IGMP, with expiry. All methods take the time ``now`` (seconds)."""

    query_interval: float = 125.0
    response_s: float = 10.0
    robustness: int = 2
    members: dict[tuple[str, str], Membership] = field(default_factory=dict)  # (group, host) -> state
    next_query: float = 0.0

    @property
    def gmi(self) -> float:
        """Group Membership Interval (RFC 3376 8.4)."""
        return self.robustness * self.query_interval + self.response_s

    def record(self, host: str, rec: IgmpRecord, now: float) -> tuple[bool, list[str]]:
        """Apply one record from ``host``; return (membership changed, groups to query specifically)."""
        g = ipaddress.IPv4Address(rec.group)
        if not g.is_multicast or g in ipaddress.IPv4Network("224.0.0.0/24"):
            return False, []
        key = (rec.group, host)
        cur = self.members.get(key)
        before = (cur.mode, cur.sources) if cur else None
        exp = now + self.gmi
        if rec.kind in (MODE_IS_EXCLUDE, CHANGE_TO_EXCLUDE):
            new = Membership("exclude", rec.sources, exp)
        elif rec.kind in (MODE_IS_INCLUDE, CHANGE_TO_INCLUDE):
            new = Membership("include", rec.sources, exp)
        elif rec.kind == ALLOW_NEW:
            if cur is None or cur.mode == "include":
                new = Membership("include", (cur.sources if cur else frozenset()) | rec.sources, exp)
            else:
                new = Membership("exclude", cur.sources - rec.sources, exp)
        else:  # BLOCK_OLD
            if cur is None:
                return False, []
            if cur.mode == "include":
                new = Membership("include", cur.sources - rec.sources, exp)
            else:
                new = Membership("exclude", cur.sources | rec.sources, exp)
        queries: list[str] = []
        if new.mode == "include" and not new.sources:
            self.members.pop(key, None)  # a leave: fast leave, and ask the host to confirm
            queries.append(rec.group)
        else:
            self.members[key] = new
        after = (new.mode, new.sources) if key in self.members else None
        return before != after, queries

    def expire(self, now: float) -> bool:
        """Drop memberships not refreshed within the GMI; True when any was dropped."""
        dead = [k for k, m in self.members.items() if m.expires <= now]
        for k in dead:
            del self.members[k]
        return bool(dead)

    def query_due(self, now: float) -> bool:
        """True (and schedule the next) when a general query should be sent now."""
        if now >= self.next_query:
            self.next_query = now + self.query_interval
            return True
        return False

    def groups(self) -> set[str]:
        return {g for g, _ in self.members}

    def hosts_for(self, group: str, source_ip: str) -> set[str]:
        return {h for (g, h), m in self.members.items() if g == group and m.accepts(source_ip)}


@dataclass
class Tree:
    """A (source, group) tree: per switch, the port towards the source and the output ports."""

    source: str
    group: str
    members: set[str]
    in_port: dict[str, int] = field(default_factory=dict)
    out_ports: dict[str, set[int]] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)


def build_tree(view: NetView, routes: Routes, source: str, group: str, members: set[str]) -> Tree:
    """The shortest-path tree from ``source`` (host) to ``members`` (hosts, minus the source)."""
    src = view.host(source)
    t = Tree(source, group, set(members) - {source})
    root = src.switch
    for m in sorted(t.members):
        h = view.host(m)
        if not routes.reachable(h.switch, root):
            t.unreachable.add(m)
            continue
        p = list(reversed(routes.path[h.switch][root]))  # root ... member switch, from root's Dijkstra tree
        for a, b in zip(p, p[1:], strict=False):
            t.out_ports.setdefault(a, set()).add(routes.port[a][b])
            t.in_port[b] = routes.port[b][a]
        t.out_ports.setdefault(h.switch, set()).add(h.port)
    if t.out_ports:
        t.in_port[root] = src.port
    return t


def tree_flows(
    view: NetView, tree: Tree, group_id: int
) -> tuple[dict[str, list[FlowEntry]], dict[str, GroupMod]]:
    """Per switch: the (S,G) flows (RPF-checked, and the RPF-fail drop) and the ALL group."""
    src_ip = str(view.host(tree.source).ip)
    flows: dict[str, list[FlowEntry]] = {}
    groups: dict[str, GroupMod] = {}
    for s, ports in tree.out_ports.items():
        dpid = view.switch(s).dpid
        groups[s] = GroupMod(dpid, "add", group_id, "all", tuple(Bucket((Output(p),)) for p in sorted(ports)))
        flows[s] = [
            FlowEntry(
                TABLE_CLASSIFY,
                PRIO_SG,
                match(eth_type=ETH_IP, ipv4_src=src_ip, ipv4_dst=tree.group, in_port=tree.in_port[s]),
                (GroupAction(group_id),),
            ),
            FlowEntry(
                TABLE_CLASSIFY, PRIO_SG_RPF_FAIL, match(eth_type=ETH_IP, ipv4_src=src_ip, ipv4_dst=tree.group)
            ),
        ]
    return flows, groups


def base_flows() -> list[FlowEntry]:
    """Every switch: IGMP to the controller; other multicast dropped unless an (S,G) rule matches."""
    return [
        FlowEntry(
            TABLE_CLASSIFY, PRIO_IGMP, match(eth_type=ETH_IP, ip_proto=PROTO_IGMP), (Output(OFPP_CONTROLLER),)
        ),
        FlowEntry(
            TABLE_CLASSIFY, PRIO_MCAST_DROP, match(eth_type=ETH_IP, ipv4_dst=("224.0.0.0", "240.0.0.0"))
        ),
    ]


def all_trees(view: NetView, routes: Routes, snooper: IgmpSnooper) -> list[Tree]:
    """Trees for static groups (their source) and IGMP-joined groups (every host may be a source)."""
    static: dict[str, tuple[set[str], set[str]]] = {}
    for sg in view.multicast_static:
        srcs, mem = static.setdefault(str(sg.group), (set(), set()))
        srcs.add(sg.source)
        mem.update(sg.members)
    trees = []
    for g in sorted(set(static) | snooper.groups()):
        srcs, mem = static.get(g, (set(), set()))
        sources = sorted(srcs) if g in static else sorted(h.name for h in view.hosts)
        for s in sources:
            members = set(mem) | snooper.hosts_for(g, str(view.host(s).ip))
            t = build_tree(view, routes, s, g, members)
            if t.out_ports:
                trees.append(t)
    return trees
