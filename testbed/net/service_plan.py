"""The services' half of a run's plan: which host runs which service, in which start stage, with which config.

:class:`ServicePlan` computes, from the topology, the hosts' addresses, the run's options
(:class:`CdnOptions`) and its multicast plan (:mod:`testbed.net.mcast_plan`), every service process of the
run (:class:`PlannedService`): its role's module, its start stage (each service declares its own order,
:mod:`testbed.services.daemon`) and its config, an instance of the service's own pydantic model. It is pure:
no root, no network, nothing written. :func:`testbed.plan.make_plan` shows it (``cdnlab plan``); the
launcher (:class:`testbed.net.launch.CdnServices`) carries it out: it writes each planned config and starts
the planned processes, stage by stage.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.config import validate
from testbed.net.mcast_plan import McastPlan, McastSession, plan_mcast
from testbed.net.netmap import NetworkMaps, network_maps, rtt_to_edges
from testbed.net.spec import Role, Topology
from testbed.services.base import ServiceConfig
from testbed.services.daemon import Daemon
from testbed.services.daemon import start_stages as daemon_stages
from testbed.services.edge.config import Peer, cooperation_fields

CDN_NAME = "a73.g.cdnlab.net"
CUSTOMER_NAME = "www.customer.example"
MAPPED_ZONE = "g.cdnlab.net"
HTTP_PORT = 80
ICP_PORT = 3130  # every edge's ICP server (RFC 2186's port)
#: the service of each role that runs one: the module that declares it (``DAEMON``: its config model, start
#: order and readiness, :mod:`testbed.services.daemon`) and that the launcher runs
SERVICE_MODULES = {"origin": "testbed.services.origin", "edge": "testbed.services.edge",
                   "dns": "testbed.services.dns", "resolver": "testbed.services.resolver",
                   "redirector": "testbed.services.redirector"}
@dataclass
class CdnOptions:
    """Knobs experiments turn; defaults give the CDN of the lecture."""

    dns_ttl: int = 20  # low-level A record TTL (s): "TTL is small"
    referral_ttl: int = 3600  # high-level NS TTL: "TTL is large"
    ecs: bool = False  # resolvers send EDNS Client Subnet (RFC 7871)
    #: both default to the network map (:mod:`testbed.net.netmap`): nearest edge from where the request
    #: comes from (the resolver for DNS, the client for the redirector)
    mapping_policy: str = "testbed.services.mapping:NetworkMap"
    redirect_policy: str = "testbed.services.mapping:NetworkMap"
    ecs_inner: str = "testbed.services.mapping:NetworkMap"  # what EcsAware maps the client subnet with
    health_interval: float = 0.5
    health_timeout: float = 0.4
    health_fall: int = 2
    health_rise: int = 2
    edge_capacity_bytes: int = 64 * 1024 * 1024
    eviction: str = "testbed.services.eviction:LRU"
    cooperation: str = "none"  # none | cluster | icp | parent
    parent: str | None = None  # edge host used as parent when cooperation == parent
    stale_if_error_s: int = 0
    resolver_cache: bool = True
    resolver_extra: list[str] = field(default_factory=list)  # raw unbound server: lines (e.g. cache-min-ttl)
    catalog: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] = field(default_factory=dict)  # the origin's DASH titles (testbed.services.video)
    roles: tuple[str, ...] = ("origin", "edge", "dns", "resolver", "redirector")
    ready_timeout: float = 30.0
    multicast: bool = False  # ingest/invalidation and heartbeats over the controller's multicast trees
    mcast_on_update: str = "purge"  # what an origin update multicasts: purge | push | none
    mcast_rate_mbps: float = 50.0  # ingest sender pacing (0 = unpaced)
    heartbeat_interval: float = 0.5
    control_miss_limit: int = 3  # heartbeat intervals of silence before DNS/redirector take an edge as down
    origin_cache_control: dict[str, str] = field(default_factory=dict)  # class -> Cache-Control at the origin
    #: role -> {limit field: value} for every service of that role (``max_connections``, ``tcp_max_connections``,
    #: ...: :func:`limit_fields`); unset limits keep the services' defaults (docs/architecture.md, "Limits")
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: role -> a lab submission (``contract.sandbox.Submission`` fields) every service of that role runs in a
    #: sandbox and plugs in: the network stage of ``cdnlab grade`` (:mod:`testbed.grade_network`)
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)


def origin_fields(name: str, host: str, port: int, catalog: dict[str, Any]) -> dict[str, Any]:
    """The fields every origin config starts from (:class:`testbed.services.origin.OriginConfig`): who it is,
    where it listens and what it serves; the emulated CDN's (:meth:`ServicePlan.origin_config`) and the
    loopback ``hierarchy`` experiment's origins are both built on them."""
    return {"name": name, "host": host, "port": port, "catalog": dict(catalog)}


