"""A real player, dash.js in headless Chromium, streams the origin's video through an edge on loopback.

The page comes from a third server (another origin than the edge's, as a site embedding a CDN's video),
so the manifest and segments must carry the CORS header real video origins send. The real-media title
is encoded at fixture time by ``testbed.services.video_encode`` (ffmpeg); the synthetic one shows what
the architecture guide says of it: a real player reads its manifest and fetches its segments, and cannot
decode them.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from browser import chromium_available, headless_chromium, wait_for
from cdn_helpers import start_edge, start_origin

from testbed.services.video import VideoConfig, VideoTitle
from testbed.services.video_encode import encode

VENDOR = Path(__file__).resolve().parents[1] / "support" / "vendor"
pytestmark = [
    pytest.mark.skipif(chromium_available() is not None, reason=chromium_available() or ""),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)"),
]

PAGE = """<!doctype html><html><body><video id="v" muted playsinline></video>
<script src="/dash.all.min.js"></script>
<script>
window.errors = []; window.fragments = 0;
const player = dashjs.MediaPlayer().create();
player.on(dashjs.MediaPlayer.events.ERROR, (e) => window.errors.push(JSON.stringify(e.error || e)));
player.on(dashjs.MediaPlayer.events.FRAGMENT_LOADING_COMPLETED, () => { window.fragments += 1; });
player.initialize(document.getElementById("v"), new URLSearchParams(location.search).get("mpd"), true);
window.player = player;
</script></body></html>"""


class Servers:
    """Origin, edge and the page's server on loopback, in a thread of their own."""

    def __init__(self, media: Path) -> None:
        self.media = media
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.origin, self.edge, self.page_port = self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> tuple[Any, Any, int]:
        video = VideoConfig(titles=[VideoTitle(name="real", source="files", directory=str(self.media)),
                                    VideoTitle(name="testcard", duration_s=20)])
        origin = await start_origin(video=video)
        edge = await start_edge(origin.url)
        app = web.Application()
        async def page(_r: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        async def dashjs(_r: web.Request) -> web.FileResponse:
            return web.FileResponse(VENDOR / "dash.all.min.js")

        app.router.add_get("/", page)
        app.router.add_get("/dash.all.min.js", dashjs)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return origin, edge, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def close(self) -> None:
        async def stop() -> None:
            await self.runner.cleanup()
            await self.edge.close()
            await self.origin.close()

        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    media = tmp_path_factory.mktemp("media")
    encode(media, duration_s=8.0, segment_s=2.0)
    s = Servers(media)
    try:
        yield s
    finally:
        s.close()


def _play(servers: Servers, title: str) -> Any:
    mpd = f"http://127.0.0.1:{servers.edge.port}/dash/{title}/manifest.mpd"
    return f"http://127.0.0.1:{servers.page_port}/?mpd={mpd}"


def test_dash_js_plays_the_real_title_through_the_edge(servers: Servers) -> None:
    with headless_chromium(800, 600) as driver:
        driver.get(_play(servers, "real"))
        played = wait_for(driver, "document.getElementById('v').currentTime > 3 && "
                                  "document.getElementById('v').currentTime", timeout=45)
        errors = driver.execute_script("return window.errors")
        ladder = driver.execute_script(
            "return window.player.getRepresentationsByType('video').map(r => r.bandwidth)")
        fragments = driver.execute_script("return window.fragments")
    assert played > 3 and errors == [], errors
    assert len(ladder) == 5 and min(ladder) < 400_000 and max(ladder) > 4_000_000, ladder
    assert fragments >= 3  # init and media segments, each through the edge
    seen = [p for p in servers.origin.by_path if p.startswith("/dash/real/")]
    assert "/dash/real/manifest.mpd" in seen and any(p.endswith(".m4s") and "seg-" in p for p in seen), seen
    assert servers.origin.requests >= fragments // 2  # the origin answered the edge's misses


def test_dash_js_reads_the_synthetic_title_but_cannot_decode_it(servers: Servers) -> None:
    with headless_chromium(800, 600) as driver:
        driver.get(_play(servers, "testcard"))
        ladder = wait_for(driver, "window.player.getRepresentationsByType('video').length > 0 && "
                                  "window.player.getRepresentationsByType('video').map(r => r.bandwidth)",
                          timeout=30)
        fragments = wait_for(driver, "window.fragments >= 4 && window.fragments", timeout=30)
        state = driver.execute_script("const v = document.getElementById('v'); return [v.readyState, v.currentTime]")
    assert ladder == [300_000, 750_000, 1_200_000, 2_400_000, 4_000_000, 6_000_000]
    assert fragments >= 4  # the manifest, its CORS and the segments' headers are fine for a real player ...
    assert state == [0, 0]  # ... which never gets a frame it can decode (HAVE_NOTHING): the bytes are not media
    # the edge fetched what dash.js asked for (it starts on a middle rung) from the origin
    assert any(p.startswith("/dash/testcard/v") and p.endswith("/init.mp4") for p in servers.origin.by_path)
