"""Topology specs: the declarative description of an emulated CDN (``topologies/*.yaml``).

A spec names regions, switches, hosts with CDN roles, links with delay/bandwidth/loss/queue, anycast VIPs
and static multicast groups. It is validated on load; every error names the file and the field, e.g.
``topologies/globe.yaml: links[3].b: unknown node 'sx'``.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import networkx as nx
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from contract.config import ConfigError, read_data, validate

TOPOLOGY_DIR = Path(__file__).resolve().parents[2] / "topologies"
#: the address block of a spec that names none, and of imported graphs: clear of the networks VMs and
#: containers usually put on a machine (:data:`testbed.net.containment.USUAL_MACHINE_NETWORKS`)
DEFAULT_SUBNET = "10.100.0.0/16"
#: nodes the builder adds to every network besides the spec's own; a host may not take their names.
#: Mininet's controller node ``c0`` lives in the machine's root namespace, so a "host" of that name would
#: send its traffic out of the machine's real interfaces.
BUILDER_NODE_NAMES = {"c0": "Mininet's controller node, which runs in the machine's root namespace"}
# Linux interface names are at most 15 bytes; Mininet names them "<node>-eth<N>".
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,9}$")


class Role(StrEnum):
    client = "client"
    edge = "edge"
    origin = "origin"
    dns = "dns"
    resolver = "resolver"
    redirector = "redirector"
    router = "router"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_name(v: str) -> str:
    if not _NAME_RE.match(v):
        raise ValueError(
            "names are 1-10 characters of a-z, 0-9 and '_', starting with a letter "
            "(Mininet names interfaces '<node>-eth<N>', which Linux limits to 15 bytes)"
        )
    return v


Name = Annotated[str, AfterValidator(_check_name)]


#: The limits of a link, in one place: the spec model checks them on load and the link classes
#: (:func:`testbed.net.links.link_shape`) use the same numbers, so a valid spec never fails at build time.
MAX_DELAY_MS = 10_000
MAX_BW_MBIT = 10_000  # what a veth pair with HTB can emulate
MAX_QUEUE_PKTS = 1_000_000


class LinkParams(_Strict):
    """What a link does to traffic. Delays are one-way, in milliseconds.

    ``queue_pkts`` is the queue of packets waiting to be sent, not those in flight on the delay: with
    ``bw_mbit`` the bottleneck queue (tail drop beyond); without, the limit of the delay line. It means
    the same in both link modes (netem and the relay)."""

    delay_ms: float = Field(0.0, ge=0, le=MAX_DELAY_MS)
    # one-way delay b->a when the link is asymmetric (default: same as delay_ms)
    delay_ms_ba: float | None = Field(None, ge=0, le=MAX_DELAY_MS)
    bw_mbit: float | None = Field(None, gt=0, le=MAX_BW_MBIT)
    loss_pct: float = Field(0.0, ge=0, le=100)
    queue_pkts: int | None = Field(None, ge=1, le=MAX_QUEUE_PKTS)
    #: a bandwidth trace (a name in topologies/traces/, or a CSV path): the rate follows it over time
    #: (:mod:`testbed.net.traces`); without ``bw_mbit`` the link starts at the trace's first rate
    trace: str | None = None

    @model_validator(mode="after")
    def _trace(self) -> LinkParams:
        if self.trace is not None:
            from testbed.net.traces import load_trace  # traces imports this module's limits

            try:
                t = load_trace(self.trace)
            except ValueError as e:
                raise ValueError(f"trace: {e}") from None
            if self.bw_mbit is None:
                self.bw_mbit = t.steps[0][1]
        return self

    @property
    def shaped(self) -> bool:
        """True when the link must do more than a plain veth pair does (a queue alone is shaped too)."""
        return bool(self.delay_ms or self.delay_ms_ba or self.bw_mbit or self.loss_pct
                    or self.queue_pkts is not None)


class Link(LinkParams):
    a: str
    b: str


def _server_ref(v: Any) -> Any:
    """A position in ``--servers`` may be written as a YAML number (``server: 1``)."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


#: ``server:`` of a region or switch: a name from ``--servers`` or its position in it
ServerRef = Annotated[str, BeforeValidator(_server_ref)]