def edge_fields(name: str, host: str, port: int, origin_url: str, capacity_bytes: int, cooperation: str,
                me: Peer, peers: list[Peer], parent_url: str | None = None,
                icp_bind: str = "0.0.0.0") -> dict[str, Any]:
    """The fields every edge config starts from (:class:`testbed.services.edge.config.EdgeConfig`): who it
    is, where it listens, its origin, its cache's size and how it cooperates with ``peers``
    (:func:`~testbed.services.edge.config.cooperation_fields`); the emulated CDN's
    (:meth:`ServicePlan.edge_config`) and the loopback ``hierarchy`` experiment's edges are both built on
    them."""
    return {"name": name, "host": host, "port": port, "origin_url": origin_url,
            "capacity_bytes": capacity_bytes,
            **cooperation_fields(cooperation, me, peers, parent_url, icp_bind=icp_bind)}


def daemon(role: str) -> Daemon:
    """``role``'s service declaration (its module imported when asked: the services' modules are big)."""
    import importlib

    return importlib.import_module(SERVICE_MODULES[role]).DAEMON


def start_stages() -> list[list[str]]:
    """The roles in start stages, from each service's declared ``after``: a stage starts when every service
    of the one before answers (the DNS servers of one stage start low-level first, so a high-level server's
    referrals point at live servers)."""
    return daemon_stages({role: daemon(role) for role in SERVICE_MODULES})


def config_model(role: str) -> type[ServiceConfig]:
    """The pydantic model of ``role``'s service config."""
    return daemon(role).config


def limit_fields(role: str) -> list[str]:
    """The limit fields of ``role``'s service config: the HTTP services' :class:`HttpLimitsConfig` fields
    (edge, redirector, origin; the edge's ``max_field_size`` too), the DNS server's ``tcp_*``."""
    from testbed.services.base import ServiceConfig
    from testbed.services.limits import HttpLimitsConfig

    model = config_model(role)
    if issubclass(model, HttpLimitsConfig):
        names = set(HttpLimitsConfig.model_fields) - set(ServiceConfig.model_fields)
        return sorted(names | ({"max_field_size"} & set(model.model_fields)))
    return sorted(n for n in model.model_fields if n.startswith("tcp_"))


