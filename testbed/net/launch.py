"""Start the CDN's real service processes inside a built network, by host role.

* ``origin``: the content provider's origin server (port 80);
* ``edge``: a caching reverse proxy (port 80 on every address, so anycast VIP traffic is served too);
* ``dns``: the mapping DNS, Akamai's two levels (lecture slide 21): ``params.level`` is ``high`` (the
  customer's zones with the CNAME chain, plus the referral of ``g.cdnlab.net`` to the low-level server of
  the resolver's region, long TTL), ``low`` (A records of edges, short TTL) or ``both`` (one server doing
  both, for small topologies);
* ``resolver``: a real ``unbound`` with stub zones pointing at the high-level DNS;
* ``redirector``: answers 302 to the edge chosen for the client's own address.

Both the DNS and the redirector choose with the policy ``CdnOptions.mapping_policy``/``redirect_policy``,
by default ``NetworkMap`` over the network map built from the topology (:mod:`testbed.net.netmap`): the
nearest live edge from the resolver (DNS), the client's /24 (DNS with ECS) or the client (redirector).

Names: clients ask for ``www.customer.example`` → CNAME ``cache.customer.example.cdnlab-dns.net`` →
CNAME ``a73.g.cdnlab.net`` → A (an edge). Every generated config is written to ``<run dir>/configs``.

``CdnOptions(multicast=True)`` makes the CDN use multicast over the controller's trees
(:mod:`testbed.services.mcast.cdn`): the origin runs an ingest sender on the topology's static group whose
source is the origin (``POST /_origin/push``; updates multicast INVALIDATEs), every edge runs the
receiver in-process with its cache as the sink (NACKs by unicast to the origin) and publishes HEARTBEATs on
the control group (the topology's group whose sources are edges, else ``239.10.0.2``).
:meth:`CdnServices.start_control_listener` runs a listener on a host; :meth:`CdnServices.push` pushes.
The mapping DNS servers (levels ``low``/``both``) and the redirectors that are members of the control group
consume the heartbeats in-process (their ``control`` section, :mod:`testbed.services.mcast.consumer`):
pushed load feeds ``LoadAware`` and an edge silent for ``control_miss_limit`` intervals counts as down.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contract.config import validate
from testbed.net.build import CdnNet
from testbed.net.mcast_plan import McastPlan, McastSession
from testbed.net.netmap import NetworkMaps, network_maps, rtt_to_edges
from testbed.net.spec import Role, Topology
from testbed.services import admin
from testbed.services.base import ServiceConfig
from testbed.services.daemon import Daemon, HttpReady
from testbed.services.daemon import start_stages as daemon_stages
from testbed.services.edge.config import Peer, cooperation_fields
from testbed.services.mcast.control import ControlConfig
from testbed.util import StopWaiting, json_in, wait_until

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
FAILURE_KINDS = ("process", "host", "link")
#: what clients see when a host of each role fails (printed by the CLI's ``fail``)
FAILURE_EFFECTS = {
    "origin": "edges serve what they hold; a miss fails (502/504) unless the edge may serve it stale "
              "(stale-if-error)",
    "edge": "anycast, the mapping DNS and the redirector route around it once they notice",
    "dns": "resolvers answer from their cache until the TTLs run out; then lookups fail (SERVFAIL)",
    "resolver": "its clients' DNS lookups time out; anycast and redirect fetches still work",
    "redirector": "redirect fetches fail (connection refused or timeout); anycast and DNS still work",
    "client": "it is cut off: nothing reaches it",
    "router": "traffic through it stops",
}


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


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (configs and the header file hold keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        f.write(text)


def _py(module: str, cfg_path: Path) -> list[str]:
    return [sys.executable, "-m", module, "--config", str(cfg_path)]


class CdnServices:
    """The service processes of one running CDN (configs, start order, readiness, stop)."""

    def __init__(self, cn: CdnNet, opts: CdnOptions | None = None) -> None:
        self.cn = cn
        self.opts = opts or CdnOptions()
        assert cn.run_dir is not None
        self.cfg_dir = cn.run_dir / "configs"
        self.log_dir = cn.run_dir / "logs"
        t = cn.topo
        self.origin = next((h.name for h in t.hosts_with(Role.origin)), None)
        self.edges = [h.name for h in t.hosts_with(Role.edge)]
        self.resolvers = [h.name for h in t.hosts_with(Role.resolver)]
        self.redirectors = [h.name for h in t.hosts_with(Role.redirector)]
        self.dns = {h.name: str(h.params.get("level", "both")) for h in t.hosts_with(Role.dns)}
        self._maps: NetworkMaps | None = None
        self._rows: dict[str, dict[str, float]] | None = None
        #: the run's multicast sessions and key: the builder's plan (testbed.net.mcast_plan), the one copy
        self.mcast: McastPlan = cn.mcast
        # the run's management token (testbed.services.admin): in the configs of the services with control
        # endpoints, and in a curl header file the CLI, experiments and benchmarks send control requests with
        self.admin_token = secrets.token_urlsafe(24)
        self.admin_header_file = cn.run_dir / "admin-header"
        self._prepared = False  # the run directory's configs/, logs/ and header file (prepare())
        #: host -> the kind of failure injected on it (fail()), until recover(): what the CLI's `cdn`
        #: and the dashboard show, whoever injected it (the CLI, the page, an experiment)
        self.failed: dict[str, str] = {}
        if self.opts.mcast_on_update not in ("purge", "push", "none"):
            raise ValueError(f"mcast_on_update must be purge, push or none, not {self.opts.mcast_on_update!r}")
        if self.opts.multicast and self.mcast.ingest is None:
            raise ValueError(f"topology {t.name}: multicast=True needs a multicast group whose source is "
                             f"the origin and whose members are edges")

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
            for h in self.cn.topo.hosts:
                if not h.region:
                    continue
                net = str(ipaddress.ip_network(f"{self.cn.ip(h.name)}/{plen}", strict=False))
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
        return [{"name": e, "address": self.cn.ip(e), "port": HTTP_PORT,
                 "region": self.cn.topo.host(e).region or "default",
                 **({"probe_rtt_ms": rows[e]} if e in rows else {})} for e in self.edges]

    def rtt_rows(self) -> dict[str, dict[str, float]]:
        """host -> edge -> RTT (ms) by the topology's lowest-delay paths (computed once)."""
        if self._rows is None:
            self._rows = rtt_to_edges(self.cn.topo, self.edges)
        return self._rows

    def network_maps(self) -> NetworkMaps:
        """The redirector's and the DNS's network maps (computed once)."""
        if self._maps is None:
            addresses = {h.name: self.cn.ip(h.name) for h in self.cn.topo.hosts}
            self._maps = network_maps(self.cn.topo, addresses, self.edges, self.rtt_rows())
        return self._maps

    def mapping(self, policy: str, service: str = "dns", host: str | None = None) -> dict[str, Any]:
        """The ``mapping`` section of a DNS (``service="dns"``) or redirector config; ``host``: the service's
        host, whose path RTT to each edge sets that edge's probe timeout."""
        regions = self.regions() or {"default": [self.cn.topo.subnet]}
        rows = self.rtt_rows()
        rtt: dict[str, dict[str, float]] = {}
        for r in regions:  # configured RTT from a region's clients to each edge (LatencyMap): their mean
            members = [h.name for h in self.cn.topo.hosts if h.region == r and h.role == Role.client]
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

    def prepare(self) -> None:
        """Make the run directory's ``configs/`` and ``logs/`` and the management header file (once): the
        configs themselves are computed without touching the disk (``cdnlab plan`` writes them elsewhere)."""
        if self._prepared:
            return
        self.cfg_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _write_private(self.admin_header_file, admin.header_line(self.admin_token) + "\n")
        self._prepared = True

    def config(self, host: str) -> ServiceConfig:
        """``host``'s service config: its service's own model (:func:`config_model`), validated here, so a
        wrong field fails now, naming host and field, and not as a readiness timeout; what the service is
        given is this model's JSON."""
        role = self.cn.topo.host(host).role.value
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

    def _write(self, name: str, cfg: BaseModel) -> Path:
        self.prepare()
        p = self.cfg_dir / f"{name}.json"
        _write_private(p, cfg.model_dump_json(indent=1))  # it holds the run's keys
        return p

    # -- the management plane --------------------------------------------------------------------------
    def admin_curl(self) -> str:
        """curl options that authorise a control request: the run's token from its header file (mode 0600),
        so the token is on no command line."""
        self.prepare()
        return f"-H @{self.admin_header_file}"

    def control(self, via: str, url: str, method: str = "GET", body: Any = None, timeout_s: float = 5) -> Any:
        """A control request (stats, purge, update, fault, push) with the run's token, sent by curl inside
        host ``via``'s namespace; the JSON answer. Any status but 2xx (a refusal, a bad request, an unknown
        object, a conflict) or a non-JSON answer raises RuntimeError with the status and the body."""
        data = ""
        if body is not None:
            data = f"-H 'Content-Type: application/json' --data {shlex.quote(json.dumps(body))} "
        out = self.cn.host(via).cmd(
            f"curl -s -m {timeout_s:g} -X {method} {self.admin_curl()} {data}-w '\\n%{{http_code}}' {url}")
        text, _, code = out.strip().rpartition("\n")
        try:
            doc = json_in(text) if "{" in text else None
        except ValueError:
            doc = None
        if doc is None or not code.strip().isdigit() or not 200 <= int(code) < 300:
            raise RuntimeError(f"{method} {url} from {via}: HTTP {code.strip() or '?'}: {text.strip()[:300]}")
        return doc

    def service_stats(self, host: str) -> dict[str, Any]:
        """``host``'s service counters (edge, origin or redirector), asked inside ``host`` itself: management
        traffic does not cross the emulated network."""
        role = self.cn.topo.host(host).role.value
        path = {"edge": "/_cdn/stats", "origin": "/_origin/stats", "redirector": "/_redirector/stats"}.get(role)
        if path is None:
            raise ValueError(f"{host} is a {role}: only edges, the origin and redirectors have stats")
        return self.control(host, f"http://{self.cn.ip(host)}:{HTTP_PORT}{path}")

    def purge(self, paths: list[str], edges: list[str] | None = None) -> dict[str, Any]:
        """``POST /_cdn/purge`` of ``paths`` on ``edges`` (default: every edge), each asked inside its own
        host with the run's token: edge -> its answer (``purged``, ``not_found``)."""
        out: dict[str, Any] = {}
        for e in edges or self.edges:
            if e not in self.edges:
                raise ValueError(f"{e} is not an edge (edges: {', '.join(self.edges)})")
            out[e] = self.control(e, f"http://{self.cn.ip(e)}:{HTTP_PORT}/_cdn/purge", "POST", {"paths": paths})
        return out

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
        return {"group": s.group, "port": s.port, "iface_addr": self.cn.ip(host), "ttl": 16, "loop": False}

    def control_listener_config(self, host: str, nodes_file: Path) -> dict[str, Any]:
        """Config of ``testbed.services.mcast.control`` listening on the control group in ``host``."""
        c = self.mcast.control
        return {"name": f"{host}-control", "log_file": str(self.log_dir / f"{host}-control.log"),
                "session_id": c.session_id, "key": self.mcast.key, "group": self._group(c, host),
                "interval_s": self.opts.heartbeat_interval, "nodes_file": str(nodes_file)}

    def control_members(self) -> set[str] | None:
        """Hosts the topology makes members of the control group (None: the topology names no such group)."""
        entries = [g for g in self.cn.topo.multicast if g.group == self.control_group]
        return {m for g in entries for m in g.members} if entries else None

    def control_consumer_config(self, host: str) -> dict[str, Any] | None:
        """``control`` section of a DNS/redirector config (multicast on and ``host`` on the control group)."""
        members = self.control_members()
        if not self.opts.multicast or (members is not None and host not in members):
            return None
        c = self.mcast.control
        return {"group": self._group(c, host), "session_id": c.session_id, "key": self.mcast.key,
                "miss_limit": self.opts.control_miss_limit}

    def start_control_listener(self, host: str) -> Path:
        """Run a control-channel listener in ``host``; returns the JSON file it keeps the nodes' load in."""
        out = self.cn.run_dir / f"{host}-control-nodes.json"
        cfg = validate(ControlConfig, self.control_listener_config(host, out), f"the control listener of {host}")
        self._start(host, "testbed.services.mcast.control", cfg, "control")
        return out

    def push(self, paths: list[str] | None = None, via: str | None = None) -> dict[str, Any]:
        """``POST /_origin/push`` (``paths``, or the whole catalog) from host ``via`` (default: a client)."""
        assert self.origin
        via = via or next(h.name for h in self.cn.topo.hosts_with(Role.client))
        body = {"paths": paths} if paths is not None else {"all": True}
        return self.control(via, f"http://{self.cn.ip(self.origin)}:{HTTP_PORT}/_origin/push", "POST", body, 30)

    # -- per role ------------------------------------------------------------------------------------
    def origin_config(self) -> dict[str, Any]:
        assert self.origin
        cfg: dict[str, Any] = {"name": self.origin, "host": "0.0.0.0", "port": HTTP_PORT,
                               "admin_token": self.admin_token,
                               "log_file": str(self.log_dir / f"{self.origin}.log"),
                               "cdn_hostnames": [CDN_NAME], "catalog": dict(self.opts.catalog)}
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
        cfg: dict[str, Any] = {
            "name": e, "host": "0.0.0.0", "port": HTTP_PORT, "log_file": str(self.log_dir / f"{e}.log"),
            "admin_token": self.admin_token,
            "origin_url": f"http://{self.cn.ip(self.origin)}:{HTTP_PORT}",
            "capacity_bytes": o.edge_capacity_bytes, "eviction": o.eviction,
            "stale_if_error_s": o.stale_if_error_s,
        }
        region = self.cn.topo.host(e).region
        peers = [p for p in self.edges if p != e and (o.cooperation != "cluster" or
                                                         self.cn.topo.host(p).region == region)]

        def peer(name: str) -> Peer:
            return Peer(name=name, http_url=f"http://{self.cn.ip(name)}:{HTTP_PORT}", icp_host=self.cn.ip(name),
                        icp_port=ICP_PORT)

        parent = f"http://{self.cn.ip(o.parent)}:{HTTP_PORT}" if o.parent and e != o.parent else None
        cfg.update(cooperation_fields(o.cooperation, peer(e), [peer(p) for p in peers], parent))
        ingest, c = self.mcast.ingest, self.mcast.control
        if o.multicast and ingest:
            cfg["ingest"] = {"group": self._group(ingest, e), "session_id": ingest.session_id,
                             "key": self.mcast.key, "sender_addr": self.cn.ip(self.origin),
                             "feedback_port": self.mcast.feedback_port}
            cfg["control"] = {"group": self._group(c, e), "session_id": c.session_id,
                              "key": self.mcast.key, "interval_s": o.heartbeat_interval, "addr": self.cn.ip(e)}
        return cfg

    def _low_servers(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for name, level in self.dns.items():
            if level == "low":
                region = self.cn.topo.host(name).region or "default"
                out.setdefault(region, []).append({"name": f"ns-{region}.{MAPPED_ZONE}",
                                                   "address": self.cn.ip(name)})
        return out

    def customer_zones(self) -> list[dict[str, Any]]:
        hi = next((n for n, lv in self.dns.items() if lv in ("high", "both")), None)
        assert hi is not None, "the topology has no high-level DNS host (role dns, params.level high or both)"
        hi_ip = self.cn.ip(hi)
        origin_ip = self.cn.ip(self.origin) if self.origin else hi_ip
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
        cfg: dict[str, Any] = {"name": name, "host": self.cn.ip(name), "port": 53, "admin_token": self.admin_token,
                               "log_file": str(self.log_dir / f"{name}.log"),
                               "mapping": self.mapping(o.mapping_policy, host=name), "health": self.health()}
        if level in ("high", "both"):
            cfg["zones"] = self.customer_zones()
        lows = self._low_servers()
        if level == "high" and lows:
            cfg["delegation"] = {"zone": MAPPED_ZONE, "ttl": o.referral_ttl, "servers": lows}
        if level in ("low", "both") or (level == "high" and not lows):
            region = self.cn.topo.host(name).region or "default"
            cfg["mapped"] = {"zone": MAPPED_ZONE, "ttl": o.dns_ttl,
                             "nameservers": [{"name": f"ns-{region}.{MAPPED_ZONE}", "address": self.cn.ip(name)}]}
        if level == "high" and not lows:
            cfg["mapped"]["nameservers"][0]["name"] = f"ns1.{MAPPED_ZONE}"
        control = self.control_consumer_config(name) if "mapped" in cfg else None
        if control:
            cfg["control"] = control
        return cfg

    def resolver_config(self, r: str) -> dict[str, Any]:
        hi = next(n for n, lv in self.dns.items() if lv in ("high", "both"))
        hi_ip = self.cn.ip(hi)
        return {"name": r, "host": self.cn.ip(r), "port": 53, "run_dir": str(self.cn.run_dir / "unbound" / r),
                "log_file": str(self.log_dir / f"{r}.log"),
                "stub_zones": {z: [hi_ip] for z in ("customer.example", "cdnlab-dns.net", "cdnlab.net")},
                "access_control": [f"{self.cn.topo.subnet} allow", "127.0.0.0/8 allow"],
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

    # -- start / readiness ---------------------------------------------------------------------------
    def _http_ready(self, host: str, ip: str, path: str) -> bool:
        """One HTTP check from ``host``; curl gets three round trips of the configured path (at least 1 s)."""
        dst = next((h.name for h in self.cn.topo.hosts if self.cn.ip(h.name) == ip), None)
        rtt_s = 2 * self.cn.topo.path_delay_ms(host, dst) / 1000 if dst else 0.0
        out = self.cn.host(host).cmd(
            f"curl -s -o /dev/null -m {max(1, math.ceil(3 * rtt_s))} -w '%{{http_code}}' http://{ip}:{HTTP_PORT}{path}")
        return out.strip().endswith(("200", "302"))

    def _dns_ready(self, client: str, server_ip: str, name: str) -> bool:
        out = self.cn.host(client).cmd(f"dig +short +time=1 +tries=1 @{server_ip} {name} A")
        return bool(out.strip()) and "timed out" not in out and "no servers" not in out

    def _start(self, host: str, module: str, cfg: BaseModel, role: str) -> None:
        p = self._write(f"{host}-{role}", cfg)
        self.cn.popen(host, _py(module, p), role, log_name=f"logs/{host}-{role}.out")

    def _probe_host(self) -> str:
        return next((h.name for h in self.cn.topo.hosts_with(Role.client)), self.cn.topo.hosts[0].name)

    def _launch(self, host: str) -> None:
        """Start ``host``'s service process (its role's module and config)."""
        role = self.cn.topo.host(host).role.value
        self._start(host, daemon(role).module, self.config(host), role)

    def _alive(self, host: str, role: str) -> None:
        """Raise StopWaiting, with its log's tail, if ``host``'s service process has exited."""
        p = self.cn.procs.get(f"{host}:{role}")
        if p is None or p.poll() is None:
            return
        log = self.cn.run_dir / "logs" / f"{host}-{role}.out" if self.cn.run_dir else None
        try:
            tail = log.read_text(errors="replace")[-1500:].strip() if log else ""
        except OSError:
            tail = ""
        raise StopWaiting(f"{role} {host} exited (status {p.returncode}) before answering; "
                          f"its log ({log}) ends:\n{tail or '(empty)'}")

    def _wait_ready(self, host: str, what: str = "") -> None:
        """Wait until ``host``'s service answers as its role should (``what`` names the wait in errors); if
        the process exits first, fail at once with its log's tail."""
        role, ip, probe, t = self.cn.topo.host(host).role.value, self.cn.ip(host), self._probe_host(), \
            self.opts.ready_timeout

        def answering(check: Callable[[], bool]) -> Callable[[], bool]:
            def alive_and_answering() -> bool:
                self._alive(host, role)
                return check()

            return alive_and_answering

        ready = daemon(role).ready
        if isinstance(ready, HttpReady):
            wait_until(answering(lambda: self._http_ready(probe, ip, ready.path)), t, 0.1,
                       what=what or f"{role} {host} answering")
        elif ready.name == "cdn":
            # the high-level server answers its own zone; the referral for g.cdnlab.net has no answer
            q = "ns1.cdnlab.net" if self.dns.get(host) == "high" and self._low_servers() else CDN_NAME
            wait_until(answering(lambda: self._dns_ready(probe, ip, q)), t, 0.1,
                       what=what or f"DNS {host} answering {q}")
        else:
            wait_until(answering(lambda: self._dns_ready(probe, ip, CUSTOMER_NAME)), t, 0.2,
                       what=what or f"{role} {host} resolving {CUSTOMER_NAME}")

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

    def start(self) -> CdnServices:
        """Start the services stage by stage (:func:`start_stages`): every service of a stage is launched,
        then each is waited for (failing at once, with its log's tail, if its process exits)."""
        self.prepare()
        for roles in start_stages():
            hosts = [h for role in roles for h in self.hosts_of(role)]
            for h in hosts:
                self._launch(h)
            for h in hosts:
                self._wait_ready(h)
        return self

    # -- failures: every role (used by experiments and the CLI) -------------------------------------
    def resolver_for(self, client: str) -> str | None:
        """The client's resolver (see :func:`resolver_of`)."""
        return resolver_of(self.cn.topo, client)

    def steering_args(self, client: str, via: str) -> list[str] | None:
        """The options that send a measuring tool (``testbed.measure.player``, ``probe``) on ``client``
        through selection method ``via``: the anycast VIP, the client's resolver, or the redirector.
        None when this CDN has no such service."""
        if via == "anycast" and self.cn.topo.anycast:
            return ["--vip", self.cn.topo.anycast[0].vip]
        if via == "redirect" and self.redirectors:
            return ["--redirector", self.cn.ip(self.redirectors[0])]
        if via == "dns" and (res := self.resolver_for(client)):
            return ["--resolver", self.cn.ip(res)]
        return None

    def service_process(self, host: str) -> subprocess.Popen | None:
        """The running service process of ``host`` (None: none started, or it has exited)."""
        role = self.cn.topo.host(host).role.value
        p = self.cn.procs.get(f"{host}:{role}")
        return p if p is not None and p.poll() is None else None

    def kill_service(self, host: str) -> None:
        """Crash ``host``'s service: SIGKILL to its whole process group (the resolver's unbound with it)."""
        p = self.service_process(host)
        if p is None:
            return
        try:
            if os.getpgid(p.pid) == p.pid:  # mnexec -d made it a session (and group) leader
                os.killpg(p.pid, signal.SIGKILL)
            else:
                p.kill()
        except ProcessLookupError:
            pass
        p.wait(5)

    def fail(self, host: str, kind: str = "process") -> str:
        """Make ``host`` fail and return what clients should now see. ``kind``:

        * ``process``: its service crashes (SIGKILL); refused for hosts without one (clients, routers);
        * ``host``: it goes silent: its service crashes and every packet to it is dropped (no RST);
        * ``link``: its access link goes down.

        ValueError names the roles and kinds when the request makes no sense.
        """
        role = self.cn.topo.host(host).role.value  # KeyError: unknown host
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}: {', '.join(FAILURE_KINDS)}")
        if kind == "process" and role not in SERVICE_MODULES:
            raise ValueError(f"{host} is a {role} and runs no CDN service process; fail it with 'host' "
                             f"(silent) or 'link' (access link down). 'process' works on: "
                             f"{', '.join(SERVICE_MODULES)}")
        self.failed[host] = kind  # first: a watcher (the dashboard) never sees the host down but not failed
        try:
            if kind in ("process", "host"):
                self.kill_service(host)
            if kind == "host":
                self.cn.host(host).cmd("iptables -A INPUT -j DROP")
            elif kind == "link":
                self.cn.net.configLinkStatus(host, self.cn.topo.host(host).switch, "down")
        except BaseException:
            self.failed.pop(host, None)
            raise
        return FAILURE_EFFECTS[role]

    def recover(self, host: str, kind: str = "process") -> None:
        """Undo :meth:`fail` and, for a host with a service, restart it and wait until it answers."""
        role = self.cn.topo.host(host).role.value
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}: {', '.join(FAILURE_KINDS)}")
        if kind == "link":
            self.cn.net.configLinkStatus(host, self.cn.topo.host(host).switch, "up")
        if kind == "host":
            self.cn.host(host).cmd("iptables -D INPUT -j DROP")
        if role in SERVICE_MODULES and (kind in ("process", "host") or self.service_process(host) is None):
            self.restart(host)
        self.failed.pop(host, None)

    def restart(self, host: str) -> None:
        """Stop ``host``'s service if it runs, start it again from its config, wait until it answers."""
        self.kill_service(host)
        self._launch(host)
        self._wait_ready(host, f"{self.cn.topo.host(host).role.value} {host} answering again")

    # the edge-only names the failover experiment uses
    def kill_edge_process(self, edge: str) -> None:
        self.kill_service(edge)

    def fail_edge(self, edge: str, kind: str = "process") -> None:
        """Make an edge fail: ``process`` (killed: the kernel answers RST), ``host`` (silent: its
        packets are dropped, no RST, its link stays up) or ``link`` (its access link goes down)."""
        self.fail(edge, kind)

    def recover_edge(self, edge: str, kind: str = "process") -> None:
        """Undo :meth:`fail_edge` and wait until the edge answers again."""
        self.recover(edge, kind)

    def restart_edge(self, edge: str) -> None:
        self.restart(edge)


def resolver_of(topo: Topology, client: str) -> str | None:
    """The resolver a client uses: ``params.resolver`` in the topology, else one of its region, else the
    first resolver (None when the topology has none)."""
    h = topo.host(client)
    if h.params.get("resolver"):
        return str(h.params["resolver"])
    resolvers = topo.hosts_with(Role.resolver)
    same = [r.name for r in resolvers if r.region == h.region]
    return (same or [r.name for r in resolvers] or [None])[0]


def start_services(cn: CdnNet, opts: CdnOptions | None = None) -> CdnServices:
    """Start every service the topology's roles call for; returns the handle (also kept on ``cn``)."""
    svc = CdnServices(cn, opts).start()
    cn.services = svc
    return svc
