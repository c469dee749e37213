"""Anycast member liveness from the CDN's multicast control channel (pure; the core feeds it packet-ins).

Every edge multicasts a HEARTBEAT (name, role, load; :mod:`contract.mcast_wire`) to the control
group every interval (:class:`testbed.services.mcast.control.HeartbeatPublisher`). The controller sees
the data plane only through OpenFlow, so on the switch where each anycast member attaches a rule copies
the member's control-group datagrams to the controller (:func:`copy_flows`: the same multicast group
action as the (S,G) rule it overrides, plus ``output:CONTROLLER``), and :class:`HeartbeatMonitor` runs the
heartbeat-timeout failure detector of the lecture's "internal communication" use of multicast (the
timeout detector of Chandra & Toueg, "Unreliable failure detectors for reliable distributed systems",
JACM 1996): a member silent for ``miss_limit`` intervals is suspected (withdrawn from the VIP), and
restored by its next heartbeat. The core OR-combines this with the SYN probes of
:mod:`controller.liveness` (down if either says down); a member never heard from is judged by probes alone.

Datagrams are verified with :func:`contract.mcast_wire.decode` (HMAC-SHA-256 when the view has a
key); bad ones are counted by reason and ignored: ``malformed``/``version``/``auth`` (wire), and
``wrong_session``, ``not_heartbeat``, ``unknown_sender`` (name and source IP name no member),
``sender_mismatch`` (the name is a member but the datagram came from another member's address),
``replay`` (a timestamp not newer than the member's last heartbeat), ``stale`` (with a wall clock: a
timestamp more than ``max_age_us`` before it, so a recording replayed to a controller that has just started,
and so has no last heartbeat to compare with, does not revive a dead member; :mod:`contract.replay_window`
applies the same bound in the services).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from contract import mcast_wire as wire
from contract.netview import ControlView, NetView
from contract.replay_window import DEFAULT_MAX_AGE_S
from controller.flows import (
    ETH_IP,
    OFPP_CONTROLLER,
    PROTO_UDP,
    TABLE_CLASSIFY,
    FlowEntry,
    GroupAction,
    Output,
    match,
)
from controller.multicast import Tree

PRIO_HEARTBEAT_COPY = 550  # above the (S,G) rules (500), below anycast ingress (600; disjoint matches)


def heartbeat_sources(view: NetView) -> list[str]:
    """Hosts whose heartbeats the controller listens to: every anycast member (sorted, once)."""
    return sorted({m for a in view.anycast for m in a.members})


def copy_flows(
    view: NetView, cfg: ControlView, trees: dict[tuple[str, str], tuple[Tree, int]]
) -> dict[str, list[FlowEntry]]:
    """Per switch: for each member attached there, its control-group datagrams (matched on its port and
    address) -> the (S,G) tree's group, if the tree forwards from that switch, and the controller.

    ``trees``: (source host, group) -> (tree, tree number), as installed by the multicast code; so
    delivery to the group's real members is exactly what the (S,G) rule this one overrides does."""
    out: dict[str, list[FlowEntry]] = {}
    group = str(cfg.group)
    for m in heartbeat_sources(view):
        h = view.host(m)
        acts: tuple = (Output(OFPP_CONTROLLER),)
        tg = trees.get((m, group))
        if tg is not None and h.switch in tg[0].out_ports:
            acts = (GroupAction(tg[1]), Output(OFPP_CONTROLLER))
        out.setdefault(h.switch, []).append(
            FlowEntry(
                TABLE_CLASSIFY,
                PRIO_HEARTBEAT_COPY,
                match(
                    eth_type=ETH_IP,
                    in_port=h.port,
                    ipv4_src=str(h.ip),
                    ipv4_dst=group,
                    ip_proto=PROTO_UDP,
                    udp_dst=cfg.port,
                ),
                acts,
            )
        )
    return out


@dataclass
class MemberBeat:
    """What the control channel says about one member host."""

    host: str
    alive: bool | None = None  # None: never heard from (probes alone judge it)
    last_seen: float | None = None  # controller clock
    last_ts_us: int = 0  # sender's timestamp of the last accepted heartbeat (replay check)
    interval_s: float = 0.0  # advertised interval of the last heartbeat
    heartbeats: int = 0
    role: str = ""
    addr: str = ""
    load: dict[str, float] | None = None


@dataclass(frozen=True)
class BeatTransition:
    member: str  # host name
    alive: bool
    reason: str