def parse_limit(text: str) -> tuple[str, str, Any]:
    """``ROLE.FIELD=VALUE`` (``cdnlab up --limit``) as (role, field, value); ValueError names what is wrong."""
    key, sep, raw = text.partition("=")
    role, dot, name = key.strip().partition(".")
    if not sep or not dot or not name or not raw.strip():
        raise ValueError(f"--limit {text!r}: expected ROLE.FIELD=VALUE, e.g. edge.max_connections=64")
    if role not in SERVICE_MODULES or role == "resolver":
        raise ValueError(f"--limit {text!r}: no role {role!r} with limits; roles: edge, redirector, origin, dns")
    if name not in limit_fields(role):
        raise ValueError(f"--limit {text!r}: {role} has no limit {name!r}; its limits: {', '.join(limit_fields(role))}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw.strip()
    return role, name, value



@dataclass
class PlannedService:
    """One service process: where it runs, what it runs, when it starts, and its whole config."""

    host: str
    role: str
    module: str
    stage: int
    config: ServiceConfig  # its service's own model, validated

    @property
    def config_name(self) -> str:
        return f"{self.host}-{self.role}.json"


class ServicePlan:
    """Every service process of one run and its config, from the topology, the hosts' addresses (``ip``),
    the run directory (where the configs send logs), the options and the multicast plan. Pure."""

    def __init__(self, topo: Topology, ip: Callable[[str], str], run_dir: Path, opts: CdnOptions | None = None,
                 mcast: McastPlan | None = None) -> None:
        self.topo = topo
        self.ip = ip
        self.run_dir = run_dir
        self.opts = opts or CdnOptions()
        self.log_dir = run_dir / "logs"
        t = topo
        self.origin = next((h.name for h in t.hosts_with(Role.origin)), None)
        self.edges = [h.name for h in t.hosts_with(Role.edge)]
        self.resolvers = [h.name for h in t.hosts_with(Role.resolver)]
        self.redirectors = [h.name for h in t.hosts_with(Role.redirector)]
        self.dns = {h.name: str(h.params.get("level", "both")) for h in t.hosts_with(Role.dns)}
        self._maps: NetworkMaps | None = None
        self._rows: dict[str, dict[str, float]] | None = None
        #: the run's multicast sessions and key (the builder's, when it made one: the one copy)
        self.mcast: McastPlan = mcast or plan_mcast(t)
        # the run's management token (testbed.services.admin): in the configs of the services with control
        # endpoints (and, at run time, in the header file control requests are sent with)
        self.admin_token = secrets.token_urlsafe(24)
        if self.opts.mcast_on_update not in ("purge", "push", "none"):
            raise ValueError(f"mcast_on_update must be purge, push or none, not {self.opts.mcast_on_update!r}")
        if self.opts.multicast and self.mcast.ingest is None:
            raise ValueError(f"topology {t.name}: multicast=True needs a multicast group whose source is "
                             f"the origin and whose members are edges")

    def services(self) -> list[PlannedService]:
        """Every service process of the run, stage by stage (:func:`start_stages`), in launch order."""
        return [PlannedService(h, role, daemon(role).module, stage, self.config(h))
                for stage, roles in enumerate(start_stages(), start=1)
                for role in roles
                for h in self.hosts_of(role)]

    # -- shared pieces of config ---------------------------------------------------------------
    def regions(self) -> dict[str, list[str]]:
        """region -> address prefixes of its hosts (how mapping tells where a query comes from).

        Each region's /24 networks when no /24 holds hosts of two regions — the granularity EDNS Client
        Subnet carries (RFC 7871 recommends /24) — else one /32 per host.
        """
        for plen in (24, 32):
            out: dict[str, set[str]] = {}
            owner: dict[str, str] = {}
            clash = False
            for h in self.topo.hosts:
                if not h.region:
                    continue
                net = str(ipaddress.ip_network(f"{self.ip(h.name)}/{plen}", strict=False))
                clash |= owner.setdefault(net, h.region) != h.region
                out.setdefault(h.region, set()).add(net)
            if not clash:
                break
        return {r: sorted(v) for r, v in out.items()}

    def edge_specs(self, prober: str | None = None) -> list[dict[str, Any]]:
        """The edges as the mapping services know them; with ``prober`` (the DNS or redirector host that
        health-checks them) each carries ``probe_rtt_ms``, the plan's path RTT from it, which stretches
        that edge's probe timeout (a far edge is not down for being far)."""
        rows = self.rtt_rows().get(prober, {}) if prober else {}
        return [{"name": e, "address": self.ip(e), "port": HTTP_PORT,
                 "region": self.topo.host(e).region or "default",
                 **({"probe_rtt_ms": rows[e]} if e in rows else {})} for e in self.edges]

    def rtt_rows(self) -> dict[str, dict[str, float]]:
        """host -> edge -> RTT (ms) by the topology's lowest-delay paths (computed once)."""
        if self._rows is None:
            self._rows = rtt_to_edges(self.topo, self.edges)
        return self._rows

    def network_maps(self) -> NetworkMaps:
        """The redirector's and the DNS's network maps (computed once)."""
        if self._maps is None:
            addresses = {h.name: self.ip(h.name) for h in self.topo.hosts}
            self._maps = network_maps(self.topo, addresses, self.edges, self.rtt_rows())
        return self._maps

    def mapping(self, policy: str, service: str = "dns", host: str | None = None) -> dict[str, Any]:
        """The ``mapping`` section of a DNS (``service="dns"``) or redirector config; ``host``: the service's
        host, whose path RTT to each edge sets that edge's probe timeout."""
        regions = self.regions() or {"default": [self.topo.subnet]}
        rows = self.rtt_rows()
        rtt: dict[str, dict[str, float]] = {}
        for r in regions:  # configured RTT from a region's clients to each edge (LatencyMap): their mean
            members = [h.name for h in self.topo.hosts if h.region == r and h.role == Role.client]
            if members:
                rtt[r] = {e: round(sum(rows[m][e] for m in members) / len(members), 3) for e in self.edges}
        maps = self.network_maps()
        return {"policy": policy, "ecs_inner": self.opts.ecs_inner, "regions": regions,
                "edges": self.edge_specs(host), "rtt_ms": rtt,
                "network_map": maps.redirector if service == "redirector" else maps.dns}

    def health(self) -> dict[str, Any]:
        o = self.opts
        return {"interval": o.health_interval, "timeout": min(o.health_timeout, o.health_interval),
                "fall": o.health_fall, "rise": o.health_rise}

    def config(self, host: str) -> ServiceConfig:
        """``host``'s service config: its service's own model (:func:`config_model`), validated here, so a
        wrong field fails now, naming host and field, and not as a readiness timeout; what the service is
        given is this model's JSON."""
        role = self.topo.host(host).role.value
        make = {"origin": self.origin_config, "edge": lambda: self.edge_config(host),
                "dns": lambda: self.dns_config(host), "resolver": lambda: self.resolver_config(host),
                "redirector": lambda: self.redirector_config(host)}.get(role)
        if make is None:
            raise ValueError(f"{host} is a {role}: it runs no CDN service")
        cfg = make()
        for name, value in self.opts.limits.get(role, {}).items():
            if name not in limit_fields(role):
                raise ValueError(f"limits.{role}.{name}: not a limit of {role}; its limits: "
                                 f"{', '.join(limit_fields(role))}")
            cfg[name] = value
        if role in self.opts.submissions:
            cfg["submission"] = dict(self.opts.submissions[role])
        return validate(config_model(role), cfg, f"the generated config of {host} ({role})")

    # -- multicast -----------------------------------------------------------------------------------
    @property
    def ingest_group(self) -> str | None:
        """The ingest group (origin -> edges; None: the topology names none)."""
        return self.mcast.ingest.group if self.mcast.ingest else None

    @property
    def control_group(self) -> str:
        """The control group (the edges' heartbeats)."""
        return self.mcast.control.group

    def _group(self, s: McastSession, host: str) -> dict[str, Any]:
        return {"group": s.group, "port": s.port, "iface_addr": self.ip(host), "ttl": 16, "loop": False}

    def control_listener_config(self, host: str, nodes_file: Path) -> dict[str, Any]:
        """Config of ``testbed.services.mcast.control`` listening on the control group in ``host``."""
        c = self.mcast.control
        return {"name": f"{host}-control", "log_file": str(self.log_dir / f"{host}-control.log"),
                "session_id": c.session_id, "key": self.mcast.key, "group": self._group(c, host),
                "interval_s": self.opts.heartbeat_interval, "nodes_file": str(nodes_file)}

    def control_members(self) -> set[str] | None:
        """Hosts the topology makes members of the control group (None: the topology names no such group)."""
        entries = [g for g in self.topo.multicast if g.group == self.control_group]
        return {m for g in entries for m in g.members} if entries else None

    def control_consumer_config(self, host: str) -> dict[str, Any] | None:
        """``control`` section of a DNS/redirector config (multicast on and ``host`` on the control group)."""
        members = self.control_members()
        if not self.opts.multicast or (members is not None and host not in members):
            return None
        c = self.mcast.control
        return {"group": self._group(c, host), "session_id": c.session_id, "key": self.mcast.key,
                "miss_limit": self.opts.control_miss_limit}

    # -- per role ------------------------------------------------------------------------------------
    def origin_config(self) -> dict[str, Any]:
        assert self.origin
        cfg = origin_fields(self.origin, "0.0.0.0", HTTP_PORT, self.opts.catalog) | {
            "admin_token": self.admin_token, "log_file": str(self.log_dir / f"{self.origin}.log"),
            "cdn_hostnames": [CDN_NAME]}
        if self.opts.origin_cache_control:
            cfg["cache_control"] = dict(self.opts.origin_cache_control)
        if self.opts.video:
            cfg["video"] = dict(self.opts.video)
        ingest = self.mcast.ingest
        if self.opts.multicast and ingest:
            cfg["ingest"] = {"group": self._group(ingest, self.origin), "session_id": ingest.session_id,
                             "key": self.mcast.key, "feedback_port": self.mcast.feedback_port,
                             "rate_mbps": self.opts.mcast_rate_mbps, "on_update": self.opts.mcast_on_update}
        return cfg

    def edge_config(self, e: str) -> dict[str, Any]:
        assert self.origin
        o = self.opts
        region = self.topo.host(e).region
        peers = [p for p in self.edges if p != e and (o.cooperation != "cluster" or
                                                         self.topo.host(p).region == region)]

        def peer(name: str) -> Peer:
            return Peer(name=name, http_url=f"http://{self.ip(name)}:{HTTP_PORT}", icp_host=self.ip(name),
                        icp_port=ICP_PORT)

        parent = f"http://{self.ip(o.parent)}:{HTTP_PORT}" if o.parent and e != o.parent else None
        cfg = edge_fields(e, "0.0.0.0", HTTP_PORT, f"http://{self.ip(self.origin)}:{HTTP_PORT}",
                          o.edge_capacity_bytes, o.cooperation, peer(e), [peer(p) for p in peers], parent) | {
            "log_file": str(self.log_dir / f"{e}.log"), "admin_token": self.admin_token,
            "eviction": o.eviction, "stale_if_error_s": o.stale_if_error_s}
        ingest, c = self.mcast.ingest, self.mcast.control
        if o.multicast and ingest:
            cfg["ingest"] = {"group": self._group(ingest, e), "session_id": ingest.session_id,
                             "key": self.mcast.key, "sender_addr": self.ip(self.origin),
                             "feedback_port": self.mcast.feedback_port}
            cfg["control"] = {"group": self._group(c, e), "session_id": c.session_id,
                              "key": self.mcast.key, "interval_s": o.heartbeat_interval, "addr": self.ip(e)}
        return cfg

    def _low_servers(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for name, level in self.dns.items():
            if level == "low":
                region = self.topo.host(name).region or "default"
                out.setdefault(region, []).append({"name": f"ns-{region}.{MAPPED_ZONE}",
                                                   "address": self.ip(name)})
        return out

    def customer_zones(self) -> list[dict[str, Any]]:
        hi = next((n for n, lv in self.dns.items() if lv in ("high", "both")), None)
        assert hi is not None, "the topology has no high-level DNS host (role dns, params.level high or both)"
        hi_ip = self.ip(hi)
        origin_ip = self.ip(self.origin) if self.origin else hi_ip
        return [
            {"origin": "customer.example", "records": [
                {"name": "@", "type": "NS", "data": "ns1.customer.example."},
                {"name": "ns1", "type": "A", "data": hi_ip},
                {"name": "origin", "type": "A", "data": origin_ip},
                {"name": "www", "type": "CNAME", "data": "cache.customer.example.cdnlab-dns.net."},
                {"name": "cache", "type": "CNAME", "data": "cache.customer.example.cdnlab-dns.net."},
            ]},
            {"origin": "cdnlab-dns.net", "records": [
                {"name": "@", "type": "NS", "data": "ns1.cdnlab-dns.net."},
                {"name": "ns1", "type": "A", "data": hi_ip},
                {"name": "cache.customer.example", "type": "CNAME", "data": f"{CDN_NAME}."},
            ]},
            {"origin": "cdnlab.net", "records": [
                {"name": "@", "type": "NS", "data": "ns1.cdnlab.net."},
                {"name": "ns1", "type": "A", "data": hi_ip},
            ]},
        ]

    def dns_config(self, name: str) -> dict[str, Any]:
        level = self.dns[name]
        o = self.opts
        cfg: dict[str, Any] = {"name": name, "host": self.ip(name), "port": 53, "admin_token": self.admin_token,
                               "log_file": str(self.log_dir / f"{name}.log"),
                               "mapping": self.mapping(o.mapping_policy, host=name), "health": self.health()}
        if level in ("high", "both"):
            cfg["zones"] = self.customer_zones()
        lows = self._low_servers()
        if level == "high" and lows:
            cfg["delegation"] = {"zone": MAPPED_ZONE, "ttl": o.referral_ttl, "servers": lows}
        if level in ("low", "both") or (level == "high" and not lows):
            region = self.topo.host(name).region or "default"
            cfg["mapped"] = {"zone": MAPPED_ZONE, "ttl": o.dns_ttl,
                             "nameservers": [{"name": f"ns-{region}.{MAPPED_ZONE}", "address": self.ip(name)}]}
        if level == "high" and not lows:
            cfg["mapped"]["nameservers"][0]["name"] = f"ns1.{MAPPED_ZONE}"
        control = self.control_consumer_config(name) if "mapped" in cfg else None
        if control:
            cfg["control"] = control
        return cfg

    def resolver_config(self, r: str) -> dict[str, Any]:
        hi = next(n for n, lv in self.dns.items() if lv in ("high", "both"))
        hi_ip = self.ip(hi)
        return {"name": r, "host": self.ip(r), "port": 53, "run_dir": str(self.run_dir / "unbound" / r),
                "log_file": str(self.log_dir / f"{r}.log"),
                "stub_zones": {z: [hi_ip] for z in ("customer.example", "cdnlab-dns.net", "cdnlab.net")},
                "access_control": [f"{self.topo.subnet} allow", "127.0.0.0/8 allow"],
                "ecs": self.opts.ecs, "cache": self.opts.resolver_cache,
                "extra_server_lines": list(self.opts.resolver_extra)}

    def redirector_config(self, r: str) -> dict[str, Any]:
        cfg = {"name": r, "host": "0.0.0.0", "port": HTTP_PORT, "log_file": str(self.log_dir / f"{r}.log"),
               "admin_token": self.admin_token,
               "mapping": self.mapping(self.opts.redirect_policy, "redirector", host=r), "health": self.health()}
        control = self.control_consumer_config(r)
        if control:
            cfg["control"] = control
        return cfg

    def hosts_of(self, role: str) -> list[str]:
        """The hosts whose ``role`` service this run starts, in launch order (low-level DNS servers first;
        none for roles left out of ``CdnOptions.roles``, nor edges without an origin or resolvers without a
        DNS to ask)."""
        if role not in self.opts.roles:
            return []
        return {"origin": [self.origin] if self.origin else [],
                "edge": list(self.edges) if self.origin else [],
                "dns": sorted(self.dns, key=lambda n: self.dns[n] == "high"),
                "resolver": list(self.resolvers) if self.dns else [],
                "redirector": list(self.redirectors)}[role]


def resolver_of(topo: Topology, client: str) -> str | None:
    """The resolver a client uses: ``params.resolver`` in the topology, else one of its region, else the
    first resolver (None when the topology has none)."""
    h = topo.host(client)
    if h.params.get("resolver"):
        return str(h.params["resolver"])
    resolvers = topo.hosts_with(Role.resolver)
    same = [r.name for r in resolvers if r.region == h.region]
    return (same or [r.name for r in resolvers] or [None])[0]
