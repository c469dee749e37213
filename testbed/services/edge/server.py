"""The edge service: :class:`Edge` (its state, aiohttp server and upstream session), ``serve`` and ``main``."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from testbed.services import icp
from testbed.services.base import service_main
from testbed.services.daemon import Daemon, HttpReady
from testbed.services.edge.cache import CacheCore
from testbed.services.edge.config import EdgeConfig
from testbed.services.edge.control import ControlEndpoints
from testbed.services.edge.cooperation import Cooperation
from testbed.services.edge.entry import Fetched
from testbed.services.eviction import load_policy
from testbed.services.interim import InterimAwareResponse
from testbed.services.limits import LimitedSite
from testbed.services.mcast.cdn import (
    EdgeIngest,
    EdgeLoad,
    make_publisher,
    run_publisher,
)
from testbed.services.store import ObjectStore

log = logging.getLogger("testbed.services.edge")


class Edge(CacheCore, Cooperation, ControlEndpoints):
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
            self.runner,
            self.cfg.host,
            self.cfg.port,
            limits=self.cfg,
            counters=self.counters,
            reuse_address=True,
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