class Region(_Strict):
    name: Name
    label: str = ""
    # the region's own address block (e.g. 10.0.1.0/24): its hosts are numbered from it, so mapping can
    # tell regions apart by client subnet (EDNS Client Subnet carries a /24, RFC 7871)
    prefix: str | None = None
    #: the server every switch of this region runs on when a run spans several (``--servers``;
    #: testbed.net.placement): a name from that list or its position in it (0 is the first)
    server: ServerRef | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.IPv4Network(v)
        return v


class Switch(_Strict):
    name: Name
    region: str | None = None
    dpid: int | None = Field(None, ge=1, lt=2**48)
    # where the PoP is (degrees), for drawing the network on a map (the dashboard); no effect on traffic
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    #: the server this switch and its hosts run on when a run spans several (``--servers``;
    #: testbed.net.placement): a name from that list or its position in it; overrides its region's
    server: ServerRef | None = None

    @model_validator(mode="after")
    def _both_coordinates(self) -> Switch:
        if (self.lat is None) != (self.lon is None):
            raise ValueError(f"switch {self.name}: give both lat and lon, or neither")
        return self


class Host(_Strict):
    name: Name
    role: Role
    region: str | None = None
    switch: str
    ip: str | None = None
    link: LinkParams = Field(default_factory=LinkParams)
    # role-specific options, passed to the service's config (e.g. dns: {level: high})
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.IPv4Address(v)
        return v


class Anycast(_Strict):
    """An IP anycast service: ``vip`` is carried on the loopback of every member."""

    name: str
    vip: str
    port: int = Field(80, ge=1, le=65535)
    members: list[str] = Field(min_length=1)

    @field_validator("vip")
    @classmethod
    def _vip(cls, v: str) -> str:
        ipaddress.IPv4Address(v)
        return v


class MulticastGroup(_Strict):
    group: str
    source: str
    members: list[str] = Field(default_factory=list)

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        if not ipaddress.IPv4Address(v).is_multicast:
            raise ValueError(f"{v} is not an IPv4 multicast address (224.0.0.0/4)")
        return v


