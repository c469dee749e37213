"""The headless DASH player on loopback, against scripted video servers that stamp every request.

The servers serve :class:`testbed.services.video.VideoLibrary` content, optionally throttled to a rate,
delayed per segment, or dead; they stamp when each request arrived and when its last byte was written
(``time.monotonic``, the clock the player logs on), so the player's log is checked against the server's
own account, not against itself.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from aiohttp import web

from testbed.measure.abr import AbrContext
from testbed.measure.player import Player, PlayerConfig, main
from testbed.services.video import VideoConfig, VideoLibrary, VideoTitle

LADDER = [200, 400, 800]


@dataclass
class Stamp:
    path: str
    recv: float
    last: float = 0.0
    status: int = 200


@dataclass
class VideoServer:
    """A scripted video server on 127.0.0.1 (see the module doc)."""

    library: VideoLibrary
    rate_bps: float | None = None  # throttle bodies to this rate
    delays: dict[int, float] = field(default_factory=dict)  # segment number -> seconds before answering
    name: str = "srv"
    stamps: list[Stamp] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None
    loop: asyncio.AbstractEventLoop = field(init=False, repr=False)
    thread: threading.Thread = field(init=False, repr=False)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        st = Stamp(request.path, time.monotonic())
        self.stamps.append(st)
        vf = self.library.lookup(request.path)
        if vf is None:
            st.status = 404
            return web.Response(status=404)
        name = request.path.rsplit("/", 1)[-1]
        if name.startswith("seg-"):
            await asyncio.sleep(self.delays.get(int(name[4:-4]), 0.0))
        resp = web.StreamResponse(status=vf.status, headers={**vf.headers, "X-Served-By": self.name})
        resp.content_length = len(vf.body)
        await resp.prepare(request)
        chunk = 8192
        start = time.monotonic()
        for off in range(0, len(vf.body), chunk):
            if self.rate_bps:  # pace: each chunk leaves when the bytes before it have had their time
                await asyncio.sleep(max(0.0, start + off * 8 / self.rate_bps - time.monotonic()))
            await resp.write(vf.body[off : off + chunk])
        st.last, st.status = time.monotonic(), vf.status
        await resp.write_eof()
        return resp

    def start(self) -> VideoServer:
        """Serve from a thread with its own event loop, so the player's loop and the server's do not wait
        on each other and the two sets of stamps are independent."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def alive(self) -> bool:
        return self.runner is not None

    def stop(self) -> None:
        if self.runner is None:
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def segment_stamps(self) -> list[Stamp]:
        return [s for s in self.stamps if "/seg-" in s.path]


def library(
    live: bool = False, segment_s: float = 1.0, duration_s: float = 6.0, ladder=None, **kw
) -> VideoLibrary:
    title = VideoTitle(
        name="t", bitrates_kbps=ladder or LADDER, segment_s=segment_s, duration_s=duration_s, live=live
    )
    return VideoLibrary(VideoConfig(titles=[title]), **kw)


def cfg(port: int, **kw) -> PlayerConfig:
    return PlayerConfig(manifest="/dash/t/manifest.mpd", vip="127.0.0.1", port=port, **kw)


async def test_log_times_are_the_real_download_times() -> None:
    srv = VideoServer(library(), rate_bps=4e6).start()
    try:
        p = Player(cfg(srv.port, policy="throughput"))
        s = await p.run()
    finally:
        srv.stop()
    assert s.error == ""
    stamps = srv.segment_stamps()
    assert len(s.records) == len(stamps) == 6
    for r, st in zip(s.records, stamps, strict=True):
        assert st.path.endswith(f"/{r.representation}/seg-{r.number}.m4s")
        # the player's stamps, on the same monotonic clock, against the server's own: within 5 ms
        assert abs(p.t0 + r.t_request - st.recv) <= 0.005, (r, st)
        assert abs(p.t0 + r.t_done - st.last) <= 0.005, (r, st)
        assert r.download_ms >= (st.last - st.recv) * 1000 - 1.0
        assert r.download_ms > 20  # throttled: a real download time, not a loopback blip
        assert r.bytes == r.bitrate_kbps * 1000 // 8
        assert r.throughput_kbps == pytest.approx(r.bytes * 8 / r.download_ms, rel=0.01)
        assert r.server == "srv"


