"""The fetch sample keeps the response's ETag (the version served) in ``Sample.extra``."""

from __future__ import annotations

from aiohttp import web

from testbed.measure.fetch import Target, fetch
from testbed.util import free_port


async def test_etag_recorded_in_extra_and_row_only_when_sent() -> None:
    port = free_port()

    async def content(request: web.Request) -> web.Response:
        headers = {"X-Served-By": "e1", "X-Cache": "HIT"}
        if request.path == "/tagged":
            headers["ETag"] = '"abc-v3"'
        return web.Response(body=b"x" * 10, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", content)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        s = await fetch("anycast", Target(vip="127.0.0.1", port=port), "/tagged")
        assert s.error == "" and s.extra == {"etag": '"abc-v3"'}
        row = s.row()
        assert row["etag"] == '"abc-v3"' and row["served_by"] == "e1" and "extra" not in row
        plain = await fetch("anycast", Target(vip="127.0.0.1", port=port), "/plain")
        assert plain.extra == {} and "etag" not in plain.row()
    finally:
        await runner.cleanup()
