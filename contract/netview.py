"""The network view: the JSON file the topology builder writes after building a network.

It is the only interface between the builder (``testbed/net/``) and the controller. Validated with
pydantic (unknown fields are errors) via :func:`contract.config.load_model`; :func:`load_view` also checks
cross references (link ends, host switches, anycast members, ports used twice).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract import mcast_wire as wire
from contract.config import ConfigError, load_model

MAC_RE = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SwitchView(_Strict):
    name: str
    dpid: int = Field(ge=1, lt=2**64)


class LinkView(_Strict):
    """A switch-switch link; usable in both directions. ``delay_ms`` is the configured one-way delay."""

    a: str
    a_port: int = Field(ge=1, lt=0xFFFFFF00)
    b: str
    b_port: int = Field(ge=1, lt=0xFFFFFF00)
    delay_ms: float = Field(ge=0)
    bw_mbit: float | None = Field(default=None, gt=0)


class HostView(_Strict):
    """A host and its access link (``switch``/``port``) with its one-way delay."""

    name: str
    mac: str = Field(pattern=MAC_RE)
    ip: ipaddress.IPv4Address
    switch: str
    port: int = Field(ge=1, lt=0xFFFFFF00)
    delay_ms: float = Field(default=0.0, ge=0)


class ProbeView(_Strict):
    """Active liveness probing of anycast members (see controller/liveness.py).

    ``kind``: ``tcp`` sends a SYN to VIP:port (SYN-ACK = alive, RST = dead); ``icmp`` sends an echo request
    to the member's unicast IP (for UDP-only services).
    """

    interval_ms: float = Field(default=20, gt=0)
    timeout_ms: float = Field(default=60, gt=0)
    threshold: int = Field(default=2, ge=1)
    kind: Literal["tcp", "icmp"] = "tcp"


class AnycastView(_Strict):
    """An anycast service: ``vip`` answered (ARP) with ``vmac``; ``port`` is the TCP service port probed."""

    name: str
    vip: ipaddress.IPv4Address
    vmac: str = Field(pattern=MAC_RE)
    port: int = Field(ge=1, le=65535)
    members: list[str] = Field(min_length=1)
    probe: ProbeView = Field(default_factory=ProbeView)


class MulticastStaticView(_Strict):
    """A static multicast group: ``source`` (host name) sends to ``group``, delivered to ``members``."""

    group: ipaddress.IPv4Address
    source: str
    members: list[str]


class ControlView(_Strict):
    """The CDN's multicast control channel the controller listens to (controller/heartbeats.py).

    Anycast members multicast HEARTBEATs (contract/mcast_wire.py) to ``group``:``port``; the
    member's switch copies them to the controller, which withdraws a member whose heartbeats stop for
    ``miss_limit`` intervals. ``key``: the session's HMAC key as hex of its bytes (a service's text key
    ``k`` is ``k.encode().hex()``); None: tags are not authenticated. ``interval_ms``: the expected
    heartbeat interval; None: each heartbeat's own advertised interval.
    """

    group: ipaddress.IPv4Address = ipaddress.IPv4Address(wire.DEFAULT_CONTROL_GROUP)
    port: int = Field(default=wire.CONTROL_PORT, ge=1, le=65535)
    session_id: int = Field(default=wire.CONTROL_SESSION, ge=0, le=2**32 - 1)
    key: str | None = Field(default=None, pattern=r"^([0-9a-fA-F]{2})+$")
    miss_limit: int = Field(default=3, ge=1, le=1000)
    interval_ms: float | None = Field(default=None, gt=0)

    @property
    def key_bytes(self) -> bytes | None:
        return bytes.fromhex(self.key) if self.key else None


class NetView(_Strict):
    switches: list[SwitchView]
    links: list[LinkView] = []
    hosts: list[HostView] = []
    anycast: list[AnycastView] = []
    anycast_mode: Literal["destination", "affinity"] = "destination"
    multicast_static: list[MulticastStaticView] = []
    rest_port: int = Field(default=8080, ge=1, le=65535)
    # Optional extensions (defaults are derived, see controller/core.py):
    probe_ip: ipaddress.IPv4Address | None = None  # source of liveness probes; default: derived on-link
    probe_mac: str = Field(default="02:cd:1a:00:00:fe", pattern=MAC_RE)
    affinity_idle_s: int = Field(default=30, ge=1, le=65535)  # idle timeout of per-flow affinity rules
    igmp_query_interval_s: float = Field(default=125, gt=0)  # RFC 3376 8.2 default
    igmp_response_s: float = Field(default=10, gt=0)  # RFC 3376 8.3 Max Response Time
    igmp_robustness: int = Field(default=2, ge=1)  # RFC 3376 8.1
    igmp_last_member_s: float = Field(default=1, gt=0)  # RFC 3376 8.8 Last Member Query Interval
    control: ControlView | None = None  # heartbeat-based member liveness (controller/heartbeats.py)

    @model_validator(mode="after")
    def _cross_refs(self) -> NetView:
        errs: list[str] = []
        sw = {s.name for s in self.switches}
        if len(sw) != len(self.switches):
            errs.append("switches: duplicate switch name")
        if len({s.dpid for s in self.switches}) != len(self.switches):
            errs.append("switches: duplicate dpid")
        used: set[tuple[str, int]] = set()

        def use(where: str, s: str, p: int) -> None:
            if s not in sw:
                errs.append(f"{where}: unknown switch {s!r}")
            elif (s, p) in used:
                errs.append(f"{where}: port {s}:{p} used twice")
            used.add((s, p))

        for i, link in enumerate(self.links):
            if link.a == link.b:
                errs.append(f"links[{i}]: a link joins switch {link.a!r} to itself")
            use(f"links[{i}]", link.a, link.a_port)
            use(f"links[{i}]", link.b, link.b_port)
        hosts = {h.name: h for h in self.hosts}
        if len(hosts) != len(self.hosts):
            errs.append("hosts: duplicate host name")
        if len({h.ip for h in self.hosts}) != len(self.hosts):
            errs.append("hosts: duplicate ip")
        for i, h in enumerate(self.hosts):
            use(f"hosts[{i}]", h.switch, h.port)
        for i, a in enumerate(self.anycast):
            for m in a.members:
                if m not in hosts:
                    errs.append(f"anycast[{i}].members: unknown host {m!r}")
            if any(a.vip == h.ip for h in self.hosts):
                errs.append(f"anycast[{i}].vip: {a.vip} is also a host address")
        if len({a.name for a in self.anycast}) != len(self.anycast):
            errs.append("anycast: duplicate name")
        for i, g in enumerate(self.multicast_static):
            if not g.group.is_multicast or g.group in ipaddress.IPv4Network("224.0.0.0/24"):
                errs.append(f"multicast_static[{i}].group: {g.group} is not a routable multicast group")
            for m in [g.source, *g.members]:
                if m not in hosts:
                    errs.append(f"multicast_static[{i}]: unknown host {m!r}")
        if self.control is not None:
            c = self.control.group
            if not c.is_multicast or c in ipaddress.IPv4Network("224.0.0.0/24"):
                errs.append(f"control.group: {c} is not a routable multicast group")
        if errs:
            raise ValueError("; ".join(errs))
        return self

    def host(self, name: str) -> HostView:
        return next(h for h in self.hosts if h.name == name)

    def switch(self, name: str) -> SwitchView:
        return next(s for s in self.switches if s.name == name)


def load_view(path: str | Path) -> NetView:
    """Load and validate a network view file; raise :class:`ConfigError` naming the file and field."""
    return load_model(NetView, path)


__all__ = [
    "NetView",
    "SwitchView",
    "LinkView",
    "HostView",
    "AnycastView",
    "ProbeView",
    "MulticastStaticView",
    "ControlView",
    "load_view",
    "ConfigError",
]
