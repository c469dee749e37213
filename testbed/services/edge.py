"""A CDN edge cache: a caching reverse proxy with HTTP caching semantics (RFC 9111) and cache cooperation.

Caching (RFC 9111, shared cache, rules in :mod:`testbed.services.freshness`): freshness from
``s-maxage``/``max-age``/``Expires``, else heuristic freshness (§4.2.2, ``heuristic_fraction`` of the time
since ``Last-Modified``); any final status with explicit freshness is stored; ``no-store`` and unqualified
``private`` are never stored, qualified ``no-cache="f"``/``private="f"`` store the response without those
fields; ``no-cache`` is stored and revalidated on every use; stale entries are revalidated with
``If-None-Match``/``If-Modified-Since`` and a 304 refreshes the stored headers (§3.2, §4.3.4); ``Age`` is
computed per §4.2.3; ``Vary`` selects a stored variant (secondary key); request ``max-age``, ``min-fresh``,
``max-stale``, ``no-cache``, ``only-if-cached`` (504) and ``Pragma: no-cache`` are honoured (§5.2.1).
Partial content (RFC 9111 §3.3-3.4, ``range_requests: parts``, the default): a Range request that misses
goes upstream with its range, and the 206 is stored as a part (:mod:`testbed.services.partial`); later
ranges inside the stored parts are served from them, and parts of one representation (equal strong
validators) that cover the object become a complete stored response. ``range_requests: whole`` fetches
the whole object on a Range miss instead (nginx's way). Targeted cache control (RFC 9213): the first of ``targeted_fields`` present (default
``Cdnlab-Cache-Control``, then ``CDN-Cache-Control``) replaces ``Cache-Control`` and ``Expires`` for this
edge, and is removed from what the edge sends downstream.

Forwarding (RFC 9110 §7.6): every end-to-end request field goes upstream; hop-by-hop fields and the fields
named in ``Connection`` are removed in both directions. On the cached path the edge makes its own
conditional and range requests, so the client's ``Range``/``If-*`` fields are answered from the stored
object, not forwarded. A response that depends on a request field must say so with ``Vary``; the cache key
honours it (that is the defence against cache poisoning through unkeyed fields). Unsafe methods pass
through, and a non-error answer invalidates the target URI and same-origin ``Location`` and
``Content-Location`` URIs (RFC 9111 §4.4).
Concurrent misses for one object are collapsed into one upstream fetch. ``stale-if-error`` (RFC 5861)
serves a stale copy (``X-Cache: STALE``) when the upstream is unreachable or answers 5xx.

Responses carry ``X-Cache: HIT|MISS|REVALIDATED|STALE``, ``X-Served-By: <name>``, ``Via`` and ``Age``.

Cooperation on a local miss (lecture slides 7 and 20):

1. inside a cluster, the object's *home* member by rendezvous hashing (:mod:`testbed.services.hashing`)
   over ``cluster`` is asked over HTTP, with ``X-CDN-Peer: <name>`` so the home does not forward again;
2. ``siblings`` are asked with ICPv2 (:mod:`testbed.services.icp`, RFC 2186) with ``icp_timeout_ms``;
   on ``ICP_OP_HIT`` the object is fetched from that sibling (``Cache-Control: only-if-cached``);
3. a ``parent_url`` cache, when configured, is asked before
4. the origin.

A request whose ``Via`` already names this edge skips steps 1-3 (loop protection).

Akamai-style URLs (slide 19): a request path ``/<anything>/<origin host>/<path>`` whose segments include
one of the origin's host names (``origin_hostnames``, plus the host of ``origin_url``) maps to
``/<path>``: e.g. ``/7/23/origin.cdnlab.test/img/x.jpg`` -> ``/img/x.jpg``. The first such segment wins.

Control endpoints: ``GET /_cdn/health``, ``GET /_cdn/stats``, ``POST /_cdn/purge`` with
``{"paths": [...]}``, and the ``PURGE`` method on any path.

Multicast (:mod:`testbed.services.mcast.cdn`): ``ingest`` makes the edge the receiver's object sink
(pushes -> :meth:`Edge.admit`, INVALIDATEs -> :meth:`Edge.purge`); ``control`` multicasts load HEARTBEATs.

Limits (:mod:`testbed.services.limits`): a connection over ``max_connections`` gets a complete 503 with
``Retry-After`` and is closed; a request with more than ``max_header_count`` fields or ``max_header_bytes``
bytes of them gets 431 (RFC 6585 §5); both are counted in the stats, and the edge keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field, field_validator

from testbed.services import admin, hashing, icp
from testbed.services.base import service_main
from testbed.services.daemon import Daemon, HttpReady
from testbed.services.eviction import load_policy, load_policy_class
from testbed.services.freshness import (
    RangeNotSatisfiable,
    current_age,
    format_http_date,
    freshness_lifetime,
    has_explicit_freshness,
    heuristic_lifetime,
    is_storable,
    needs_revalidation,
    not_modified,
    omitted_fields,
    parse_cache_control,
    parse_http_date,
    parse_range,
    policy_headers,
    precondition_failed,
    stale_if_error_window,
    stale_while_revalidate_window,
    vary_key,
    vary_names,
)
from testbed.services.interim import SINK as INTERIM_SINK
from testbed.services.interim import InterimAwareResponse, InterimRelay
from testbed.services.limits import HttpLimitsConfig, LimitedSite
from testbed.services.mcast.cdn import (
    ControlPublishConfig,
    EdgeIngest,
    EdgeIngestConfig,
    EdgeLoad,
    make_publisher,
    publisher_stats,
    run_publisher,
)
from testbed.services.partial import PartialObject, parse_content_range, parse_range_spec, resolve, validator
from testbed.services.store import ObjectStore

log = logging.getLogger(__name__)

PEER_HEADER = "X-CDN-Peer"
#: hop-by-hop fields (RFC 9110 §7.6.1), never forwarded in either direction
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: request fields the edge sets itself (Host and Content-Length by the client library, Via appended; the
#: body is already read, so an Expect: 100-continue has been answered)
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect", "via", PEER_HEADER.lower()}
#: request fields the cached path answers itself from the whole stored object instead of forwarding
ANSWERED_HERE = frozenset(
    {"range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since"}
)
#: RFC 9110 §9.2.1: methods that do not invalidate stored responses
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: the secondary key under which an object's stored parts live (no Vary value can equal it: it holds a NUL)
PARTS = ("\x00parts",)
_ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]*"')
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: response headers never stored or relayed (hop-by-hop, recomputed, or per-user)
DROP_RESPONSE = HOP_BY_HOP | {"content-length", "x-cache", "x-served-by"}
NOT_STORED = frozenset({"set-cookie"})
SERVER_ERRORS = frozenset({500, 502, 503, 504})
_CONDITIONAL_OR_RANGE = (
    "Range",
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
)  # looked up case-insensitively
#: request fields that keep a request off the hit fast path (:meth:`Edge.fast_hit`): what the full path
#: decides on besides the target, and message framing the fast path does not read
_NOT_FAST = frozenset(
    n.lower().encode()
    for n in (*_CONDITIONAL_OR_RANGE, "If-Range", "Cache-Control", "Pragma", "Via", PEER_HEADER,
              "Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Connection")
)


class ClusterMember(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    url: str  # http://host:port of that member


class Sibling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    icp_host: str = "127.0.0.1"  # an IP address (replies are matched by address)
    icp_port: int = Field(ge=1, le=65535)
    http_url: str


class EdgeConfig(HttpLimitsConfig):
    """Config of one edge cache (``python -m testbed.services.edge --config F``); its connection and header
    limits (``max_connections``, ``max_header_count``, ``max_header_bytes``) are :class:`HttpLimitsConfig`'s."""

    name: str = "edge"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    origin_url: str
    #: host names of the origin that may appear in Akamai-style paths (the host of origin_url always does)
    origin_hostnames: list[str] = Field(default_factory=lambda: ["origin.cdnlab.test"])
    capacity_bytes: int = Field(64 * 1024 * 1024, gt=0)
    eviction: str = "testbed.services.eviction:LRU"
    cluster: list[ClusterMember] = Field(default_factory=list)
    siblings: list[Sibling] = Field(default_factory=list)
    icp_host: str = "127.0.0.1"
    #: UDP port of this edge's ICP server; None: no ICP server; 0: any free port
    icp_port: int | None = Field(None, ge=0, le=65535)
    icp_timeout_ms: int = Field(50, ge=1, le=10_000)
    parent_url: str | None = None
    #: RFC 5861 stale-if-error window (s) for responses that do not carry their own
    stale_if_error_s: int = Field(0, ge=0)
    #: freshness given to objects pushed in with admit() that carry no explicit lifetime
    admit_ttl_s: int = Field(3600, ge=0)
    upstream_timeout_s: float = Field(10.0, gt=0)
    #: RFC 9111 §4.2.2 heuristic freshness: this fraction of the time since Last-Modified (0 turns it off)
    heuristic_fraction: float = Field(0.1, ge=0, le=1)
    #: a Range request that misses: ``parts`` forwards the range and stores the 206 as a part (RFC 9111
    #: §3.3-3.4; parts that cover the object become a complete response); ``whole`` fetches the whole object
    range_requests: Literal["parts", "whole"] = "parts"
    #: RFC 9213 targeted cache-control fields this edge obeys, first present wins; never sent downstream
    targeted_fields: list[str] = Field(default_factory=lambda: ["Cdnlab-Cache-Control", "CDN-Cache-Control"])
    #: bytes of request line / one header field beyond which a request is refused with 400
    max_field_size: int = Field(8190, ge=256)
    #: answer plain fresh hits below aiohttp (:mod:`testbed.services.hit_path`; off: every request takes
    #: the full path, the same answers more slowly)
    hit_fast_path: bool = True
    #: multicast ingest: objects and invalidations from the origin's group go straight into this cache
    ingest: EdgeIngestConfig | None = None
    #: multicast control channel: HEARTBEATs with this edge's load
    control: ControlPublishConfig | None = None

    @field_validator("eviction")
    @classmethod
    def _check_eviction(cls, v: str) -> str:
        load_policy_class(v)
        return v

    @field_validator("targeted_fields")
    @classmethod
    def _check_fields(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not _TOKEN.fullmatch(f)]
        if bad:
            raise ValueError(f"not HTTP field names: {bad}")
        return v

    @field_validator("origin_url", "parent_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("http",):
            raise ValueError("must be an http:// URL")
        return v.rstrip("/") if v else v


@dataclass
class Entry:
    """A stored response with its age bookkeeping precomputed (RFC 9111 §4.2.3), so a hit is cheap."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    response_time: float
    initial_age: float  # corrected_initial_age
    lifetime: float
    no_cache: bool
    sie: float  # stale-if-error window
    size: int
    policy: Mapping[str, str]  # the headers this edge decides with (RFC 9213: its targeted field)
    heuristic: bool = False  # lifetime from RFC 9111 §4.2.2, not from the response
    swr: float = 0.0  # stale-while-revalidate window (RFC 5861 §3)
    hit_headers: CIMultiDict[str] | None = None  # response headers of a plain hit, built on first use
    hit_head: bytes | None = None  # the fast path's status line and fields of a plain hit, but Age and Date
    hit_has_date: bool = False  # the stored fields have a Date (else the fast path adds the current one)

    def age(self, now: float) -> float:
        return self.initial_age + (now - self.response_time)


@dataclass
class Fetched:
    status: int
    headers: CIMultiDict[str]  # stripped of hop-by-hop fields
    body: bytes
    request_time: float
    response_time: float
    source: str  # origin | parent | peer | sibling
    extra: CIMultiDict[str] | None = None  # per-user fields relayed but not stored (Set-Cookie)


class UpstreamError(Exception):
    pass


def _asks_more(rh: Mapping[str, str]) -> bool:
    """Does the request ask for more than a fresh response (no-cache, max-age, min-fresh, Pragma)?"""
    cc = parse_cache_control(rh.get("Cache-Control"))
    return bool({"no-cache", "max-age", "min-fresh"} & cc.keys()) or (
        "Cache-Control" not in rh and rh.get("Pragma") == "no-cache"
    )


def connection_named(headers: Mapping[str, str]) -> frozenset[str]:
    """Lower-cased field names listed in ``Connection`` (RFC 9110 §7.6.1): hop-by-hop for this message."""
    names: set[str] = set()
    for k, v in headers.items():
        if k.lower() == "connection":
            names.update(t.strip().lower() for t in v.split(",") if t.strip())
    return frozenset(names)


def _strip(headers: Mapping[str, str]) -> tuple[CIMultiDict[str], CIMultiDict[str]]:
    """Split upstream headers into (storable, per-user) case-insensitive dicts, joining repeated fields;
    hop-by-hop fields and those named in ``Connection`` are dropped."""
    keep: CIMultiDict[str] = CIMultiDict()
    private: CIMultiDict[str] = CIMultiDict()
    named = connection_named(headers)
    for k, v in headers.items():
        lk = k.lower()
        if lk in DROP_RESPONSE or lk in named:
            continue
        target = private if lk in NOT_STORED else keep
        if lk in NOT_STORED:
            target.add(k, v)
        else:
            target[k] = f"{target[k]}, {v}" if k in target else v
    return keep, private


class Edge:
    """One edge cache: state, aiohttp server and upstream client. Use :meth:`start` / :meth:`close`."""

    def __init__(self, cfg: EdgeConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.store = ObjectStore(cfg.capacity_bytes, load_policy(cfg.eviction))
        self.vary: dict[str, tuple[str, ...]] = {}
        self.inflight: dict[
            tuple[str, tuple[str, ...]], asyncio.Future[tuple[Fetched, Mapping[str, str]]]
        ] = {}
        self.revalidating: dict[tuple[str, tuple[str, ...]], asyncio.Event] = {}
        self.via = f"1.1 {cfg.name} (cdnlab)"
        self.targets = tuple(cfg.targeted_fields)
        self._origin_netloc = urlsplit(cfg.origin_url).netloc.lower()
        hosts = list(cfg.origin_hostnames)
        origin_host = urlsplit(cfg.origin_url).hostname
        if origin_host and origin_host not in hosts:
            hosts.append(origin_host)
        self._markers = [f"/{h}/" for h in hosts if h]
        self.members = [m.name for m in cfg.cluster]
        self.member_urls = {m.name: m.url.rstrip("/") for m in cfg.cluster}
        self.counters: Counter[str] = Counter()
        self.per_object: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._date = (0, b"")  # the fast path's Date field, made once a second
        self._fast_keys: dict[str, str | None] = {}  # the fast path's target -> cache key (None: not cached)
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.ServerRunner | None = None
        self.icp_server: icp.IcpServer | None = None
        self._icp_transport: asyncio.DatagramTransport | None = None
        self.icp_client: icp.IcpClient | None = None
        self.port = 0
        self.icp_port = 0
        self._origin_failed_at = 0.0  # last time the origin could not be reached (ICP MISS_NOFETCH)
        self.ingest: EdgeIngest | None = EdgeIngest(cfg.ingest, self) if cfg.ingest else None
        self.publisher = make_publisher(cfg.name, cfg.control, EdgeLoad(self.stats)) if cfg.control else None
        self._mcast_failures: list[str] = []
        self._mcast_stop = asyncio.Event()
        self._mcast_tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()  # stale-while-revalidate refreshes
        # control endpoints; everything else is proxied. A low-level aiohttp Server (no router) keeps
        # the hit path short.
        self._control = {
            ("GET", "/_cdn/health"): self._h_health,
            ("HEAD", "/_cdn/health"): self._h_health,
            ("GET", "/_cdn/stats"): self._h_stats,
            ("POST", "/_cdn/purge"): self._h_purge,
        }

    # ---- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> int:
        self.session = aiohttp.ClientSession(
            auto_decompress=False,
            response_class=InterimAwareResponse,  # hands 1xx to the request's relay (interim.py)
            timeout=aiohttp.ClientTimeout(total=self.cfg.upstream_timeout_s),
            connector=aiohttp.TCPConnector(limit=256),
            # forward what the client sent, and nothing it did not (an added Accept-Encoding would store
            # compressed variants under the key of clients that cannot decode them)
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
        )
        if self.cfg.icp_port is not None:
            self._icp_transport, self.icp_server = await icp.start_server(
                self.icp_lookup, self.cfg.icp_host, self.cfg.icp_port, nofetch=self.origin_unreachable
            )
            self.icp_port = self._icp_transport.get_extra_info("sockname")[1]
        if self.cfg.siblings:
            self.icp_client = await icp.IcpClient.create(self.cfg.icp_host)
        server = web.Server(
            self._dispatch,
            access_log=None,
            max_field_size=self.cfg.max_field_size,
            max_line_size=self.cfg.max_field_size,
            **self.cfg.parser_limits(),
        )
        self.runner = web.ServerRunner(server)
        await self.runner.setup()
        site = LimitedSite(
            self.runner, self.cfg.host, self.cfg.port, limits=self.cfg, counters=self.counters, reuse_address=True,
            hit=self.fast_hit if self.cfg.hit_fast_path else None,
        )
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("edge %s on %s:%d (ICP %s)", self.name, self.cfg.host, self.port, self.icp_port or "off")
        self._mcast_stop.clear()
        if self.ingest is not None:
            self._mcast_tasks.append(asyncio.create_task(self.ingest.run(self._mcast_stop)))
        if self.publisher is not None:
            pub = run_publisher(self.publisher, self._mcast_stop, self._mcast_failures)
            self._mcast_tasks.append(asyncio.create_task(pub))
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
        self._mcast_stop.set()
        if self._mcast_tasks:
            await asyncio.wait(self._mcast_tasks, timeout=5)
            self._mcast_tasks.clear()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self._icp_transport is not None:
            self._icp_transport.close()
        if self.icp_client is not None:
            self.icp_client.close()
        if self.session is not None:
            await self.session.close()
            self.session = None

    # ---- the cache -----------------------------------------------------------------------------------
    def map_path(self, path: str) -> str:
        """Akamai-style ``/<anything>/<origin host>/<path>`` -> ``/<path>``; other paths unchanged."""
        for m in self._markers:
            i = path.find(m)
            if i >= 0:
                return path[i + len(m) - 1 :]
        return path

    def cache_key(self, target: str) -> str | None:
        """The primary cache key of a request target: the mapped origin path (still percent-encoded) plus
        the query. Absolute-form targets (``http://host/path``, sent to forward proxies) use their path."""
        if not target.startswith("/"):
            if not target.lower().startswith("http://"):
                return None
            slash = target.find("/", 7)
            target = target[slash:] if slash >= 0 else "/"
        path, sep, qs = target.partition("?")
        path = self.map_path(path)
        return f"{path}?{qs}" if sep and qs else path

    def _policy(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The headers this edge decides with: its targeted field in place of Cache-Control (RFC 9213)."""
        return policy_headers(headers, self.targets) if self.targets else headers

    def _make_entry(
        self, status: int, headers: Mapping[str, str], body: bytes, req_t: float, resp_t: float
    ) -> Entry:
        initial_age = current_age(headers, req_t, resp_t, resp_t)
        omit = omitted_fields(self._policy(headers)) | {"age"}  # Age is recomputed per hit
        headers = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in omit)
        policy = self._policy(headers)
        cc = parse_cache_control(policy.get("Cache-Control"))
        size = len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        lifetime = freshness_lifetime(policy)
        heuristic = False
        if not has_explicit_freshness(policy):
            h = heuristic_lifetime(status, policy, self.cfg.heuristic_fraction, resp_t)
            heuristic, lifetime = h > 0, max(lifetime, h)
        return Entry(
            status,
            headers,
            body,
            resp_t,
            initial_age,
            lifetime,
            "no-cache" in cc and not cc["no-cache"],
            stale_if_error_window(policy, self.cfg.stale_if_error_s),
            size,
            policy,
            heuristic,
            stale_while_revalidate_window(policy),
        )

    def _store(
        self, key: str, skey: tuple[str, tuple[str, ...]], entry: Entry, names: tuple[str, ...]
    ) -> None:
        old = self.vary.get(key)
        if old is not None and old != names:  # the variant set changed: drop the old variants
            self._remove_key(key)
        self.vary[key] = names
        self.store.remove((key, PARTS))  # a complete response makes stored parts useless
        self.store.put(skey, entry, entry.size)

    def _remove_key(self, key: str) -> bool:
        removed = False
        for sk in [k for k in self.store.keys() if k[0] == key]:
            removed |= self.store.remove(sk)
        self.vary.pop(key, None)
        return removed

    def purge(self, path: str) -> bool:
        """Remove every stored variant of ``path`` (an origin path, optionally with query)."""
        removed = self._remove_key(self.map_path(path))
        if removed:
            self.counters["purged"] += 1
        return removed

    def admit(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Store a response pushed to this edge (e.g. by multicast ingestion) as a fresh entry."""
        key = self.map_path(path)
        hdrs, _ = _strip(headers)
        if not has_explicit_freshness(hdrs):
            hdrs["Cache-Control"] = ", ".join(
                filter(None, [hdrs.get("Cache-Control"), f"max-age={self.cfg.admit_ttl_s}"])
            )
        now = time.time()
        hdrs.setdefault("Date", format_http_date(now))
        names = vary_names(hdrs)
        if names is None:
            return
        self._store(
            key, (key, vary_key(names, {})), self._make_entry(status, hdrs, bytes(body), now, now), names
        )
        self.counters["admitted"] += 1

    def origin_unreachable(self) -> bool:
        """True for 5 s after the origin could not be reached: ICP answers MISS_NOFETCH (RFC 2186 §2.1)."""
        return time.time() - self._origin_failed_at < 5.0

    def icp_lookup(self, url: str) -> bool:
        """ICP HIT when a fresh copy of the URL's path is stored."""
        parts = urlsplit(url)
        key = self.map_path(parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        names = self.vary.get(key)
        if names is None:
            return False
        now = time.time()
        for sk in (
            [(key, vary_key(names, {}))] if not names else [k for k in self.store.keys() if k[0] == key]
        ):
            e = self.store.peek(sk)
            if e is not None and not e.no_cache and e.age(now) < e.lifetime:
                return True
        return False

    # ---- responses ---------------------------------------------------------------------------------
    def _respond(
        self,
        request: web.BaseRequest,
        entry: Entry | Fetched,
        xcache: str,
        age: float | None,
        extra: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        headers = entry.headers.copy()
        for t in self.targets:  # RFC 9213: the targeted field is for this edge only
            headers.popall(t, None)
        if extra:
            headers.update(extra)
        headers["Via"] = f"{headers['Via']}, {self.via}" if "Via" in headers else self.via
        headers["X-Cache"] = xcache
        headers["X-Served-By"] = self.name
        if age is not None:
            headers["Age"] = str(int(age))
        status, body = entry.status, entry.body
        rh = request.headers
        if status == 200 and ("If-Match" in rh or "If-Unmodified-Since" in rh):
            lm = parse_http_date(headers.get("Last-Modified"))
            if precondition_failed(rh, headers.get("ETag"), lm):
                return web.Response(status=412, headers=headers)
        if status == 200 and ("If-None-Match" in rh or "If-Modified-Since" in rh):
            # RFC 9111 §4.3.2: Last-Modified, else Date, else when the response was received
            lm = parse_http_date(headers.get("Last-Modified")) or parse_http_date(headers.get("Date"))
            if lm is None and isinstance(entry, Entry):
                lm = entry.response_time
            if not_modified(rh, headers.get("ETag"), lm):
                return web.Response(status=304, headers=headers)
        if status == 200 and "Range" in rh:
            try:
                r = parse_range(rh["Range"], len(body))
            except RangeNotSatisfiable:
                headers["Content-Range"] = f"bytes */{len(body)}"
                return web.Response(status=416, headers=headers)
            if r is not None:
                headers["Content-Range"] = f"bytes {r[0]}-{r[1]}/{len(body)}"
                return web.Response(status=206, body=body[r[0] : r[1] + 1], headers=headers)
        return web.Response(status=status, body=body, headers=headers)

    def _hit_headers(self, entry: Entry) -> CIMultiDict[str]:
        """The response fields of a plain hit on ``entry`` but Age (built once per entry)."""
        h = entry.hit_headers
        if h is None:
            h = entry.hit_headers = entry.headers.copy()
            for t in self.targets:
                h.popall(t, None)
            h["Via"] = f"{h['Via']}, {self.via}" if "Via" in h else self.via
            h["X-Cache"] = "HIT"
            h["X-Served-By"] = self.name
        return h

    def _plain_hit(self, entry: Entry, age: float) -> web.Response:
        """The hot path: a whole stored 200 with no conditional or Range in the request."""
        resp = web.Response(body=entry.body, headers=self._hit_headers(entry))  # aiohttp copies the headers
        resp.headers["Age"] = str(int(age))
        return resp

    def fast_hit(self, target: str, names: frozenset[bytes]) -> bytes | None:
        """The fast path's answer (:mod:`testbed.services.hit_path`) to a plain ``GET target`` with fields
        ``names``: the whole response, byte for byte what :meth:`_plain_hit` answers through aiohttp, when
        the full path would answer that too (a fresh stored 200 without Vary, nothing conditional, no
        ``Cache-Control``/``Pragma``, no peer or ``Via``); else None, and the full path takes it."""
        if not names.isdisjoint(_NOT_FAST):
            return None
        key = self._fast_keys.get(target, "")
        if key == "":  # each distinct target's key is made once (a bounded memo)
            if len(self._fast_keys) >= 4096:
                self._fast_keys.clear()
            key = self._fast_keys[target] = None if target.startswith("/_cdn/") else self.cache_key(target)
        if key is None or self.vary.get(key):
            return None
        skey = (key, ())
        entry: Entry | None = self.store.peek(skey)
        if entry is None or entry.status != 200 or entry.no_cache:
            return None
        now = time.time()
        age = entry.age(now)
        if age >= entry.lifetime:
            return None
        self.store.get(skey)  # the eviction policy counts the use, as on the full path
        self._count(key, "hits", len(entry.body))
        self.counters["fast_hits"] += 1
        head = entry.hit_head
        if head is None:
            head = entry.hit_head = self._hit_head(entry)
        second = int(now)
        if self._date[0] != second:
            self._date = (second, f"Date: {format_http_date(second)}\r\n".encode())
        return b"".join((head, b"Age: %d\r\n" % int(age), b"" if entry.hit_has_date else self._date[1],
                         b"\r\n", entry.body))

    def _hit_head(self, entry: Entry) -> bytes:
        """Status line and fields of a plain hit as aiohttp writes them (it adds Content-Type when there is a
        body, Content-Length, Date unless stored, Server), but Age and Date, which change per request."""
        h = self._hit_headers(entry).copy()
        h.popall("Age", None)
        if entry.body:
            h.setdefault("Content-Type", "application/octet-stream")
        h["Content-Length"] = str(len(entry.body))
        h.setdefault("Server", SERVER_SOFTWARE)
        entry.hit_has_date = "Date" in h
        lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in h.items())]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def _count(self, key: str, what: str, bytes_from_cache: int = 0) -> None:
        self.counters[what] += 1
        self.per_object[key][what] += 1
        if bytes_from_cache:
            self.counters["bytes_from_cache"] += bytes_from_cache

    # ---- request handling ----------------------------------------------------------------------------
    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_cdn/"):
            handler = self._control.get((request.method, path))
            if handler is not None:
                if path != "/_cdn/health" and (refused := self._refused(request, path)) is not None:
                    return refused
                return await handler(request)
            if path in ("/_cdn/health", "/_cdn/stats", "/_cdn/purge"):
                return web.Response(status=405, text="method not allowed\n")
        relay = InterimRelay(request, self.counters)  # upstream 1xx go to this client as they come
        token = INTERIM_SINK.set(relay)
        try:
            return await self._h_proxy(request)
        finally:
            relay.close()
            INTERIM_SINK.reset(token)

    def _refused(self, request: web.BaseRequest, what: str) -> web.Response | None:
        """The 403 for a control request without the run's management token (None: allowed)."""
        refused = admin.check(request, self.cfg.admin_token, what)
        if refused is not None:
            self.counters["control_refused"] += 1
        return refused

    async def _h_proxy(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        key = self.cache_key(request.raw_path)
        if key is None:
            return web.Response(status=400, text="bad request target\n")
        if method == "PURGE":
            if (refused := self._refused(request, "PURGE")) is not None:
                return refused
            ok = self.purge(key)
            return web.json_response({"path": key, "purged": ok}, status=200 if ok else 404)
        if method not in ("GET", "HEAD"):
            return await self._pass_through(request, key)
        rh = request.headers
        peer = PEER_HEADER in rh
        if peer:
            self.counters["peer_requests_received"] += 1
        loop_seen = self.via in rh.get("Via", "")
        names = self.vary.get(key, ())
        skey = (key, vary_key(names, rh) if names else ())
        entry: Entry | None = self.store.get(skey)
        now = time.time()
        cooperative = not peer and not loop_seen
        if entry is not None:
            age = entry.age(now)
            if "Cache-Control" in rh or "Pragma" in rh:
                stale = needs_revalidation(entry.policy, age, rh)
                if entry.heuristic and stale and age < entry.lifetime and not _asks_more(rh):
                    stale = False  # fresh by heuristics, and the request asks nothing stricter
                only_if_cached = "only-if-cached" in parse_cache_control(rh.get("Cache-Control"))
            else:
                stale = entry.no_cache or age >= entry.lifetime
                only_if_cached = False
            if not stale:
                self._count(key, "hits", len(entry.body))
                if entry.status == 200 and not any(h in rh for h in _CONDITIONAL_OR_RANGE):
                    return self._plain_hit(entry, age)
                return self._respond(request, entry, "HIT", age)
            if entry.swr > 0 and age - entry.lifetime <= entry.swr and not _asks_more(rh):
                # RFC 5861 §3: serve it stale now, revalidate once in the background
                self._refresh_in_background(key, skey, entry, rh)
                self._count(key, "stale", len(entry.body))
                return self._respond(request, entry, "STALE", age)
            if only_if_cached:
                return web.Response(status=504, text="not cached (only-if-cached)\n")
            return await self._revalidate_collapsed(request, key, skey, entry, names)
        if "only-if-cached" in parse_cache_control(rh.get("Cache-Control")):
            return web.Response(status=504, text="not cached (only-if-cached)\n")
        if method == "GET" and self.cfg.range_requests == "parts" and "Range" in rh and not names:
            spec = parse_range_spec(rh["Range"])
            if spec is not None and "If-Range" not in rh:
                return await self._partial(request, key, skey, spec)
        return await self._miss(request, key, skey, cooperative)

    async def _partial(
        self,
        request: web.BaseRequest,
        key: str,
        skey: tuple[str, tuple[str, ...]],
        spec: tuple[int | None, int | None],
    ) -> web.StreamResponse:
        """A Range request with no complete stored response (RFC 9111 §3.3-3.4): answered from stored parts
        when they hold the range and are fresh, else the range goes upstream and a 206 is stored as a part
        (combined with the stored ones when the strong validators match; whole parts become a complete
        response)."""
        rh = request.headers
        pkey = (key, PARTS)
        now = time.time()
        p: PartialObject | None = self.store.get(pkey)
        if p is not None:
            policy = self._policy(p.headers)
            age = current_age(p.headers, p.response_time, p.response_time, now)
            r = resolve(spec, p.total)
            if r is not None and p.covers(*r) and not needs_revalidation(policy, age, rh):
                self._count(key, "hits", r[1] - r[0] + 1)
                headers = CIMultiDict(p.headers)
                for t in self.targets:
                    headers.popall(t, None)
                headers["Content-Range"] = f"bytes {r[0]}-{r[1]}/{p.total}"
                headers["Via"] = f"{headers['Via']}, {self.via}" if "Via" in headers else self.via
                headers["X-Cache"] = "HIT"
                headers["X-Served-By"] = self.name
                headers["Age"] = str(int(age))
                return web.Response(status=206, body=p.slice(*r), headers=headers)
        base = self.cfg.parent_url or self.cfg.origin_url
        source = "parent" if self.cfg.parent_url else "origin"
        try:
            f = await self._get(base + key, self._fwd(rh, {"Range": rh["Range"]}), source)
        except UpstreamError as e:
            self.counters["upstream_errors"] += 1
            return web.Response(status=502, text=f"upstream failed: {e}\n")
        self._count(key, "misses")
        names = vary_names(f.headers)
        if f.status == 206 and names == ():
            self._store_part(key, p, f, rh)
        elif f.status == 200 and names is not None and is_storable("GET", 200, rh, self._policy(f.headers)):
            # the upstream ignored the Range: store the whole response, answer the range from it
            entry = self._make_entry(200, f.headers, f.body, f.request_time, f.response_time)
            self._store(key, (key, vary_key(names, rh) if names else ()), entry, names)
        age = current_age(f.headers, f.request_time, f.response_time, time.time())
        return self._respond(request, f, "MISS", age, f.extra)

    def _store_part(self, key: str, p: PartialObject | None, f: Fetched, rh: Mapping[str, str]) -> None:
        cr = parse_content_range(f.headers.get("Content-Range"))
        if cr is None or cr[2] is None or len(f.body) != cr[1] - cr[0] + 1:
            return  # no complete length, or a body that does not match its range: not stored
        if not is_storable("GET", 200, rh, self._policy(f.headers)):
            return
        headers = {k: v for k, v in f.headers.items() if k.lower() not in ("content-range", "age")}
        v = validator(f.headers.get("ETag"), f.headers.get("Last-Modified"))
        if p is None or v is None or p.validator != v or p.total != cr[2]:
            p = PartialObject(cr[2], v, headers, f.response_time)  # another representation: start over
        else:
            p.headers, p.response_time = headers, f.response_time
        p.add(cr[0], f.body)
        whole = p.complete()
        if whole is not None:  # RFC 9111 §3.4: the parts make the whole response
            entry = self._make_entry(200, headers, whole, f.request_time, f.response_time)
            self._store(key, (key, ()), entry, ())
            self.counters["parts_combined"] += 1
            return
        size = p.size + sum(len(k) + len(v) + 4 for k, v in headers.items())
        self.store.put((key, PARTS), p, size)

    async def _miss(
        self, request: web.BaseRequest, key: str, skey: tuple[str, tuple[str, ...]], cooperative: bool
    ) -> web.StreamResponse:
        rh = request.headers
        fut = self.inflight.get(skey)
        if fut is not None:  # request collapsing: wait for the fetch already under way
            self.counters["collapsed"] += 1
            try:
                f, leader_rh = await asyncio.shield(fut)
            except UpstreamError as e:
                return web.Response(status=502, text=f"upstream failed: {e}\n")
            names = vary_names(f.headers)
            if (
                names is not None
                and is_storable("GET", f.status, rh, self._policy(f.headers))
                and vary_key(names, rh) == vary_key(names, leader_rh)
            ):
                self._count(key, "misses")
                age = current_age(f.headers, f.request_time, f.response_time, time.time())
                return self._respond(request, f, "MISS", age)
            # not shareable (private, no-store, another variant): fetch for this client alone
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.exception())  # followers may be gone; never "unretrieved"
        self.inflight[skey] = fut
        try:
            try:
                f = await self._fetch(key, rh, cooperative)
            except UpstreamError as e:
                fut.set_exception(e)
                self.counters["upstream_errors"] += 1
                return web.Response(status=502, text=f"upstream failed: {e}\n")
            fut.set_result((f, rh))
        finally:
            if self.inflight.get(skey) is fut:
                del self.inflight[skey]
        self._count(key, "misses")
        names = vary_names(f.headers)
        if names is not None and is_storable("GET", f.status, rh, self._policy(f.headers)):
            entry = self._make_entry(f.status, f.headers, f.body, f.request_time, f.response_time)
            vkey = (key, vary_key(names, rh) if names else ())
            self._store(key, vkey, entry, names)
        else:
            self.counters["uncachable"] += 1
        age = current_age(f.headers, f.request_time, f.response_time, time.time())
        return self._respond(request, f, "MISS", age, f.extra)

    async def _revalidate_collapsed(
        self,
        request: web.BaseRequest,
        key: str,
        skey: tuple[str, tuple[str, ...]],
        entry: Entry,
        names: tuple[str, ...],
    ) -> web.StreamResponse:
        """Concurrent requests for one stale entry wait for a single revalidation, then use its result."""
        running = self.revalidating.get(skey)
        if running is not None:
            self.counters["collapsed"] += 1
            await running.wait()
            fresh = self.store.get(skey)
            now = time.time()
            if fresh is not None and not fresh.no_cache and fresh.age(now) < fresh.lifetime:
                self._count(key, "hits", len(fresh.body))
                return self._respond(request, fresh, "HIT", fresh.age(now))
            return await self._revalidate(request, key, skey, fresh or entry, names)
        done = self.revalidating[skey] = asyncio.Event()
        try:
            return await self._revalidate(request, key, skey, entry, names)
        finally:
            done.set()
            del self.revalidating[skey]

    async def _revalidate(
        self,
        request: web.BaseRequest,
        key: str,
        skey: tuple[str, tuple[str, ...]],
        entry: Entry,
        names: tuple[str, ...],
    ) -> web.StreamResponse:
        rh = request.headers
        try:
            f = await self._conditional_get(key, entry, rh)
        except UpstreamError as e:
            f = None
            err = str(e)
        if f is None or f.status in SERVER_ERRORS:
            now = time.time()
            age = entry.age(now)
            if entry.sie > 0 and age - entry.lifetime <= entry.sie:
                self._count(key, "stale", len(entry.body))
                return self._respond(request, entry, "STALE", age)
            if f is None:
                self.counters["upstream_errors"] += 1
                return web.Response(status=502, text=f"upstream failed: {err}\n")
            self._count(key, "misses")
            return self._respond(request, f, "MISS", None)
        new = self._update_from(key, skey, entry, f, rh)
        if f.status == 304 and new is not None:
            self._count(key, "revalidated", len(entry.body))
            return self._respond(request, new, "REVALIDATED", new.age(time.time()), f.extra)
        self._count(key, "misses")
        return self._respond(
            request, f, "MISS", current_age(f.headers, f.request_time, f.response_time, time.time()), f.extra
        )

    async def _conditional_get(self, key: str, entry: Entry, rh: Mapping[str, str]) -> Fetched:
        """Ask the parent or origin whether ``entry`` is still current (RFC 9111 §4.3.1)."""
        cond: dict[str, str] = {}
        etag = entry.headers.get("ETag", "").strip()
        if _ENTITY_TAG.fullmatch(etag):  # RFC 9110 §8.8.3: only a well-formed entity-tag is a validator
            cond["If-None-Match"] = etag
        lm = entry.headers.get("Last-Modified")
        if lm is not None and parse_http_date(lm) is not None:
            cond["If-Modified-Since"] = lm
        base = self.cfg.parent_url or self.cfg.origin_url
        source = "parent" if self.cfg.parent_url else "origin"
        return await self._get(base + key, self._fwd(rh, cond), source)

    def _update_from(
        self, key: str, skey: tuple[str, tuple[str, ...]], entry: Entry, f: Fetched, rh: Mapping[str, str]
    ) -> Entry | None:
        """The store after a validation answer: a 304 updates the stored headers (RFC 9111 §3.2, §4.3.4;
        its Set-Cookie is in ``f.extra``, relayed but never stored), a storable answer replaces the entry,
        anything else removes it. Returns the entry now stored for the answer, if any."""
        if f.status == 304:
            headers = entry.headers.copy()
            headers.update(f.headers)
            new = self._make_entry(entry.status, headers, entry.body, f.request_time, f.response_time)
            self.store.replace_value(skey, new)
            return new
        new_names = vary_names(f.headers)
        if new_names is not None and is_storable("GET", f.status, rh, self._policy(f.headers)):
            e = self._make_entry(f.status, f.headers, f.body, f.request_time, f.response_time)
            self._store(key, (key, vary_key(new_names, rh) if new_names else ()), e, new_names)
            return e
        self.store.remove(skey)
        return None

    def _refresh_in_background(
        self, key: str, skey: tuple[str, tuple[str, ...]], entry: Entry, rh: Mapping[str, str]
    ) -> None:
        """One background revalidation per stored response (RFC 5861 §3); later requests in the window
        keep getting the stale copy until it lands."""
        if skey in self.revalidating:
            return
        done = self.revalidating[skey] = asyncio.Event()
        headers = CIMultiDict(rh)

        async def run() -> None:
            try:
                f = await self._conditional_get(key, entry, headers)
                if f.status not in SERVER_ERRORS:
                    self._update_from(key, skey, entry, f, headers)
            except UpstreamError as e:
                self.counters["upstream_errors"] += 1
                log.info("background revalidation of %s failed: %s", key, e)
            finally:
                done.set()
                if self.revalidating.get(skey) is done:
                    del self.revalidating[skey]

        self.counters["background_revalidations"] += 1
        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _fwd(
        self, rh: Mapping[str, str], extra: Mapping[str, str] | None = None, cached: bool = True
    ) -> CIMultiDict[str]:
        """The request fields sent upstream (RFC 9110 §7.6): every end-to-end field the client sent, minus
        hop-by-hop ones and those named in ``Connection``; on the ``cached`` path also minus the client's
        ``Range``/``If-*`` fields, which the edge answers itself from the whole object."""
        named = connection_named(rh)
        h: CIMultiDict[str] = CIMultiDict()
        for k, v in rh.items():
            lk = k.lower()
            if lk in NOT_FORWARDED or lk in named or (cached and lk in ANSWERED_HERE):
                continue
            h.add(k, v)
        via = ", ".join(v for k, v in rh.items() if k.lower() == "via")
        h["Via"] = f"{via}, {self.via}" if via else self.via
        if extra:
            h.update(extra)
        return h

    async def _get(self, url: str, headers: Mapping[str, str], source: str) -> Fetched:
        assert self.session is not None
        t0 = time.time()
        try:
            async with self.session.get(url, headers=headers, allow_redirects=False) as r:
                body = await r.read()
                keep, private = _strip(r.headers)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            if source == "origin":
                self._origin_failed_at = time.time()
            raise UpstreamError(f"{source} {url}: {e.__class__.__name__}: {e}") from None
        t1 = time.time()
        self.counters[f"fetches_from_{source}"] += 1
        self.counters["bytes_from_origin" if source in ("origin", "parent") else "bytes_from_peers"] += len(
            body
        )
        return Fetched(status, keep, body, t0, t1, source, private or None)

    async def _fetch(self, key: str, rh: Mapping[str, str], cooperative: bool) -> Fetched:
        """The miss path: cluster home, ICP siblings, parent, origin (lecture slides 7 and 20)."""
        fwd = self._fwd(rh)
        if cooperative and self.members:
            home = hashing.home(key, self.members)
            if home is not None and home != self.name and home in self.member_urls:
                self.counters["peer_fetches"] += 1
                try:
                    peer_h = fwd.copy()
                    peer_h[PEER_HEADER] = self.name
                    f = await self._get(self.member_urls[home] + key, peer_h, "peer")
                    if f.status not in SERVER_ERRORS:
                        return f
                except UpstreamError as e:
                    log.info("home %s unavailable: %s", home, e)
        if cooperative and self.icp_client is not None:
            addrs = {(s.icp_host, s.icp_port): s for s in self.cfg.siblings}
            hit = await self.icp_client.query(
                self.cfg.origin_url + key, list(addrs), self.cfg.icp_timeout_ms / 1000
            )
            if hit is not None:
                sib = addrs.get(hit) or next((s for s in self.cfg.siblings if s.icp_port == hit[1]), None)
                if sib is not None:
                    self.counters["sibling_fetches"] += 1
                    headers = fwd.copy()
                    headers[PEER_HEADER] = self.name
                    headers["Cache-Control"] = "only-if-cached"
                    try:
                        f = await self._get(sib.http_url.rstrip("/") + key, headers, "sibling")
                        if f.status == 200:
                            return f
                    except UpstreamError as e:
                        log.info("sibling %s unavailable: %s", sib.name, e)
        if self.cfg.parent_url and cooperative:
            try:
                f = await self._get(self.cfg.parent_url + key, fwd, "parent")
                if f.status not in SERVER_ERRORS:
                    return f
            except UpstreamError as e:
                log.info("parent unavailable: %s", e)
        return await self._get(self.cfg.origin_url + key, fwd, "origin")

    async def _pass_through(self, request: web.BaseRequest, key: str) -> web.StreamResponse:
        """Other methods go to the origin uncached; a non-error answer to an unsafe one invalidates the
        target URI and same-origin ``Location``/``Content-Location`` URIs (RFC 9111 §4.4)."""
        assert self.session is not None
        body = await request.read()
        headers = self._fwd(request.headers, cached=False)
        try:
            async with self.session.request(
                request.method, self.cfg.origin_url + key, headers=headers, data=body, allow_redirects=False
            ) as r:
                rbody = await r.read()
                keep, private = _strip(r.headers)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return web.Response(status=502, text=f"upstream failed: {e}\n")
        if 200 <= status < 400 and request.method not in SAFE_METHODS:
            self._remove_key(key)
            for field in ("Location", "Content-Location"):
                other = self._same_origin_key(request, keep.get(field))
                if other is not None:
                    self._remove_key(other)
        self.counters["passed_through"] += 1
        keep.update(private)
        for t in self.targets:
            keep.popall(t, None)
        keep["Via"] = self.via
        keep["X-Served-By"] = self.name
        keep["X-Cache"] = "MISS"
        return web.Response(status=status, body=rbody, headers=keep)

    def _same_origin_key(self, request: web.BaseRequest, ref: str | None) -> str | None:
        """The cache key of a URI reference in a response when it is same-origin (this edge's or the
        origin's authority, RFC 9111 §4.4); None otherwise."""
        if not ref:
            return None
        u = urlsplit(urljoin(f"http://{request.host}{request.path}", ref.strip()))
        if u.scheme != "http" or u.netloc.lower() not in (request.host.lower(), self._origin_netloc):
            return None
        return self.cache_key((u.path or "/") + (f"?{u.query}" if u.query else ""))

    # ---- control endpoints ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "name": self.name,
            "hits": c["hits"],
            "fast_hits": c["fast_hits"],  # of the hits, those answered on the fast path (hit_path.py)
            "interim_relayed": c["interim_relayed"],  # upstream 1xx (103 Early Hints...) sent on (interim.py)
            "misses": c["misses"],
            "revalidated": c["revalidated"],
            "stale": c["stale"],
            "parts_combined": c["parts_combined"],
            "background_revalidations": c["background_revalidations"],
            "collapsed": c["collapsed"],
            "uncachable": c["uncachable"],
            "upstream_errors": c["upstream_errors"],
            "bytes_from_cache": c["bytes_from_cache"],
            "bytes_from_origin": c["bytes_from_origin"],
            "bytes_from_peers": c["bytes_from_peers"],
            "fetches": {k[len("fetches_from_") :]: v for k, v in c.items() if k.startswith("fetches_from_")},
            "inter_cache": {
                "peer_fetches": c["peer_fetches"],
                "peer_requests_received": c["peer_requests_received"],
                "sibling_fetches": c["sibling_fetches"],
                "icp_client": self.icp_client.stats() if self.icp_client else {},
                "icp_server": self.icp_server.stats() if self.icp_server else {},
            },
            "purged": c["purged"],
            "admitted": c["admitted"],
            "refused_connections": c["refused_connections"],  # over max_connections: 503 (limits.py)
            "refused_headers": c["refused_headers"],  # over max_header_count/max_header_bytes: 431
            "timed_out_headers": c["timed_out_headers"],  # no whole header section in header_timeout_s: 408
            "control_refused": c["control_refused"],  # control requests without the management token: 403
            "ingest": self.ingest.stats() if self.ingest else None,
            "control": publisher_stats(self.publisher, self._mcast_failures) if self.publisher else None,
            "objects": {k: dict(v) for k, v in self.per_object.items()},
            "store": {
                "bytes_used": self.store.used_bytes,
                "capacity_bytes": self.store.capacity_bytes,
                "objects": len(self.store),
                "evictions": self.store.evictions,
                "policy": self.cfg.eviction,
            },
        }

    async def _h_health(self, request: web.BaseRequest) -> web.Response:
        return web.json_response({"name": self.name, "ok": True})

    async def _h_stats(self, request: web.BaseRequest) -> web.Response:
        return web.json_response(self.stats())

    async def _h_purge(self, request: web.BaseRequest) -> web.Response:
        try:
            data = await request.json()
            paths = data["paths"]
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ValueError("'paths' must be a list of strings")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            return web.json_response({"error": f'expected {{"paths": [...]}}: {e}'}, status=400)
        purged = [p for p in paths if self.purge(p)]
        return web.json_response({"purged": purged, "not_found": [p for p in paths if p not in purged]})


async def serve(cfg: EdgeConfig, stop: asyncio.Event) -> None:
    """Run a cdnlab edge cache until ``stop`` is set."""
    edge = Edge(cfg)
    await edge.start()
    try:
        await stop.wait()
    finally:
        await edge.close()


#: this service to the launcher (:mod:`testbed.services.daemon`):
#: edges fetch from the origin on demand, so they start with it
DAEMON = Daemon(
    role="edge", module="testbed.services.edge", config=EdgeConfig, ready=HttpReady("/_cdn/health")
)


def main(argv: list[str] | None = None) -> int:
    return service_main(EdgeConfig, serve, argv, prog="python -m testbed.services.edge")


if __name__ == "__main__":
    sys.exit(main())
