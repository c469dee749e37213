"""A headless MPEG-DASH player: real-time buffer, adaptive bitrate, and a log of every segment.

``python -m testbed.measure.player MANIFEST_PATH --via anycast --vip IP`` (or ``--via dns --resolver IP``,
``--via redirect --redirector IP``), run inside a Mininet host (or on loopback against an origin or edge),
plays one title as a player would and prints the session's QoE as JSON:

* **Steering.** The manifest and every segment go through the chosen selection method, as a browser's
  player meets them: ``anycast`` connects to the VIP; ``dns`` resolves the CDN name through the host's
  resolver and keeps the answer for its TTL (as a stub cache does); ``redirect`` asks the redirector
  for the manifest and fetches segments relative to where it was sent (DASH resolves segment URLs
  against the manifest's final URL), asking again only when that edge fails. HTTP/1.1 keep-alive, one
  connection at a time (aiohttp), ``Host`` the customer's name.
* **Buffer in real time.** Playback starts once ``startup_s`` of video is buffered and drains it at one
  second per second; when the buffer empties before the next segment arrives, the player stalls from
  that instant until the segment is in. It requests the next segment as soon as there is room for it
  under ``max_buffer_s`` (a live title: also once the segment is available, starting
  ``suggestedPresentationDelay`` behind the live edge).
* **Failures.** A failed request (refused, timed out, an HTTP error) is retried every ``retry_s``
  through the method (a new connection, a new DNS answer once the TTL allows, the redirector again),
  while the buffer drains; after ``give_up_s`` on one segment the session ends with an error.
* **Log.** One :class:`~testbed.measure.qoe.SegmentRecord` per segment (``--csv``): representation,
  bitrate, bytes, request/first-byte/done times on the monotonic clock, download time and throughput,
  buffer level, the stall it ended, attempts, and the edge that served it, written as each segment comes
  in. The times are those of the socket operations themselves (the tests hold them within 5 ms of the server's own stamps).
* **ABR.** A policy from :mod:`testbed.measure.abr` chooses each segment's representation.
* **QoE.** :func:`testbed.measure.qoe.summarize`: startup delay, rebuffering ratio and count, average
  bitrate, switches and Yin et al.'s linear QoE.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

from testbed.measure.abr import AbrContext, AbrPolicy, check_choice, load_policy
from testbed.measure.mpd import Manifest, Representation, parse_mpd
from testbed.measure.qoe import SegmentRecord, summarize

DEFAULT_NAME = "www.customer.example"


class PlayError(Exception):
    """The session could not go on (no manifest, a segment failing past ``give_up_s``)."""


@dataclass
class PlayerConfig:
    manifest: str  # the manifest's path, e.g. /dash/testcard/manifest.mpd
    via: str = "anycast"  # anycast | dns | redirect
    vip: str | None = None
    resolver: str | None = None
    resolver_port: int = 53
    redirector: str | None = None
    name: str = DEFAULT_NAME  # Host header; the name resolved for dns
    port: int = 80
    policy: str = "throughput"
    duration_s: float | None = None  # video seconds to play (None: all of an on-demand title; live: 60)
    max_buffer_s: float = 30.0
    startup_s: float | None = None  # buffer needed to start playing (default one segment)
    live_delay_s: float | None = None  # live: how far behind the live edge to start (default the MPD's)
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 3.0
    retry_s: float = 0.2
    give_up_s: float = 30.0


@dataclass
class Session:
    """A finished (or abandoned) session: the manifest, every segment and the summary."""

    config: PlayerConfig
    manifest: Manifest | None = None
    records: list[SegmentRecord] = field(default_factory=list)
    startup_s: float | None = None
    error: str = ""
    failures: list[dict[str, Any]] = field(default_factory=list)  # every failed attempt: t, what, error
    started_wall: float = 0.0  # POSIX time of session time 0 (the records' times are relative to it)

    def summary(self) -> dict[str, Any]:
        d = self.manifest.segment_s if self.manifest else 0.0
        s = summarize(self.records, self.startup_s, played_s=len(self.records) * d)
        servers: dict[str, int] = {}
        for r in self.records:
            servers[r.server or r.server_ip] = servers.get(r.server or r.server_ip, 0) + 1
        return {
            "started_wall": round(self.started_wall, 6),
            "manifest": self.config.manifest,
            "via": self.config.via,
            "policy": self.config.policy,
            "live": bool(self.manifest and self.manifest.live),
            "error": self.error,
            **s,
            "failed_attempts": len(self.failures),
            "servers": servers,
        }


class Steering:
    """Where the next request goes, by selection method (see the module doc)."""

    def __init__(self, cfg: PlayerConfig, http: aiohttp.ClientSession) -> None:
        self.cfg, self.http = cfg, http
        self._dns: tuple[str, float] | None = None  # (address, expires on the monotonic clock)
        self._edge: tuple[str, int] | None = None  # redirect: where the redirector sent us

    async def endpoint(self, path: str) -> tuple[str, int, str]:
        c = self.cfg
        if c.via == "anycast":
            if not c.vip:
                raise PlayError("--via anycast needs --vip")
            return c.vip, c.port, path
        if c.via == "dns":
            if not c.resolver:
                raise PlayError("--via dns needs --resolver")
            now = time.monotonic()
            if self._dns is None or now >= self._dns[1]:
                self._dns = await self._resolve(now)
            return self._dns[0], c.port, path
        if c.via == "redirect":
            if not c.redirector:
                raise PlayError("--via redirect needs --redirector")
            if self._edge is None:
                self._edge = await self._ask_redirector(path)
            return self._edge[0], self._edge[1], path
        raise PlayError(f"unknown method {c.via!r} (anycast, dns or redirect)")

    def failed(self) -> None:
        """The last request failed: redirect asks the redirector again next time (DNS keeps its answer
        until the TTL ends, as a stub cache does; anycast has nothing to forget)."""
        self._edge = None

    async def _resolve(self, now: float) -> tuple[str, float]:
        assert self.cfg.resolver
        q = dns.message.make_query(self.cfg.name, dns.rdatatype.A)
        r = await dns.asyncquery.udp(
            q, self.cfg.resolver, port=self.cfg.resolver_port, timeout=self.cfg.connect_timeout_s
        )
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.A:
                return rrset[0].address, now + rrset.ttl
        raise PlayError(f"dns: no A record for {self.cfg.name}")

    async def _ask_redirector(self, path: str) -> tuple[str, int]:
        c = self.cfg
        assert c.redirector
        async with self.http.get(
            f"http://{c.redirector}:{c.port}{path}",
            headers={"Host": c.name},
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(sock_connect=c.connect_timeout_s, sock_read=c.read_timeout_s),
        ) as resp:
            await resp.read()
            loc = resp.headers.get("Location")
            if resp.status not in (301, 302, 303, 307, 308) or not loc:
                raise PlayError(f"redirector answered {resp.status} without a Location")
        u = urlsplit(loc)
        if not u.hostname:
            raise PlayError(f"redirector's Location {loc!r} names no host")
        return u.hostname, u.port or 80


@dataclass
class _Fetched:
    body: bytes
    status: int
    headers: dict[str, str]
    ip: str
    t_request: float
    t_first: float
    t_done: float


class Player:
    """One playback session (see the module doc); :meth:`run` plays it and returns the :class:`Session`."""

    def __init__(
        self,
        cfg: PlayerConfig,
        policy: AbrPolicy | None = None,
        on_segment: Callable[[SegmentRecord], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_segment = on_segment  # called with each record as soon as its segment is in
        self.policy = policy or load_policy(cfg.policy)
        self.session = Session(cfg)
        self.t0 = 0.0
        # buffer state: ``_level`` seconds at ``_t_ref``; draining while ``playing``
        self._level = 0.0
        self._t_ref = 0.0
        self.playing = False
        self._inits: set[str] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def level(self, t: float | None = None) -> float:
        """Seconds of video buffered at session time ``t`` (default now)."""
        t = self.now() if t is None else t
        return max(0.0, self._level - (t - self._t_ref)) if self.playing else self._level

    async def _get(self, steer: Steering, path: str, what: str, live: bool = False) -> _Fetched:
        """GET ``path`` through the method, retrying until ``give_up_s`` (each failure logged); a 4xx
        ends the session at once, except a live segment's 404 (not yet available: asked again)."""
        c = self.cfg
        deadline = self.now() + c.give_up_s
        timeout = aiohttp.ClientTimeout(sock_connect=c.connect_timeout_s, sock_read=c.read_timeout_s)
        while True:
            err = ""
            ip = ""
            try:
                ip, port, p = await steer.endpoint(path)
                t_req = self.now()
                sent: list[float] = []
                async with steer.http.get(
                    f"http://{ip}:{port}{p}",
                    headers={"Host": c.name},
                    allow_redirects=False,
                    timeout=timeout,
                    trace_request_ctx=sent,
                ) as resp:
                    t_first = self.now()
                    t_req = sent[0] if sent else t_req  # when the request was written, not when asked for
                    body = await resp.read()
                    t_done = self.now()
                    if resp.status == 200:
                        return _Fetched(body, 200, dict(resp.headers), ip, t_req, t_first, t_done)
                    err = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and not (live and resp.status == 404):
                        # a client error does not heal by asking again (a live segment may just be early)
                        self.session.failures.append(
                            {"t": round(self.now(), 4), "what": what, "ip": ip, "error": err}
                        )
                        raise PlayError(f"{what}: HTTP {resp.status} from {ip}")
            except PlayError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, dns.exception.DNSException) as e:
                err = f"{type(e).__name__}: {e}"[:200]
            steer.failed()
            self.session.failures.append({"t": round(self.now(), 4), "what": what, "ip": ip, "error": err})
            if self.now() + c.retry_s > deadline:
                raise PlayError(f"{what}: still failing after {c.give_up_s:g} s ({err})")
            await asyncio.sleep(c.retry_s)

    def _arrive(self, d: float, t: float) -> tuple[float, float | None]:
        """A segment of ``d`` seconds is in at ``t``: update the buffer; the stall it ended, if any."""
        stall, start = 0.0, None
        if self.playing:
            drained = t - self._t_ref
            if drained > self._level:
                start = self._t_ref + self._level
                stall = t - start
                self._level = 0.0
            else:
                self._level -= drained
        self._level += d
        self._t_ref = t
        startup = self.cfg.startup_s if self.cfg.startup_s is not None else d
        if not self.playing and self._level >= startup - 1e-9:
            self.playing = True
            self.session.startup_s = t
        return stall, start

    async def run(self) -> Session:
        c = self.cfg
        self.session.started_wall = time.time()
        self.t0 = time.monotonic()
        conn = aiohttp.TCPConnector(limit=1, force_close=False)
        trace = aiohttp.TraceConfig()

        async def headers_sent(_s: object, ctx: Any, _p: object) -> None:
            if isinstance(ctx.trace_request_ctx, list):
                ctx.trace_request_ctx.append(self.now())

        trace.on_request_headers_sent.append(headers_sent)
        async with aiohttp.ClientSession(
            connector=conn, auto_decompress=False, trace_configs=[trace]
        ) as http:
            steer = Steering(c, http)
            try:
                await self._play(steer)
            except (PlayError, ValueError) as e:  # MpdError, and a policy's bad answer, are ValueErrors
                self.session.error = str(e)
        return self.session

    async def _play(self, steer: Steering) -> None:
        c = self.cfg
        base = c.manifest.rsplit("/", 1)[0] + "/"
        got = await self._get(steer, c.manifest, "manifest")
        m = self.session.manifest = parse_mpd(got.body)
        d = m.segment_s
        if m.live:
            delay = c.live_delay_s if c.live_delay_s is not None else (m.presentation_delay_s or 3 * d)
            first = max(m.start_number, m.live_edge(time.time()) - max(0, math.ceil(delay / d) - 1))
            count = math.ceil((c.duration_s or 60.0) / d - 1e-9)
        else:
            first = m.start_number
            total = m.segments or 1
            count = total if c.duration_s is None else min(total, math.ceil(c.duration_s / d - 1e-9))
        ladder = m.bitrates_kbps
        last: int | None = None
        tput: list[float] = []
        for i in range(count):
            number = first + i
            room = self.level() - (c.max_buffer_s - d)
            if room > 0:
                await asyncio.sleep(room)
            if m.live:
                wait = m.available_at(number) - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            ctx = AbrContext(
                bitrates_kbps=ladder,
                segment_s=d,
                buffer_s=self.level(),
                max_buffer_s=c.max_buffer_s,
                last=last,
                throughput_kbps=tuple(tput),
                segment=number,
                segments_left=None if m.live else count - i,
                live=m.live,
            )
            idx = check_choice(self.policy, ctx, self.policy.choose(ctx))
            rep = m.representations[idx]
            await self._ensure_init(steer, m, rep, base)
            fails = len(self.session.failures)
            f = await self._get(
                steer, base + m.segment_url(rep, number), f"segment {number} ({rep.id})", m.live
            )
            dl = max(f.t_done - f.t_request, 1e-6)
            kbps = len(f.body) * 8 / dl / 1000
            stall, start = self._arrive(d, f.t_done)
            attempts = 1 + len(self.session.failures) - fails
            self.session.records.append(
                SegmentRecord(
                    number=number,
                    representation=rep.id,
                    bitrate_kbps=rep.bandwidth // 1000,
                    bytes=len(f.body),
                    t_request=round(f.t_request, 6),
                    t_first_byte=round(f.t_first, 6),
                    t_done=round(f.t_done, 6),
                    download_ms=round(dl * 1000, 3),
                    throughput_kbps=round(kbps, 1),
                    buffer_s=round(self._level, 4),
                    stall_s=round(stall, 4),
                    stall_start=None if start is None else round(start, 4),
                    attempts=attempts,
                    server=f.headers.get("X-Served-By", ""),
                    server_ip=f.ip,
                    x_cache=f.headers.get("X-Cache", ""),
                    error=self.session.failures[-1]["error"] if attempts > 1 else "",
                    wall=round(self.session.started_wall + f.t_request, 6),
                )
            )
            if self.on_segment is not None:
                self.on_segment(self.session.records[-1])
            tput.append(kbps)
            last = idx

    async def _ensure_init(self, steer: Steering, m: Manifest, rep: Representation, base: str) -> None:
        if rep.init and rep.id not in self._inits:
            await self._get(steer, base + m.init_url(rep), f"init ({rep.id})")
            self._inits.add(rep.id)


