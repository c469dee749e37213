"""Shared helpers for the mapping/DNS/redirector/resolver tests: a stand-in edge and a CDN zone layout.

Layout used everywhere (slide 21 of the lecture, with our names):

* ``customer.example``: ``www`` and ``cache`` CNAME ``cache.customer.example.cdnlab-dns.net.``
* ``cdnlab-dns.net``: ``cache.customer.example`` CNAME ``a73.g.cdnlab.net.``
* ``cdnlab.net`` (high-level): ``g.cdnlab.net`` referred to ``ns-<region>.g.cdnlab.net`` by resolver region
* ``g.cdnlab.net`` (low-level): ``aNN.g.cdnlab.net`` A -> edge

Regions by source address on loopback: ``127.0.0.0/16`` and ``127.53.0.0/16`` -> eu, ``127.2.0.0/16`` -> us.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class StandInEdge:
    """A tiny aiohttp edge serving ``/_cdn/health`` and ``/_cdn/stats`` on 127.0.0.1:<port the kernel gives>.

    It binds port 0 and reads the port back, so no other test can take the port between choosing and binding.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.requests = 0
        self.healthy = True
        self.runner: web.AppRunner | None = None

    async def _health(self, request: web.Request) -> web.Response:
        if not self.healthy:
            return web.json_response({"name": self.name, "ok": False}, status=503)
        return web.json_response({"name": self.name, "ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"name": self.name, "requests": self.requests})

    async def start(self) -> StandInEdge:
        app = web.Application()
        app.router.add_get("/_cdn/health", self._health)
        app.router.add_get("/_cdn/stats", self._stats)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def spec(self, region: str) -> dict[str, Any]:
        assert self.port, f"stand-in edge {self.name}: start() it before asking for its spec"
        return {"name": self.name, "address": "127.0.0.1", "port": self.port, "region": region}


REGIONS = {"eu": ["127.0.0.0/16", "127.53.0.0/16"], "us": ["127.2.0.0/16"]}


def static_zones() -> list[dict[str, Any]]:
    return [
        {
            "origin": "customer.example",
            "records": [
                {"name": "@", "type": "NS", "data": "ns1.customer.example."},
                {"name": "ns1", "type": "A", "data": "127.0.0.1"},
                {"name": "www", "type": "CNAME", "data": "cache.customer.example.cdnlab-dns.net."},
                {"name": "cache", "type": "CNAME", "data": "cache.customer.example.cdnlab-dns.net."},
                {"name": "origin", "type": "A", "data": "127.0.0.9"},
                {"name": "big", "type": "TXT", "data": " ".join(['"' + "x" * 200 + '"'] * 4)},
                {"name": "deep.sub", "type": "A", "data": "127.0.0.10"},
            ],
        },
        {
            "origin": "cdnlab-dns.net",
            "records": [{"name": "cache.customer.example", "type": "CNAME", "data": "a73.g.cdnlab.net."}],
        },
        {"origin": "cdnlab.net", "records": [{"name": "@", "type": "NS", "data": "ns1.cdnlab.net."}]},
    ]


def dns_config(
    *,
    edges: list[dict[str, Any]],
    port: int = 0,
    host: str = "127.0.0.1",
    high_level: dict[str, str] | None = None,
    low_level: bool = True,
    static: bool = True,
    policy: str = "testbed.services.mapping:GeoByResolver",
    health: dict[str, Any] | None = None,
    answers: int = 1,
) -> dict[str, Any]:
    """A DnsConfig dict. ``high_level`` maps region -> low-level server address (enables the referral)."""
    cfg: dict[str, Any] = {
        "name": "dns-test",
        "host": host,
        "port": port,
        "mapping": {"policy": policy, "regions": REGIONS, "default_region": "eu", "edges": edges},
        "health": health or {"interval": 0.2, "timeout": 0.15, "fall": 2, "rise": 2},
    }
    if static:
        cfg["zones"] = static_zones()
    if high_level:
        cfg["delegation"] = {
            "zone": "g.cdnlab.net",
            "ttl": 3600,
            "servers": {r: [{"name": f"ns-{r}.g.cdnlab.net", "address": a}] for r, a in high_level.items()},
        }
    if low_level:
        cfg["mapped"] = {
            "zone": "g.cdnlab.net",
            "ttl": 20,
            "answers": answers,
            "nameservers": [{"name": "ns-eu.g.cdnlab.net", "address": "127.0.0.1"}],
        }
    return cfg