class Topology(_Strict):
    """A whole emulated CDN."""

    name: str
    description: str = ""
    sources: list[str] = Field(default_factory=list)  # where the numbers come from
    subnet: str = DEFAULT_SUBNET
    regions: list[Region] = Field(default_factory=list)
    switches: list[Switch] = Field(min_length=1)
    hosts: list[Host] = Field(min_length=1)
    links: list[Link] = Field(default_factory=list)
    anycast: list[Anycast] = Field(default_factory=list)
    multicast: list[MulticastGroup] = Field(default_factory=list)

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: str) -> str:
        ipaddress.IPv4Network(v)
        return v

    # -- derived views ---------------------------------------------------------------------------
    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def hosts_with(self, role: Role | str) -> list[Host]:
        return [h for h in self.hosts if h.role == Role(role)]

    def region_names(self) -> list[str]:
        return [r.name for r in self.regions]

    def addresses(self) -> dict[str, str]:
        """host name -> IPv4 address: explicit ``ip``, else the next free address of the host's region
        ``prefix``, else of ``subnet`` (outside every region prefix)."""
        taken = {h.ip for h in self.hosts if h.ip} | {a.vip for a in self.anycast}
        blocks = [ipaddress.IPv4Network(r.prefix) for r in self.regions if r.prefix]

        def pool(net: ipaddress.IPv4Network, avoid: list[ipaddress.IPv4Network]):
            return (str(a) for a in net.hosts() if str(a) not in taken and not any(a in b for b in avoid))

        pools = {r.name: pool(ipaddress.IPv4Network(r.prefix), []) for r in self.regions if r.prefix}
        rest = pool(ipaddress.IPv4Network(self.subnet), blocks)
        return {h.name: (h.ip or next(pools.get(h.region or "", rest))) for h in self.hosts}

    def networks(self) -> list[ipaddress.IPv4Network]:
        """Every address block the emulated network uses: ``subnet`` and each anycast VIP outside it."""
        net = ipaddress.IPv4Network(self.subnet)
        vips = {ipaddress.IPv4Address(a.vip) for a in self.anycast}
        return [net, *(ipaddress.IPv4Network(f"{v}/32") for v in sorted(vips) if v not in net)]

    def moved_to(self, subnet: str) -> Topology:
        """The same topology renumbered into ``subnet`` (``cdnlab up --subnet``): the subnet, region
        prefixes, explicit host addresses and the anycast VIPs inside the old subnet keep their offsets.

        ``subnet`` must be at least as large as the current one; ValueError says why not otherwise.
        """
        old = ipaddress.IPv4Network(self.subnet)
        try:
            new = ipaddress.IPv4Network(subnet)
        except ValueError as e:
            raise ValueError(f"--subnet {subnet}: {e}") from None
        if new.prefixlen > old.prefixlen:
            raise ValueError(f"--subnet {subnet}: {self.name} needs a /{old.prefixlen} or larger "
                             f"(its subnet is {old})")
        shift = int(new.network_address) - int(old.network_address)

        def move(addr: str) -> str:
            a = ipaddress.IPv4Address(addr)
            return str(a + shift) if a in old else addr

        data = self.model_dump(mode="json")
        data["subnet"] = str(new)
        for r in data["regions"]:
            if r["prefix"]:
                p = ipaddress.IPv4Network(r["prefix"])
                r["prefix"] = f"{move(str(p.network_address))}/{p.prefixlen}"
        for h in data["hosts"]:
            if h["ip"]:
                h["ip"] = move(h["ip"])
        for a in data["anycast"]:
            a["vip"] = move(a["vip"])
        return Topology.model_validate(data)

    def dpids(self) -> dict[str, int]:
        """switch name -> datapath id (explicit, else 1, 2, ... in file order, skipping taken ids)."""
        taken = {s.dpid for s in self.switches if s.dpid}
        out: dict[str, int] = {}
        n = 0
        for s in self.switches:
            if s.dpid:
                out[s.name] = s.dpid
                continue
            n += 1
            while n in taken:
                n += 1
            out[s.name] = n
        return out

    def graph(self) -> nx.Graph:
        """Undirected graph of switches and hosts; edge attribute ``delay_ms`` (one-way, a->b)."""
        g = nx.Graph()
        for s in self.switches:
            g.add_node(s.name, kind="switch", region=s.region)
        for h in self.hosts:
            g.add_node(h.name, kind="host", role=h.role.value, region=h.region)
            g.add_edge(h.name, h.switch, delay_ms=h.link.delay_ms, bw_mbit=h.link.bw_mbit)
        for ln in self.links:
            g.add_edge(ln.a, ln.b, delay_ms=ln.delay_ms, bw_mbit=ln.bw_mbit)
        return g

    def delays_from(self, node: str) -> dict[str, float]:
        """One-way delay of the lowest-delay path from ``node`` to every node (one Dijkstra run)."""
        return {n: float(d) for n, d in nx.single_source_dijkstra_path_length(self.graph(), node,
                                                                              weight="delay_ms").items()}

    def path_delay_ms(self, a: str, b: str) -> float:
        """One-way delay of the lowest-delay path between two nodes."""
        return float(nx.shortest_path_length(self.graph(), a, b, weight="delay_ms"))

    def has_cycle(self) -> bool:
        g = nx.Graph()
        g.add_edges_from((ln.a, ln.b) for ln in self.links)
        return bool(nx.cycle_basis(g)) or any(
            sum(1 for ln in self.links if {ln.a, ln.b} == {x.a, x.b}) > 1 for x in self.links
        )