async def test_a_late_segment_is_a_stall_of_the_right_length() -> None:
    srv = VideoServer(library(ladder=[200]), delays={3: 3.0}).start()
    try:
        p = Player(cfg(srv.port, read_timeout_s=5.0))
        s = await p.run()
    finally:
        srv.stop()
    assert s.error == ""
    r1, r2, r3 = s.records[:3]
    assert r1.stall_s == r2.stall_s == 0
    # playback started when segment 1 was in; segments 1 and 2 (2 s) ran out 2 s later; segment 3 came ~3 s in
    assert r3.stall_start == pytest.approx(s.startup_s + 2.0, abs=0.01)
    assert r3.stall_s == pytest.approx(r3.t_done - r3.stall_start, abs=1e-3)
    assert 0.9 < r3.stall_s < 1.2
    summ = s.summary()
    assert summ["rebuffer_count"] == 1
    assert summ["rebuffer_s"] == pytest.approx(r3.stall_s, abs=1e-3)
    assert all(r.stall_s == 0 for r in s.records[3:])


async def test_throughput_policy_settles_below_a_throttled_rate() -> None:
    lib = library(ladder=[300, 750, 1200, 2400, 4000, 6000], duration_s=6.0)
    srv = VideoServer(lib, rate_bps=1.5e6).start()
    try:
        s = await Player(cfg(srv.port, policy="throughput")).run()
    finally:
        srv.stop()
    assert s.error == ""
    rates = [r.bitrate_kbps for r in s.records]
    assert rates[0] == 300  # no history yet
    assert rates[-3:] == [1200, 1200, 1200], rates  # 0.9 x 1.5 Mbit/s
    assert all(1000 < r.throughput_kbps < 1700 for r in s.records[1:]), [r.throughput_kbps for r in s.records]


async def test_the_buffer_caps_how_far_ahead_the_player_fetches() -> None:
    srv = VideoServer(library(duration_s=8.0)).start()
    try:
        p = Player(cfg(srv.port, max_buffer_s=3.0))
        s = await p.run()
    finally:
        srv.stop()
    assert s.error == ""
    assert max(r.buffer_s for r in s.records) <= 3.0 + 1e-3
    # with room for one segment at a time after the first three, requests come a segment apart
    gaps = [b.t_request - a.t_request for a, b in zip(s.records[3:], s.records[4:], strict=False)]
    assert all(0.9 < g < 1.1 for g in gaps), gaps
    assert s.summary()["rebuffer_count"] == 0


async def test_live_fetches_each_segment_once_it_is_available_and_never_early() -> None:
    lib = library(live=True, segment_s=0.5)
    srv = VideoServer(lib).start()
    try:
        p = Player(cfg(srv.port, duration_s=3.0))
        s = await p.run()
    finally:
        srv.stop()
    assert s.error == "" and s.manifest is not None and s.manifest.live
    assert len(s.records) == 6
    assert all(st.status == 200 for st in srv.stamps), [(st.path, st.status) for st in srv.stamps]
    start = lib.start_times["t"]
    for r in s.records:
        assert r.wall >= start + r.number * 0.5 - 0.002
    numbers = [r.number for r in s.records]
    assert numbers == list(range(numbers[0], numbers[0] + 6))
    assert s.summary()["rebuffer_count"] == 0


