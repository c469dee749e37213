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

from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class StateRequest:
    """Ask a switch what it holds: ``flows`` (the cookies of our flows) or ``groups`` (group ids).

    The app answers with :meth:`controller.core.ControllerCore.switch_state` once the (multipart) reply
    is complete."""

    dpid: int
    what: Literal["flows", "groups"]


Message = FlowMod | GroupMod | PacketOut | StateRequest


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
    if isinstance(msg, StateRequest):
        if msg.what == "flows":
            return parser.OFPFlowStatsRequest(
                datapath,
                0,
                ofp.OFPTT_ALL,
                ofp.OFPP_ANY,
                ofp.OFPG_ANY,
                COOKIE_NS,
                COOKIE_NS_MASK,
                parser.OFPMatch(),
            )
        return parser.OFPGroupDescStatsRequest(datapath, 0)
    if isinstance(msg, PacketOut):
        return parser.OFPPacketOut(
            datapath,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=msg.in_port,
            actions=_ryu_actions(parser, msg.actions),
            data=msg.data,
        )
    raise TypeError(f"not a message: {msg!r}")


# ------------------------------------------------------------------ generations (resync without a flush)
# A controller run stamps its proactive flows with a generation (cookie bits 24..39) and puts its group ids
# in the generation's range (gen << 16 | n), fresh on every switch connection. On (re)connect it installs
# the whole desired state under the new generation (an OpenFlow ADD with the same table, priority and
# match replaces a flow in place, so identical rules never disappear), then asks the switch which cookies
# and groups it holds and deletes those of other generations (faucet-style cookie generations).
GEN_SHIFT = 24
GEN_MASK = 0xFFFF << GEN_SHIFT
COOKIE_CLASS_MASK = 0xFF << 40  # 0: proactive, 1: affinity (per-flow, reactive)
GEN_MIN, GEN_MAX = 1, 0xFEFF  # gen << 16 | n must stay below OFPG_MAX (0xffffff00)
GROUP_N_MAX = 0xFFFF


def proactive_cookie(gen: int) -> int:
    return COOKIE_NS | (gen << GEN_SHIFT)


def cookie_generation(cookie: int) -> int:
    return (cookie & GEN_MASK) >> GEN_SHIFT


def is_proactive(cookie: int) -> bool:
    return cookie & COOKIE_NS_MASK == COOKIE_NS and cookie & COOKIE_CLASS_MASK == 0


def group_id(gen: int, n: int) -> int:
    """The OpenFlow group id of the ``n``-th (S,G) tree in generation ``gen``."""
    if not (GEN_MIN <= gen <= GEN_MAX and 1 <= n <= GROUP_N_MAX):
        raise ValueError(f"generation {gen} / group number {n} out of range")
    return gen << 16 | n


def next_generation(gen: int) -> int:
    return GEN_MIN if gen >= GEN_MAX else gen + 1


def stamp(state: SwitchState, gen: int) -> SwitchState:
    """``state`` (proactive flows with the bare namespace cookie, groups numbered 1..n) as installed in
    generation ``gen``: cookies carry the generation, group ids (and the flows' group actions) its range."""

    def action(a: Action) -> Action:
        return GroupAction(group_id(gen, a.group_id)) if isinstance(a, GroupAction) else a

    out = SwitchState()
    for k, e in state.flows.items():
        if e.cookie == COOKIE_NS:
            e = replace(e, cookie=proactive_cookie(gen), actions=tuple(action(a) for a in e.actions))
        out.flows[k] = e
    for n, g in state.groups.items():
        gid = group_id(gen, n)
        out.groups[gid] = replace(g, group_id=gid)
    return out


def stale_cleanup(dpid: int, gen: int, cookies: set[int], group_ids: set[int]) -> list[Message]:
    """After a (re)connect installed generation ``gen``: delete the proactive flows of every other
    generation the switch reported (by exact cookie), then the groups outside ``gen``'s range. Affinity
    flows and flows outside our cookie namespace (e.g. LLDP) stay."""
    out: list[Message] = []
    for c in sorted(cookies):
        if is_proactive(c) and cookie_generation(c) != gen:
            out.append(
                FlowMod(dpid, "delete", FlowEntry(0xFF, 0, (), cookie=c), cookie_mask=0xFFFFFFFFFFFFFFFF)
            )
    for gid in sorted(group_ids):
        if gid >> 16 != gen:
            out.append(GroupMod(dpid, "delete", gid))
    return out
