"""Shared fixtures-by-hand for the origin/edge/ICP tests: start real servers on loopback ports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from testbed.services.catalog import CatalogConfig
from testbed.services.edge import Edge, EdgeConfig
from testbed.services.origin import Origin, OriginConfig


async def start_origin(**kw: Any) -> Origin:
    kw.setdefault("catalog", CatalogConfig(seed=7, objects=40, max_bytes=200_000))
    o = Origin(OriginConfig(port=0, **kw))
    await o.start()
    return o


async def start_edge(origin_url: str, **kw: Any) -> Edge:
    kw.setdefault("port", 0)
    e = Edge(EdgeConfig(origin_url=origin_url, **kw))
    await e.start()
    return e


class Upstream:
    """A scriptable upstream: ``routes[path] = fn(request) -> web.Response``; counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[web.Request], web.Response]] = {}
        self.hits: Counter[str] = Counter()
        self.seen: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path_qs] += 1
        self.seen.append(dict(request.headers))
        fn = self.routes.get(request.path)
        if fn is None:
            return web.Response(status=404)
        r = fn(request)
        if hasattr(r, "__await__"):
            r = await r
        return r

    async def start(self) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.runner:
            await self.runner.cleanup()


async def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes (or ``timeout``)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        try:
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    out += chunk
        except TimeoutError:
            pass
        return out
    finally:
        writer.close()


def status_of(raw: bytes) -> int:
    """The status code of the first response in ``raw`` (0 when there is none)."""
    parts = raw.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else 0