class HeartbeatMonitor:
    """Heartbeat-timeout failure detector over the members in ``members`` (host name -> IPv4 address)."""

    def __init__(
        self,
        cfg: ControlView,
        members: dict[str, str],
        wall_clock_us: Callable[[], int] | None = None,
        max_age_us: int = int(DEFAULT_MAX_AGE_S * 1e6),
    ) -> None:
        self.cfg = cfg
        self.wall_clock_us = wall_clock_us  # None: no freshness bound (pure tests)
        self.max_age_us = max_age_us
        self.key = cfg.key_bytes
        self.group = str(cfg.group)
        self.by_ip = {ip: h for h, ip in members.items()}
        self.beats = {h: MemberBeat(h) for h in members}
        self.received = 0
        self.unverified = 0  # keyed datagrams accepted unchecked because the view has no key
        self.errors: dict[str, int] = {}

    def is_control(self, ip_dst: str, dport: int) -> bool:
        return ip_dst == self.group and dport == self.cfg.port

    def bad(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def limit_s(self, b: MemberBeat) -> float:
        """Silence after which ``b`` is suspected: ``miss_limit`` intervals (the view's, else advertised)."""
        interval = self.cfg.interval_ms / 1000 if self.cfg.interval_ms else b.interval_s
        return self.cfg.miss_limit * interval

    def _decode(self, data: bytes) -> tuple[wire.Header, wire.Message]:
        if self.key:
            return wire.decode(data, self.key)
        h = wire.decode_header(data)
        if h.flags & wire.FLAG_KEYED:  # no key to check it with: parse, count as unverified
            self.unverified += 1
            return h, wire.decode_body(h.type, data[wire.HEADER_LEN :])
        return wire.decode(data, None)

    def feed(self, payload: bytes, src_ip: str, now: float) -> BeatTransition | None:
        """One control-group UDP payload from ``src_ip``; a transition when it revives a member."""
        try:
            h, msg = self._decode(payload)
        except wire.WireError as e:
            self.bad(e.reason)
            return None
        if h.session_id != self.cfg.session_id:
            self.bad("wrong_session")
            return None
        if not isinstance(msg, wire.Heartbeat):
            self.bad("not_heartbeat")
            return None
        by_ip = self.by_ip.get(src_ip)
        member = msg.name if msg.name in self.beats else by_ip
        if member is None:
            self.bad("unknown_sender")
            return None
        if by_ip is not None and by_ip != member:
            self.bad("sender_mismatch")
            return None
        b = self.beats[member]
        if msg.timestamp_us <= b.last_ts_us:
            self.bad("replay")
            return None
        if self.wall_clock_us is not None and self.wall_clock_us() - msg.timestamp_us > self.max_age_us:
            self.bad("stale")
            return None
        self.received += 1
        b.last_ts_us = msg.timestamp_us
        b.last_seen = now
        b.interval_s = msg.interval_ms / 1000
        b.heartbeats += 1
        b.role, b.addr = msg.role.name.lower(), msg.addr
        b.load = {
            "requests_per_s": msg.requests_per_s,
            "bytes_served": msg.bytes_served,
            "cache_fill": msg.cache_fill,
            "cache_objects": msg.cache_objects,
        }
        was, b.alive = b.alive, True
        if was is False:
            return BeatTransition(member, True, "heartbeats resumed")
        if was is None:
            return BeatTransition(member, True, "first heartbeat")
        return None

    def tick(self, now: float, can_hear: Callable[[str], bool] = lambda m: True) -> list[BeatTransition]:
        """Suspect members silent for longer than their limit. A member that cannot be heard now (its
        switch is not connected) is not judged, and its silence restarts when it can be heard again."""
        out = []
        for b in self.beats.values():
            if b.last_seen is None:
                continue
            if not can_hear(b.host):
                b.last_seen = max(b.last_seen, now)
                continue
            if b.alive and now - b.last_seen > self.limit_s(b):
                b.alive = False
                out.append(
                    BeatTransition(
                        b.host, False, f"heartbeats stopped ({self.cfg.miss_limit} intervals missed)"
                    )
                )
        return out

    def member_status(self, host: str, now: float) -> dict[str, object]:
        b = self.beats[host]
        return {
            "heartbeat_alive": b.alive,
            "heartbeat_age_ms": None if b.last_seen is None else round((now - b.last_seen) * 1000, 1),
            "heartbeats": b.heartbeats,
            "load": b.load,
        }

    def status(self) -> dict[str, object]:
        return {
            "group": self.group,
            "port": self.cfg.port,
            "session_id": self.cfg.session_id,
            "keyed": self.key is not None,
            "miss_limit": self.cfg.miss_limit,
            "interval_ms": self.cfg.interval_ms,
            "received": self.received,
            "unverified": self.unverified,
            "errors": dict(self.errors),
        }
