"""The management plane (#16): control endpoints need the run's token; health and content stay open."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from cdn_dns_fixtures import REGIONS
from cdn_helpers import start_edge, start_origin

from contract.config import validate
from testbed.services import admin
from testbed.services.health import HealthChecker, HealthConfig
from testbed.services.mapping import EdgeSpec
from testbed.services.redirector import Redirector, RedirectorConfig

TOKEN = "t0ken-of-this-run-0123456789abcdef"
AUTH = admin.bearer(TOKEN)


@pytest.mark.parametrize(
    ("headers", "peer", "token", "ok"),
    [
        ({"Authorization": f"Bearer {TOKEN}"}, "10.0.0.9", TOKEN, True),
        ({"Authorization": f"bearer  {TOKEN} "}, "10.0.0.9", TOKEN, True),  # scheme is case-insensitive
        ({"Authorization": f"Bearer {TOKEN}x"}, "127.0.0.1", TOKEN, False),  # loopback is no excuse
        ({"Authorization": f"Basic {TOKEN}"}, "10.0.0.9", TOKEN, False),
        ({"Authorization": "Bearer"}, "10.0.0.9", TOKEN, False),
        ({}, "127.0.0.1", TOKEN, False),
        ({}, "127.0.0.1", None, True),  # no token: loopback only
        ({}, "::1", None, True),
        ({}, "10.0.0.9", None, False),
        ({"Authorization": f"Bearer {TOKEN}"}, "10.0.0.9", None, False),
        ({}, None, None, False),
    ],
)
def test_who_may_call_a_control_endpoint(headers, peer, token, ok):
    assert admin.authorized(headers, peer, token) is ok


def test_a_short_token_is_a_config_error():
    from pydantic import ValidationError

    from testbed.services.edge import EdgeConfig

    with pytest.raises(ValidationError, match="admin_token"):
        EdgeConfig(origin_url="http://127.0.0.1:1", admin_token="short")


async def status(http, method, url, **kw) -> tuple[int, dict | bytes]:
    async with http.request(method, url, **kw) as r:
        body = await r.json(content_type=None) if "json" in r.content_type else await r.read()
        return r.status, body


async def test_edge_purge_and_stats_need_the_token(http):
    origin = await start_origin()
    edge = await start_edge(origin.url, admin_token=TOKEN)
    try:
        path = next(o.path for o in origin.catalog.objects if o.cls == "image")
        assert (await status(http, "GET", edge.url + path))[0] == 200
        hits_before = edge.counters["hits"]
        assert (await status(http, "GET", edge.url + path))[0] == 200
        assert edge.counters["hits"] == hits_before + 1  # cached

        for method, p, kw in [
            ("PURGE", path, {}),
            ("POST", "/_cdn/purge", {"json": {"paths": [path]}}),
            ("GET", "/_cdn/stats", {}),
        ]:
            code, body = await status(http, method, edge.url + p, **kw)
            assert code == 403, (method, p, body)
            assert "management token" in body["error"], body
            wrong = {"Authorization": "Bearer " + "x" * 32}
            assert (await status(http, method, edge.url + p, headers=wrong, **kw))[0] == 403
        assert edge.counters["control_refused"] == 6
        # nothing was purged: still a hit
        assert (await status(http, "GET", edge.url + path))[0] == 200
        assert edge.counters["hits"] == hits_before + 2
        assert edge.counters["purged"] == 0

        assert (await status(http, "GET", edge.url + "/_cdn/health"))[0] == 200  # probes stay open
        code, stats = await status(http, "GET", edge.url + "/_cdn/stats", headers=AUTH)
        assert code == 200 and stats["hits"] == hits_before + 2 and stats["control_refused"] == 6
        code, body = await status(http, "PURGE", edge.url + path, headers=AUTH)
        assert code == 200 and body["purged"] is True
        code, body = await status(
            http, "POST", edge.url + "/_cdn/purge", headers=AUTH, json={"paths": [path]}
        )
        assert code == 200 and body["not_found"] == [path]  # already purged, and the request was allowed
    finally:
        await edge.close()
        await origin.close()


async def test_origin_control_needs_the_token_content_and_catalog_do_not(http):
    origin = await start_origin(admin_token=TOKEN)
    try:
        path = next(o.path for o in origin.catalog.objects if o.cls == "image")
        for method, p, kw in [
            ("GET", "/_origin/stats", {}),
            ("POST", f"/_origin/update{path}", {}),
            ("POST", "/_origin/fault", {"json": {"status": 503}}),
            ("POST", "/_origin/push", {"json": {"all": True}}),
            ("GET", "/_origin/unknown", {}),
        ]:
            code, body = await status(http, method, origin.url + p, **kw)
            assert code == 403, (method, p, body)
        assert origin.fault_status is None  # the refused fault did nothing
        assert (await status(http, "GET", origin.url + path))[0] == 200
        assert (await status(http, "GET", origin.url + "/_origin/health"))[0] == 200
        assert (await status(http, "GET", origin.url + "/_origin/catalog"))[0] == 200
        code, stats = await status(http, "GET", origin.url + "/_origin/stats", headers=AUTH)
        assert code == 200 and stats["control_refused"] == 5
        code, _ = await status(
            http, "POST", origin.url + "/_origin/fault", headers=AUTH, json={"status": 503}
        )
        assert code == 200 and origin.fault_status == 503
    finally:
        await origin.close()


class TokenEdge:
    """An edge stand-in whose stats need the token (as a real edge's do) and whose health is open."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.stats_asked = 0

    async def start(self) -> TokenEdge:
        async def health(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        async def stats(request: web.Request) -> web.Response:
            self.stats_asked += 1
            if (refused := admin.check(request, TOKEN, "stats")) is not None:
                return refused
            return web.json_response({"requests": 42})

        app = web.Application()
        app.router.add_get("/_cdn/health", health)
        app.router.add_get("/_cdn/stats", stats)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.mark.parametrize("with_token", [True, False])
async def test_health_checker_reads_load_with_the_token(with_token):
    e = await TokenEdge().start()
    spec = EdgeSpec(name="e1", address="127.0.0.1", port=e.port, region="eu")
    cfg = HealthConfig(interval=0.2, timeout=0.15, stats=True, load_field="requests", load_kind="gauge")
    hc = HealthChecker([spec], cfg, admin_token=TOKEN if with_token else None)
    try:
        await hc.start()
        snap = hc.snapshot()["e1"]
        assert snap["up"] is True  # health is open either way
        assert e.stats_asked >= 1
        assert snap["load"] == (42 if with_token else None)
    finally:
        await hc.stop()
        await e.stop()


async def test_redirector_stats_need_the_token_redirects_do_not():
    edges = [await TokenEdge().start() for _ in range(2)]
    specs = [
        {"name": f"eu{i}", "address": "127.0.0.1", "port": e.port, "region": "eu"}
        for i, e in enumerate(edges)
    ]
    cfg = validate(
        RedirectorConfig,
        {
            "name": "redir",
            "port": 0,
            "admin_token": TOKEN,
            "mapping": {"regions": REGIONS, "default_region": "eu", "edges": specs},
            "health": {"interval": 0.2, "timeout": 0.15},
        },
        "test",
    )
    r = Redirector(cfg)
    await r.start()
    try:
        base = f"http://127.0.0.1:{r.port}"
        async with aiohttp.ClientSession() as http:
            assert (await status(http, "GET", base + "/_redirector/stats"))[0] == 403
            assert (await status(http, "GET", base + "/_redirector/health"))[0] == 200
            async with http.get(base + "/a/b", allow_redirects=False) as resp:
                assert resp.status == 302
            code, stats = await status(http, "GET", base + "/_redirector/stats", headers=AUTH)
            assert code == 200 and stats["control_refused"] == 1 and stats["redirects"] == 1
    finally:
        await r.stop()
        for e in edges:
            await e.stop()
