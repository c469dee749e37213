"""Flow mods, group mods and packet-outs as plain data (OpenFlow 1.3, ONF TS-006).

The pure controller logic returns these objects; tests apply them to a fake flow table
(:mod:`controller.simulate`), and :func:`to_ryu` is the one place they become Ryu messages.

Pipeline (two tables):

* table 0 (classify): ARP, IGMP and liveness-probe replies to the controller; anycast ingress rewrite
  (``eth_dst`` VMAC -> chosen member MAC); affinity per-flow rules; multicast (S,G) -> group;
  default: goto table 1.
* table 1 (forward): ``ipv4_dst`` host -> next hop; (VIP, member MAC) -> next hop to member; miss: drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# OpenFlow 1.3 reserved ports and constants (ONF TS-006 7.2.1), so no module but to_ryu needs Ryu.
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFPG_ALL = 0xFFFFFFFC
OFP_NO_BUFFER = 0xFFFFFFFF

ETH_IP = 0x0800
ETH_ARP = 0x0806
PROTO_ICMP = 1
PROTO_IGMP = 2
PROTO_TCP = 6
PROTO_UDP = 17

TABLE_CLASSIFY = 0
TABLE_FORWARD = 1

# Every flow this controller installs carries a cookie in this namespace (top 16 bits), so it can delete
# exactly its own flows (e.g. stale ones from a previous run) and leave e.g. Ryu's LLDP flow alone.
COOKIE_NS = 0xCD1A << 48
COOKIE_NS_MASK = 0xFFFF << 48
COOKIE_AFFINITY = COOKIE_NS | (1 << 40)  # | anycast index << 16 | member index
COOKIE_AFFINITY_MASK = COOKIE_NS_MASK | (0xFF << 40) | 0xFFFFFFFFFF


def affinity_cookie(service_idx: int, member_idx: int) -> int:
    return COOKIE_AFFINITY | (service_idx << 16) | member_idx


# match field -> prerequisite (field, allowed values), OpenFlow 1.3 table 12
_PREREQ: dict[str, tuple[str, tuple[int, ...]]] = {
    "ipv4_src": ("eth_type", (ETH_IP,)),
    "ipv4_dst": ("eth_type", (ETH_IP,)),
    "ip_proto": ("eth_type", (ETH_IP,)),
    "arp_op": ("eth_type", (ETH_ARP,)),
    "arp_tpa": ("eth_type", (ETH_ARP,)),
    "arp_spa": ("eth_type", (ETH_ARP,)),
    "tcp_src": ("ip_proto", (PROTO_TCP,)),
    "tcp_dst": ("ip_proto", (PROTO_TCP,)),
    "udp_src": ("ip_proto", (PROTO_UDP,)),
    "udp_dst": ("ip_proto", (PROTO_UDP,)),
}
MATCH_FIELDS = {"in_port", "eth_src", "eth_dst", "eth_type", *_PREREQ}

Match = tuple[tuple[str, Any], ...]


def match(**fields: Any) -> Match:
    """A canonical (sorted) match; values are ints/strings, or (value, mask) for IPv4 prefixes.

    Raises ValueError for unknown fields or missing prerequisites (OVS would reject the flow).
    """
    for k in fields:
        if k not in MATCH_FIELDS:
            raise ValueError(f"unknown match field {k!r}")
        if k in _PREREQ:
            req, allowed = _PREREQ[k]
            if fields.get(req) not in allowed:
                raise ValueError(f"match field {k} needs {req} in {allowed}")
    return tuple(sorted(fields.items()))


@dataclass(frozen=True)
class Output:
    port: int
    max_len: int = 0xFFFF  # for OFPP_CONTROLLER: send the whole packet


@dataclass(frozen=True)
class SetField:
    field: str  # eth_src | eth_dst | ipv4_src | ipv4_dst
    value: Any


@dataclass(frozen=True)
class GroupAction:
    group_id: int


Action = Output | SetField | GroupAction


@dataclass(frozen=True)
class FlowEntry:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    cookie: int = COOKIE_NS
    idle_timeout: int = 0
    hard_timeout: int = 0

    @property
    def key(self) -> tuple[int, int, Match]:
        """Identity of a flow in a switch (OpenFlow: table, priority and match)."""
        return (self.table, self.priority, self.match)


@dataclass(frozen=True)
class FlowMod:
    dpid: int
    command: Literal["add", "delete_strict", "delete"]
    entry: FlowEntry
    cookie_mask: int = 0  # for "delete": only flows whose cookie matches entry.cookie under this mask


@dataclass(frozen=True)
class Bucket:
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class GroupMod:
    dpid: int
    command: Literal["add", "modify", "delete"]
    group_id: int
    type: Literal["all", "select", "ff"] = "all"
    buckets: tuple[Bucket, ...] = ()


@dataclass(frozen=True)
class PacketOut:
    dpid: int
    data: bytes
    actions: tuple[Action, ...]
    in_port: int = OFPP_CONTROLLER


Message = FlowMod | GroupMod | PacketOut


@dataclass
class SwitchState:
    """What the controller believes one switch holds (proactive flows and groups)."""

    flows: dict[tuple[int, int, Match], FlowEntry] = field(default_factory=dict)
    groups: dict[int, GroupMod] = field(default_factory=dict)


def diff_switch(dpid: int, old: SwitchState, new: SwitchState) -> list[Message]:
    """The messages that turn ``old`` into ``new``: groups added before the flows that use them,
    flows deleted before the groups they used."""
    out: list[Message] = []
    for gid, g in new.groups.items():
        og = old.groups.get(gid)
        if og is None:
            out.append(GroupMod(dpid, "add", gid, g.type, g.buckets))
        elif (og.type, og.buckets) != (g.type, g.buckets):
            out.append(GroupMod(dpid, "modify", gid, g.type, g.buckets))
    for k, e in old.flows.items():
        if k not in new.flows:
            out.append(FlowMod(dpid, "delete_strict", e))
    for k, e in new.flows.items():
        if old.flows.get(k) != e:
            out.append(FlowMod(dpid, "add", e))  # add with same key replaces (OFPFF overwrite semantics)
    for gid in old.groups:
        if gid not in new.groups:
            out.append(GroupMod(dpid, "delete", gid))
    return out


def wipe(dpid: int) -> list[Message]:
    """Delete every flow of ours (cookie namespace) and every group on a switch: start from scratch."""
    return [
        FlowMod(dpid, "delete", FlowEntry(0xFF, 0, (), cookie=COOKIE_NS), cookie_mask=COOKIE_NS_MASK),
        GroupMod(dpid, "delete", OFPG_ALL),
    ]


def _ryu_actions(parser: Any, actions: tuple[Action, ...]) -> list[Any]:
    out = []
    for a in actions:
        if isinstance(a, Output):
            out.append(parser.OFPActionOutput(a.port, a.max_len))
        elif isinstance(a, SetField):
            out.append(parser.OFPActionSetField(**{a.field: a.value}))
        elif isinstance(a, GroupAction):
            out.append(parser.OFPActionGroup(a.group_id))
        else:  # pragma: no cover
            raise TypeError(f"unknown action {a!r}")
    return out


def to_ryu(datapath: Any, msg: Message) -> Any:
    """Translate one message to a Ryu OpenFlow 1.3 message for ``datapath`` (a Ryu Datapath)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    if isinstance(msg, FlowMod):
        e = msg.entry
        m = parser.OFPMatch(**dict(e.match))
        if msg.command == "add":
            inst = []
            if e.actions:
                inst.append(
                    parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, _ryu_actions(parser, e.actions))
                )
            if e.goto is not None:
                inst.append(parser.OFPInstructionGotoTable(e.goto))
            return parser.OFPFlowMod(
                datapath,
                cookie=e.cookie,
                table_id=e.table,
                command=ofp.OFPFC_ADD,
                idle_timeout=e.idle_timeout,
                hard_timeout=e.hard_timeout,
                priority=e.priority,
                match=m,
                instructions=inst,
                flags=0,
            )
        strict = msg.command == "delete_strict"
        return parser.OFPFlowMod(
            datapath,
            cookie=e.cookie,
            cookie_mask=msg.cookie_mask if not strict else 0,
            table_id=ofp.OFPTT_ALL if e.table == 0xFF else e.table,
            command=ofp.OFPFC_DELETE_STRICT if strict else ofp.OFPFC_DELETE,
            priority=e.priority,
            match=m,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
        )
    if isinstance(msg, GroupMod):
        cmd = {"add": ofp.OFPGC_ADD, "modify": ofp.OFPGC_MODIFY, "delete": ofp.OFPGC_DELETE}[msg.command]
        gtype = {"all": ofp.OFPGT_ALL, "select": ofp.OFPGT_SELECT, "ff": ofp.OFPGT_FF}[msg.type]
        buckets = [parser.OFPBucket(actions=_ryu_actions(parser, b.actions)) for b in msg.buckets]
        return parser.OFPGroupMod(datapath, cmd, gtype, msg.group_id, buckets)
    if isinstance(msg, PacketOut):
        return parser.OFPPacketOut(
            datapath,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=msg.in_port,
            actions=_ryu_actions(parser, msg.actions),
            data=msg.data,
        )
    raise TypeError(f"not a message: {msg!r}")
