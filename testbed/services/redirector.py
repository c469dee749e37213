"""Application-level server selection: an HTTP redirector (lecture slides 11-12, "As part of application:
HTTP redirect").

Unlike the DNS server, the redirector sees the client's own address, so the same mapping policies
(:mod:`testbed.services.mapping`) are applied to the client rather than to its resolver. Every request
except the redirector's own paths is answered ``302 Found`` with ``Location:
http://<edge>:<port><same path and query>`` and ``Cache-Control: no-store`` (a redirect must not be cached:
the choice depends on liveness and load, RFC 9111 §5.2.2.5). The edge is picked within the chosen cluster by
rendezvous hash of the request path (or Host header) so that one object keeps landing on one cache; edges
the shared health checker marks down are never chosen; with none alive the answer is ``503``.

With a ``control`` section the redirector also listens to the edges' multicast heartbeats
(:mod:`testbed.services.mcast.consumer`): their load feeds ``LoadAware`` and an edge whose heartbeats stop
counts as down (down if the probes or the heartbeats say so, up only when both agree).

Own paths: ``GET /_redirector/stats`` (JSON counters, edge health, control channel), ``GET /_redirector/health``.

Limits (:mod:`testbed.services.limits`): a connection over ``max_connections`` gets a complete 503 with
``Retry-After`` and is closed; a request with more than ``max_header_count`` fields or ``max_header_bytes``
bytes of them gets 431 (RFC 6585 §5); the stats count them (``refused_connections``, ``refused_headers``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from typing import Literal

from aiohttp import web
from pydantic import Field

from testbed.services import admin
from testbed.services.base import service_main
from testbed.services.daemon import Daemon, HttpReady
from testbed.services.health import HealthChecker, HealthConfig
from testbed.services.limits import HttpLimitsConfig, LimitedSite
from testbed.services.mapping import MappingSpec, MapRequest, load_policy
from testbed.services.mcast.consumer import ControlConsumerConfig, ControlFeed

log = logging.getLogger(__name__)


#: the control paths anyone may call (health, for probes)
OPEN_PATHS = frozenset({"/_redirector/health"})


class RedirectorConfig(HttpLimitsConfig):
    """Config of ``python -m testbed.services.redirector``; its connection and header limits
    (``max_connections``, ``max_header_count``, ``max_header_bytes``) are :class:`HttpLimitsConfig`'s."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    mapping: MappingSpec = Field(default_factory=MappingSpec)
    health: HealthConfig = Field(default_factory=HealthConfig)
    hash_on: Literal["path", "host", "url"] = "path"  # what keeps a request on one edge
    status: Literal[302, 307] = 302
    #: multicast control channel: edges' heartbeats feed load and liveness
    control: ControlConsumerConfig | None = None


class Redirector:
    """The aiohttp application plus its health checker; ``await start()``, ``.port``, ``await stop()``."""

    def __init__(self, cfg: RedirectorConfig) -> None:
        self.cfg = cfg
        self.policy = load_policy(cfg.mapping)
        self.health = HealthChecker(cfg.mapping.edges, cfg.health, admin_token=cfg.admin_token)
        self.control = ControlFeed(cfg.control, cfg.mapping.edges, self.health) if cfg.control else None
        self.stats: Counter[str] = Counter()
        self.by_edge: Counter[str] = Counter()
        self.port = cfg.port
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[admin.guard(self.cfg.admin_token, "/_redirector/", OPEN_PATHS, self._count_refused)]
        )
        app.router.add_get("/_redirector/stats", self._stats)
        app.router.add_get("/_redirector/health", self._health)
        app.router.add_route("*", "/{tail:.*}", self._redirect)
        return app

    def _count_refused(self) -> None:
        self.stats["control_refused"] += 1

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "name": self.cfg.name,
                **self.stats,
                "by_edge": dict(self.by_edge),
                "edges": self.health.snapshot(),
                "control": self.control.stats() if self.control else None,
            }
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"name": self.cfg.name, "ok": True})

    async def _redirect(self, request: web.Request) -> web.Response:
        self.stats["requests"] += 1
        try:
            client = ipaddress.ip_address(request.remote or "0.0.0.0")
        except ValueError:
            client = ipaddress.ip_address("0.0.0.0")
        key = {"path": request.path, "host": request.host, "url": request.path_qs}[self.cfg.hash_on]
        decision = self.policy.choose(MapRequest(key, client), self.health)
        if not decision.edges:
            self.stats["no_live_edge"] += 1
            return web.json_response(
                {"error": "no live edge", "region": decision.region},
                status=503,
                headers={"Cache-Control": "no-store", "Retry-After": "1"},
            )
        edge = decision.edges[0]
        self.stats["redirects"] += 1
        self.by_edge[edge.name] += 1
        location = f"http://{edge.url_host()}:{edge.port}{request.path_qs}"
        return web.Response(
            status=self.cfg.status,
            headers={"Location": location, "Cache-Control": "no-store", "X-Cdn-Region": decision.region},
        )

    async def start(self) -> None:
        """Health warm-up first, so the first redirect already avoids dead edges; then listen."""
        await self.health.start()
        if self.control is not None:
            await self.control.start()
        self._runner = web.AppRunner(self.app(), access_log=None, **self.cfg.parser_limits())
        await self._runner.setup()
        site = LimitedSite(self._runner, self.cfg.host, self.cfg.port, limits=self.cfg, counters=self.stats)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn the port when 0 was asked
        if server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("redirector listening on %s:%d", self.cfg.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.control is not None:
            await self.control.stop()
        await self.health.stop()


async def serve(cfg: RedirectorConfig, stop: asyncio.Event) -> None:
    """HTTP redirector choosing an edge per client address."""
    r = Redirector(cfg)
    await r.start()
    try:
        await stop.wait()
    finally:
        await r.stop()
        log.info("stats: %s", dict(r.stats))


#: this service to the launcher (:mod:`testbed.services.daemon`):
#: it health-checks the edges it redirects to
DAEMON = Daemon(
    role="redirector",
    module="testbed.services.redirector",
    config=RedirectorConfig,
    ready=HttpReady("/_redirector/health"),
    after=("edge",),
)


def main(argv: list[str] | None = None) -> int:
    return service_main(RedirectorConfig, serve, argv, prog="testbed.services.redirector")


if __name__ == "__main__":
    raise SystemExit(main())