async def test_redirect_failover_asks_the_redirector_again() -> None:
    a = VideoServer(library(duration_s=8.0, ladder=[200]), name="edge-a").start()
    b = VideoServer(library(duration_s=8.0, ladder=[200]), name="edge-b").start()
    asked: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        target = a if a.alive else b
        asked.append(target.name)
        return web.Response(status=302, headers={"Location": f"http://127.0.0.1:{target.port}{request.path}"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rport = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    class KillAfterThree:
        name = "kill-after-three"

        def choose(self, ctx: AbrContext) -> int:
            if ctx.segment == 4:
                a.stop()
            return 0

    try:
        c = PlayerConfig(
            manifest="/dash/t/manifest.mpd",
            via="redirect",
            redirector="127.0.0.1",
            port=rport,
            max_buffer_s=2.0,
        )
        s = await Player(c, KillAfterThree()).run()
    finally:
        b.stop()
        a.stop()
        await runner.cleanup()
    assert s.error == "", s.error
    served = [r.server for r in s.records]
    assert served[:3] == ["edge-a"] * 3 and served[-1] == "edge-b", served
    assert asked[0] == "edge-a" and asked[-1] == "edge-b"
    moved = next(r for r in s.records if r.server == "edge-b")
    assert moved.attempts >= 2 and moved.error
    assert any(f["what"].startswith(f"segment {moved.number}") for f in s.failures)


class _Dns:
    """A one-name DNS server on 127.0.0.1 (dnspython) answering A 127.0.0.1 with a given TTL."""

    def __init__(self, ttl: int) -> None:
        self.ttl, self.queries = ttl, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.answer.append(
                dns.rrset.from_text(
                    q.question[0].name, self.ttl, dns.rdataclass.IN, dns.rdatatype.A, "127.0.0.1"
                )
            )
            self.queries += 1
            self.sock.sendto(r.to_wire(), addr)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


async def test_dns_answers_are_kept_for_their_ttl() -> None:
    srv = VideoServer(library(duration_s=5.0, ladder=[200])).start()
    resolver = _Dns(ttl=1)
    try:
        c = PlayerConfig(
            manifest="/dash/t/manifest.mpd",
            via="dns",
            resolver="127.0.0.1",
            resolver_port=resolver.port,
            port=srv.port,
            max_buffer_s=2.0,
        )
        s = await Player(c).run()
    finally:
        resolver.close()
        srv.stop()
    assert s.error == ""
    elapsed = s.records[-1].t_done
    assert elapsed > 2.5  # the 2 s buffer made the session last ~4 s
    # one query per TTL (not one per request: there were 7 requests), and more than one
    assert 2 <= resolver.queries <= int(elapsed) + 2 < 7, (resolver.queries, elapsed)


async def test_a_dead_address_ends_the_session_with_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    sess = await Player(cfg(port, give_up_s=0.5, retry_s=0.1)).run()
    assert "manifest" in sess.error and "still failing" in sess.error
    assert len(sess.failures) >= 3 and all(
        "Connect" in f["error"] or "refused" in f["error"].lower() for f in sess.failures
    )


async def test_a_policy_returning_a_non_index_is_named() -> None:
    srv = VideoServer(library()).start()

    class Bad:
        name = "bad"

        def choose(self, ctx: AbrContext) -> int:
            return 99

    try:
        s = await Player(cfg(srv.port), Bad()).run()
    finally:
        srv.stop()
    assert s.error == "ABR policy bad returned 99: it must be a ladder index 0..2"


async def test_a_malformed_manifest_is_rejected_by_name() -> None:
    async def junk(request: web.Request) -> web.Response:
        return web.Response(text='<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="live"/>')

    app = web.Application()
    app.router.add_get("/{tail:.*}", junk)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        s = await Player(cfg(site._server.sockets[0].getsockname()[1])).run()  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
    assert s.error == "MPD: @type='live' (static or dynamic)"
    assert s.records == []


def test_cli_prints_the_sessions_qoe(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    srv = VideoServer(library(duration_s=3.0)).start()
    try:
        rc = main(
            [
                "/dash/t/manifest.mpd",
                "--vip",
                "127.0.0.1",
                "--port",
                str(srv.port),
                "--policy",
                "bba",
                "--csv",
                str(tmp_path / "s.csv"),
            ]
        )
    finally:
        srv.stop()
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["segments"] == 3 and out["policy"] == "bba" and out["error"] == ""
    assert out["rebuffer_count"] == 0 and out["startup_s"] > 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].startswith("number,representation,bitrate_kbps,bytes,t_request")
    assert len(lines) == 4


def test_cli_rejects_an_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["/dash/t/manifest.mpd", "--vip", "127.0.0.1", "--policy", "fastest"]) == 2
    assert "unknown ABR policy 'fastest'" in capsys.readouterr().err


async def test_a_missing_title_fails_at_once_naming_the_status() -> None:
    srv = VideoServer(library()).start()
    try:
        t = time.monotonic()
        s = await Player(
            PlayerConfig(manifest="/dash/nope/manifest.mpd", vip="127.0.0.1", port=srv.port)
        ).run()
    finally:
        srv.stop()
    assert s.error == "manifest: HTTP 404 from 127.0.0.1"
    assert time.monotonic() - t < 1.0  # not retried until give_up_s: a 404 does not heal
    assert len(s.failures) == 1