class CsvLog:
    """The per-segment log as CSV, one row written (and flushed) as each segment comes in, so a run can
    be watched, and what was played survives a killed player."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("w", newline="")
        self.w = csv.DictWriter(self.fh, fieldnames=SegmentRecord.columns())
        self.w.writeheader()
        self.fh.flush()

    def __call__(self, r: SegmentRecord) -> None:
        self.w.writerow(r.row())
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def main(argv: list[str] | None = None) -> int:
    """Play one title through a selection method and print the session's QoE as JSON (exit 1 when the
    session failed). Run it inside a host: ``h.cmd('python -m testbed.measure.player ...')``."""
    ap = argparse.ArgumentParser(prog="python -m testbed.measure.player", description=main.__doc__)
    ap.add_argument("manifest", help="the manifest's path, e.g. /dash/testcard/manifest.mpd")
    ap.add_argument("--via", choices=["anycast", "dns", "redirect"], default="anycast")
    ap.add_argument("--vip", help="anycast: the address to connect to (any HTTP server for a direct test)")
    ap.add_argument("--resolver", help="dns: the resolver to ask")
    ap.add_argument("--resolver-port", type=int, default=53)
    ap.add_argument("--redirector", help="redirect: the redirector's address")
    ap.add_argument("--name", default=DEFAULT_NAME, help="Host header, and the name resolved for --via dns")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument(
        "--policy",
        default="throughput",
        help="ABR policy: throughput, bba, bola, mpc, or module:Class (default throughput)",
    )
    ap.add_argument("--duration", type=float, help="seconds of video to play (default: all; live: 60)")
    ap.add_argument("--max-buffer", type=float, default=30.0, help="seconds of video the buffer holds")
    ap.add_argument(
        "--startup", type=float, help="seconds buffered before playback starts (default 1 segment)"
    )
    ap.add_argument("--live-delay", type=float, help="live: seconds behind the live edge (default the MPD's)")
    ap.add_argument("--retry", type=float, default=0.2, help="seconds between failed attempts")
    ap.add_argument("--give-up", type=float, default=30.0, help="seconds one segment may keep failing")
    ap.add_argument("--connect-timeout", type=float, default=1.0)
    ap.add_argument("--read-timeout", type=float, default=3.0)
    ap.add_argument("--csv", type=Path, help="write every segment's record here")
    ap.add_argument("--json", action="store_true", help="also print the failed attempts")
    ap.add_argument("--summary", type=Path, help="also write the printed JSON to this file")
    ap.add_argument(
        "--submission",
        type=Path,
        metavar="JSON",
        help="a lab submission (contract.sandbox.Submission as JSON) run in a sandbox: --policy then names "
        "its class as module:Class (the video lab's network stage)",
    )
    a = ap.parse_args(argv)
    cfg = PlayerConfig(
        manifest=a.manifest,
        via=a.via,
        vip=a.vip,
        resolver=a.resolver,
        redirector=a.redirector,
        name=a.name,
        port=a.port,
        policy=a.policy,
        duration_s=a.duration,
        max_buffer_s=a.max_buffer,
        startup_s=a.startup,
        live_delay_s=a.live_delay,
        connect_timeout_s=a.connect_timeout,
        read_timeout_s=a.read_timeout,
        retry_s=a.retry,
        give_up_s=a.give_up,
    )
    sandbox = None
    if a.submission is not None:
        from contract.sandbox import Submission, activate, describe_load_error

        try:
            sandbox = activate(Submission.model_validate_json(a.submission.read_text()))
        except Exception as e:  # noqa: BLE001 - a bad file or the student's import error, said plainly
            text = describe_load_error(e)
            print(f"error: submission {a.submission} does not load: {text}", file=sys.stderr)
            return 2
    try:
        try:
            policy = load_policy(cfg.policy)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        log = CsvLog(a.csv) if a.csv else None
        try:
            session = asyncio.run(Player(cfg, policy, on_segment=log).run())
        finally:
            if log is not None:
                log.close()
    finally:
        if sandbox is not None:
            sandbox.close()
    out = session.summary()
    if a.json:
        out["failures"] = session.failures
    if a.summary:
        a.summary.write_text(json.dumps(dict(out, failures=session.failures), indent=1))
    print(json.dumps(out))
    return 1 if session.error else 0


if __name__ == "__main__":
    raise SystemExit(main())