def reference_errors(t: Topology) -> list[tuple[str, str]]:
    """Cross-reference checks pydantic cannot do field by field: (field path, message) pairs."""
    errs: list[tuple[str, str]] = []
    regions = set(t.region_names())
    switches = {s.name for s in t.switches}
    seen: dict[str, str] = {}
    for kind, items in (("switches", t.switches), ("hosts", t.hosts)):
        for i, n in enumerate(items):
            if n.name in BUILDER_NODE_NAMES:
                errs.append((f"{kind}[{i}].name", f"{n.name!r} is reserved: it is {BUILDER_NODE_NAMES[n.name]}"))
            if n.name in seen:
                errs.append((f"{kind}[{i}].name", f"duplicate name {n.name!r} (also a {seen[n.name]})"))
            seen[n.name] = kind[:-1] if kind == "switches" else "host"
            if n.region is not None and regions and n.region not in regions:
                errs.append((f"{kind}[{i}].region", f"unknown region {n.region!r}; regions: {sorted(regions)}"))
    hosts = {h.name for h in t.hosts}
    net = ipaddress.IPv4Network(t.subnet)
    prefixes: list[tuple[int, ipaddress.IPv4Network]] = []
    for i, r in enumerate(t.regions):
        if r.prefix:
            p = ipaddress.IPv4Network(r.prefix)
            if not p.subnet_of(net):
                errs.append((f"regions[{i}].prefix", f"{r.prefix} is outside subnet {t.subnet}"))
            for j, q in prefixes:
                if p.overlaps(q):
                    errs.append((f"regions[{i}].prefix", f"{r.prefix} overlaps regions[{j}].prefix"))
            prefixes.append((i, p))
    ips: dict[str, str] = {}
    for i, h in enumerate(t.hosts):
        if h.switch not in switches:
            errs.append((f"hosts[{i}].switch", f"unknown switch {h.switch!r}"))
        if h.ip:
            if ipaddress.IPv4Address(h.ip) not in net:
                errs.append((f"hosts[{i}].ip", f"{h.ip} is outside subnet {t.subnet}"))
            if h.ip in ips:
                errs.append((f"hosts[{i}].ip", f"{h.ip} already used by {ips[h.ip]}"))
            ips[h.ip] = h.name
    for i, ln in enumerate(t.links):
        for end in ("a", "b"):
            n = getattr(ln, end)
            if n not in switches:
                what = "a host (hosts attach with their 'switch' field)" if n in hosts else "unknown"
                errs.append((f"links[{i}].{end}", f"{n!r} is {what}; links join switches"))
        if ln.a == ln.b:
            errs.append((f"links[{i}]", f"link from {ln.a!r} to itself"))
    vips: set[str] = set()
    for i, a in enumerate(t.anycast):
        if a.vip in ips:
            errs.append((f"anycast[{i}].vip", f"{a.vip} is also the address of host {ips[a.vip]}"))
        if a.vip in vips:
            errs.append((f"anycast[{i}].vip", f"duplicate VIP {a.vip}"))
        vips.add(a.vip)
        for j, m in enumerate(a.members):
            if m not in hosts:
                errs.append((f"anycast[{i}].members[{j}]", f"unknown host {m!r}"))
    for i, g in enumerate(t.multicast):
        if g.source not in hosts:
            errs.append((f"multicast[{i}].source", f"unknown host {g.source!r}"))
        for j, m in enumerate(g.members):
            if m not in hosts:
                errs.append((f"multicast[{i}].members[{j}]", f"unknown host {m!r}"))
    if not errs:
        g = t.graph()
        if not nx.is_connected(g):
            parts = sorted((sorted(c) for c in nx.connected_components(g)), key=len)
            errs.append(("links", f"the network is not connected; isolated: {parts[0]}"))
    return errs


def rename_switches(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Rename the switches of a spec dict in place (``s1`` -> ``<prefix>1``, ``s_na`` -> ``<prefix>_na``).

    OVS bridge names are global to a machine: this lets a second copy of a topology run beside the first
    (used by tests and during development). Returns ``data``.
    """
    ren = {s["name"]: prefix + s["name"].lstrip("s") for s in data["switches"]}
    for s in data["switches"]:
        s["name"] = ren[s["name"]]
    for ln in data.get("links", []):
        ln["a"], ln["b"] = ren.get(ln["a"], ln["a"]), ren.get(ln["b"], ln["b"])
    for h in data["hosts"]:
        h["switch"] = ren.get(h["switch"], h["switch"])
    return data


def parse_topology(data: Any, source: str) -> Topology:
    """Validate parsed data as a topology; ConfigError lists every problem as ``source: field: message``."""
    t = validate(Topology, data, source)
    errs = reference_errors(t)
    if errs:
        raise ConfigError("\n".join(f"{source}: {loc}: {msg}" for loc, msg in errs))
    return t


def resolve_topology_path(name_or_path: str | Path) -> Path:
    """``globe`` -> topologies/globe.yaml; a path is returned as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") or p.exists():
        return p
    cand = TOPOLOGY_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        raise ConfigError(f"{name_or_path}: no such topology; shipped: {', '.join(list_topologies())}")
    return cand


def list_topologies() -> list[str]:
    return sorted(p.stem for p in TOPOLOGY_DIR.glob("*.yaml"))


def load_topology(name_or_path: str | Path, subnet: str | None = None) -> Topology:
    """Load and validate a topology by name (``globe``) or path; ``subnet`` renumbers it
    (:meth:`Topology.moved_to`)."""
    p = resolve_topology_path(name_or_path)
    t = parse_topology(read_data(p), str(p))
    if subnet:
        try:
            moved = t.moved_to(subnet)
        except ValueError as e:
            raise ConfigError(f"{p}: {e}") from None
        t = parse_topology(moved.model_dump(mode="json"), f"{p} moved to {subnet}")
    return t
