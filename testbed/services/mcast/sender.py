"""Origin side of multicast content ingest: push objects to a group, repair on NACK (NORM-style, RFC 5740).

:class:`IngestSender` is a sans-I/O protocol engine. The origin pushes an object with :meth:`push` (or
a manifest and its objects with :meth:`push_manifest`); the engine queues one OBJECT_META and the
OBJECT_DATA chunks, each datagram with a fresh sequence number, and paces them with a token bucket
(``rate_bps``). Receivers multicast NACKs for what they lack (with random back-off and suppression,
see :mod:`.receiver`); the sender aggregates NACKs for ``repair_delay`` seconds (NORM's NACK
aggregation) and multicasts REPAIRs, with priority over new data. A chunk repaired less than
``repair_holdoff`` ago is not repaired again (the repair is still in flight). After its queue drains
and every ``report_interval`` seconds it multicasts a SENDER_REPORT (NORM's FLUSH/announcement): the
objects it still retains and the recent invalidation ids, so receivers detect tail loss and a late
joiner learns what it missed and asks for it. :meth:`invalidate` multicasts an INVALIDATE (repeated
``inval_repeats`` times, retained and repaired on NACK like data) and drops matching objects from
retention so no late joiner is handed stale content. NACKs pass a per-(session, receiver) anti-replay
window (:mod:`contract.replay_window`, RFC 4303 §3.4.3) after the tag check, so a captured NACK sent
again (to make the sender multicast repairs) is dropped and counted in ``stats.replayed``.

Run standalone: ``python -m testbed.services.mcast.sender --config F`` (see :class:`SenderConfig`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from contract import mcast_wire as wire
from contract.mcast_wire import InvalAction, Match
from contract.replay_window import DEFAULT_SIZE, ReplayWindow
from testbed.services.base import ServiceConfig, service_main
from testbed.services.mcast.sockets import EndpointRunner, GroupConfig

log = logging.getLogger(__name__)


@dataclass
class SenderStats:
    packets_sent: int = 0
    bytes_sent: int = 0
    objects_pushed: int = 0
    data_packets: int = 0
    meta_packets: int = 0
    repair_packets: int = 0
    report_packets: int = 0
    inval_packets: int = 0
    nacks_received: int = 0
    nacks_unserviceable: int = 0  # asked for something no longer retained
    repairs_held_off: int = 0  # chunk requested again within repair_holdoff
    ignored: int = 0  # valid packets of no concern (other senders' traffic, own loopback)
    replayed: int = 0  # authentic NACKs dropped by the anti-replay window (already seen / too old)
    errors: dict[str, int] = field(default_factory=dict)  # malformed / auth / version / wrong_session

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Retained:
    meta: wire.ObjectMeta
    body: bytes
    transmitted: bool = False  # first pass finished: announced in SENDER_REPORTs from then on


class IngestSender:
    """Sans-I/O origin-side engine. ``transmit(bytes)`` sends one datagram to the group."""

    def __init__(
        self,
        transmit: Callable[[bytes], None],
        *,
        session_id: int,
        sender_id: int | None = None,
        key: bytes | None = None,
        chunk_size: int = wire.DEFAULT_CHUNK,
        rate_bps: float = 0.0,  # bytes per second; 0 = unpaced
        burst_bytes: int = 64 * 1024,
        report_interval: float = 0.5,
        repair_delay: float = 0.01,
        repair_holdoff: float = 0.05,
        retain_objects: int = 64,
        retain_bytes: int = 64 << 20,
        retain_invals: int = 64,
        inval_repeats: int = 2,
        replay_window: int = DEFAULT_SIZE,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= chunk_size <= wire.MAX_DATAGRAM - wire.HEADER_LEN - wire._B_DATA.size:
            raise ValueError(f"chunk_size {chunk_size} does not fit a datagram")
        self.rng = rng or random.Random()
        self.transmit = transmit
        self.codec = wire.Codec(session_id, sender_id or self.rng.randrange(1, 2**32), key)
        self.replay = ReplayWindow(replay_window)
        self.chunk_size = chunk_size
        self.rate_bps = rate_bps
        self.burst = max(burst_bytes, chunk_size + 200)
        self.report_interval = report_interval
        self.repair_delay = repair_delay
        self.repair_holdoff = repair_holdoff
        self.retain_objects = min(retain_objects, 1000)
        self.retain_bytes = retain_bytes
        self.retain_invals = min(retain_invals, 1000)
        self.inval_repeats = max(1, inval_repeats)
        self.clock = clock
        self.wall = wall
        self.stats = SenderStats()
        self._next_id = 1
        self._retained: OrderedDict[int, _Retained] = OrderedDict()
        self._invals: OrderedDict[int, wire.Invalidate] = OrderedDict()
        self._urgent: deque[wire.Message] = deque()  # repairs, invalidations, reports
        self._bulk: deque[wire.Message | tuple[str, int]] = deque()  # data; ("done", oid) marks a pass end
        self._pending_repairs: dict[int, set[int]] = {}
        self._pending_meta: set[int] = set()
        self._pending_inval: set[int] = set()
        self._repair_due: float | None = None
        self._repaired_at: dict[tuple[int, int], float] = {}
        self._inval_resend: list[tuple[float, int]] = []
        self._tokens = float(self.burst)
        self._last_fill = clock()
        self._next_report = clock() + report_interval
        self._report_soon = False

    @property
    def sender_id(self) -> int:
        return self.codec.sender_id

    # ------------------------------------------------------------------------------------------ API

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def push(
        self, path: str, body: bytes, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> int:
        """Queue one object for multicast; returns its object id."""
        wire.check_path(path)
        oid = self._new_id()
        n = wire.n_chunks_for(len(body), self.chunk_size)
        meta = wire.ObjectMeta(
            oid, path, len(body), self.chunk_size, n, wire.sha256(body), status, dict(headers or {})
        )
        wire.encode_body(meta)  # validate now (bad headers, too long) rather than at send time
        for old in [o for o, r in self._retained.items() if r.meta.path == path]:
            del self._retained[old]  # a newer version supersedes the old one for late joiners
        self._retained[oid] = _Retained(meta, body)
        self._evict()
        self._bulk.append(meta)
        for i in range(n):
            off = i * self.chunk_size
            self._bulk.append(("chunk", oid, i, off))  # type: ignore[arg-type]
        self._bulk.append(("done", oid))
        self.stats.objects_pushed += 1
        return oid

    def push_manifest(self, objects: Iterable[tuple[str, bytes]]) -> tuple[int, list[int]]:
        """Multicast a prefetch MANIFEST listing ``objects`` (path, body), then the objects themselves."""
        objs = list(objects)
        mid = self._new_id()
        first = self._next_id
        entries = tuple(
            wire.ManifestEntry(first + k, p, len(b), wire.sha256(b)) for k, (p, b) in enumerate(objs)
        )
        self._urgent.append(wire.Manifest(mid, entries))
        oids = [self.push(p, b) for p, b in objs]
        return mid, oids

    def invalidate(self, paths: Iterable[str], *, prefix: bool = False, refresh: bool = False) -> int:
        """Multicast an INVALIDATE for ``paths`` (exact or prefixes); PURGE or REFRESH. Returns its id."""
        match = Match.PREFIX if prefix else Match.EXACT
        entries = tuple((match, wire.check_path(p)) for p in paths)
        iid = self._new_id()
        msg = wire.Invalidate(
            iid, InvalAction.REFRESH if refresh else InvalAction.PURGE, int(self.wall() * 1e6), entries
        )
        wire.encode_body(msg)
        self._invals[iid] = msg
        while len(self._invals) > self.retain_invals:
            self._invals.popitem(last=False)
        for oid in [o for o, r in self._retained.items() if _matches(entries, r.meta.path)]:
            del self._retained[oid]
        self._urgent.append(msg)
        now = self.clock()
        for k in range(1, self.inval_repeats):
            self._inval_resend.append((now + k * self.repair_holdoff * 2, iid))
        self._report_soon = True
        return iid

    @property
    def idle(self) -> bool:
        """Nothing queued or pending (the first pass of every pushed object is out)."""
        return not (self._bulk or self._urgent or self._pending_repairs or self._pending_meta)

    def retained_paths(self) -> list[str]:
        return [r.meta.path for r in self._retained.values()]

    # ------------------------------------------------------------------------------------------ input

    def datagram_received(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        try:
            h, msg = self.codec.decode(data)
        except wire.WireError as e:
            self.stats.errors[e.reason] = self.stats.errors.get(e.reason, 0) + 1
            return
        if h.session_id != self.codec.session_id:
            self.stats.errors["wrong_session"] = self.stats.errors.get("wrong_session", 0) + 1
            return
        if h.sender_id == self.sender_id or not isinstance(msg, wire.Nack) or msg.target != self.sender_id:
            self.stats.ignored += 1
            return
        if not self.replay.admit((h.session_id, h.sender_id), h.seq).ok:
            self.stats.replayed += 1
            return
        self.stats.nacks_received += 1
        now = self.clock()
        if msg.flags & wire.NACK_INVAL:
            if msg.object_id in self._invals:
                self._pending_inval.add(msg.object_id)
            else:
                self.stats.nacks_unserviceable += 1
        else:
            r = self._retained.get(msg.object_id)
            if r is None:
                self.stats.nacks_unserviceable += 1
                self._report_soon = True  # tell the receiver what is still available
                return
            if msg.flags & wire.NACK_NEED_META:
                self._pending_meta.add(msg.object_id)
            want = self._pending_repairs.setdefault(msg.object_id, set())
            for a, b in msg.ranges:
                for i in range(a, min(b, r.meta.n_chunks)):
                    t = self._repaired_at.get((msg.object_id, i))
                    if t is not None and now - t < self.repair_holdoff:
                        self.stats.repairs_held_off += 1
                    else:
                        want.add(i)
            if not want:
                del self._pending_repairs[msg.object_id]
        if self._repair_due is None:
            self._repair_due = now + self.repair_delay

    # ------------------------------------------------------------------------------------------ output

    def _evict(self) -> None:
        total = sum(len(r.body) for r in self._retained.values())
        while self._retained and (len(self._retained) > self.retain_objects or total > self.retain_bytes):
            _, r = self._retained.popitem(last=False)
            total -= len(r.body)

    def _report(self) -> wire.SenderReport:
        objs = tuple((o, r.meta.n_chunks) for o, r in self._retained.items() if r.transmitted)
        return wire.SenderReport(int(self.wall() * 1e6), self._next_id, objs, tuple(self._invals))

    def _chunk(self, oid: int, i: int, cls: type[wire.ObjectData]) -> wire.ObjectData | None:
        r = self._retained.get(oid)
        if r is None:
            return None
        off = i * r.meta.chunk_size
        return cls(oid, i, off, r.meta.total_size, r.body[off : off + r.meta.chunk_size])

    def _flush_repairs(self, now: float) -> None:
        for iid in sorted(self._pending_inval):
            if iid in self._invals:
                self._urgent.append(self._invals[iid])
        self._pending_inval.clear()
        for oid in sorted(self._pending_meta):
            if oid in self._retained:
                self._urgent.append(self._retained[oid].meta)
        self._pending_meta.clear()
        for oid, idxs in sorted(self._pending_repairs.items()):
            for i in sorted(idxs):
                c = self._chunk(oid, i, wire.Repair)
                if c is not None:
                    self._urgent.append(c)
                    self._repaired_at[(oid, i)] = now
        self._pending_repairs.clear()
        self._repair_due = None
        if len(self._repaired_at) > 100_000:
            self._repaired_at = {k: t for k, t in self._repaired_at.items() if now - t < self.repair_holdoff}

    def _next_message(self) -> wire.Message | None:
        if self._urgent:
            return self._urgent.popleft()
        while self._bulk:
            item = self._bulk.popleft()
            if isinstance(item, tuple):
                if item[0] == "done":
                    if item[1] in self._retained:
                        self._retained[item[1]].transmitted = True
                    if not any(isinstance(x, wire.ObjectMeta) for x in self._bulk):
                        self._report_soon = True  # end of a burst: flush (NORM_CMD(FLUSH))
                    continue
                _, oid, i, _off = item  # type: ignore[misc]
                c = self._chunk(oid, i, wire.ObjectData)
                if c is None:  # invalidated or evicted before it went out
                    continue
                return c
            if isinstance(item, wire.ObjectMeta) and item.object_id not in self._retained:
                continue
            return item
        return None

    def _send(self, msg: wire.Message) -> int:
        data = self.codec.encode(msg)
        self.transmit(data)
        s = self.stats
        s.packets_sent += 1
        s.bytes_sent += len(data)
        if isinstance(msg, wire.Repair):
            s.repair_packets += 1
        elif isinstance(msg, wire.ObjectData):
            s.data_packets += 1
        elif isinstance(msg, wire.ObjectMeta):
            s.meta_packets += 1
        elif isinstance(msg, wire.SenderReport):
            s.report_packets += 1
        elif isinstance(msg, wire.Invalidate):
            s.inval_packets += 1
        return len(data)

    def poll(self) -> float | None:
        """Send what the pacing allows and run timers; returns the next time to be polled."""
        now = self.clock()
        if self._repair_due is not None and now >= self._repair_due:
            self._flush_repairs(now)
        due = [t for t in self._inval_resend if t[0] <= now]
        if due:
            self._inval_resend = [t for t in self._inval_resend if t[0] > now]
            for _, iid in due:
                if iid in self._invals:
                    self._urgent.append(self._invals[iid])
        if now >= self._next_report or (self._report_soon and not self._bulk):
            self._urgent.append(self._report())
            self._report_soon = False
            self._next_report = now + self.report_interval
        if self.rate_bps > 0:
            self._tokens = min(self.burst, self._tokens + (now - self._last_fill) * self.rate_bps)
            self._last_fill = now
        while True:
            if self.rate_bps > 0 and self._tokens < self.chunk_size + 100:
                break
            msg = self._next_message()
            if msg is None:
                break
            n = self._send(msg)
            if self.rate_bps > 0:
                self._tokens -= n
            elif self._urgent or self._bulk:
                if self.stats.packets_sent % 64 == 0:
                    return now  # unpaced: yield to the I/O loop every 64 datagrams
        deadlines = [self._next_report]
        if self._repair_due is not None:
            deadlines.append(self._repair_due)
        deadlines += [t for t, _ in self._inval_resend]
        if self._urgent or self._bulk:
            need = self.chunk_size + 100 - self._tokens
            deadlines.append(now + max(need, 1.0) / self.rate_bps if self.rate_bps > 0 else now)
        return min(deadlines)


def _matches(entries: Iterable[tuple[Match, str]], path: str) -> bool:
    return any(path == p if m is Match.EXACT else path.startswith(p) for m, p in entries)


# ---------------------------------------------------------------------------------------------- service


class SenderConfig(ServiceConfig):
    """Config of ``python -m testbed.services.mcast.sender``."""

    name: str = "mcast-sender"
    session_id: int = Field(1, ge=0, le=2**32 - 1)
    key: str | None = None  # shared HMAC key; None = unkeyed SHA-256 tags (integrity only)
    group: GroupConfig = GroupConfig()
    chunk_size: int = Field(wire.DEFAULT_CHUNK, ge=64, le=60000)
    rate_mbps: float = Field(50.0, ge=0)  # 0 = unpaced
    report_interval_s: float = Field(0.5, gt=0)
    repair_delay_s: float = Field(0.01, ge=0)
    repair_holdoff_s: float = Field(0.05, ge=0)
    retain_objects: int = Field(64, ge=1, le=1000)
    retain_bytes: int = Field(64 << 20, ge=1)
    source_dir: Path | None = None  # push every file under it at start, re-push changes every scan
    url_prefix: str = "/"  # path of source_dir's files: url_prefix + relative path
    scan_interval_s: float = Field(2.0, gt=0)
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=1, le=65535)  # POST /push, POST /invalidate, GET /stats


def make_sender(cfg: SenderConfig, transmit: Callable[[bytes], None]) -> IngestSender:
    """An IngestSender from a sender config (``SenderConfig`` or the origin's ``OriginIngestConfig``)."""
    return IngestSender(
        transmit,
        session_id=cfg.session_id,
        key=wire.key_bytes(cfg.key),
        chunk_size=cfg.chunk_size,
        rate_bps=cfg.rate_mbps * 1e6 / 8,
        report_interval=cfg.report_interval_s,
        repair_delay=cfg.repair_delay_s,
        repair_holdoff=cfg.repair_holdoff_s,
        retain_objects=cfg.retain_objects,
        retain_bytes=cfg.retain_bytes,
        inval_repeats=getattr(cfg, "inval_repeats", 2),
    )


def _scan(cfg: SenderConfig, seen: dict[str, tuple[float, int]], sender: IngestSender) -> int:
    """Push new/changed files of ``source_dir``, invalidate deleted ones; returns how many changed."""
    assert cfg.source_dir is not None
    prefix = cfg.url_prefix.rstrip("/")
    now_files: dict[str, tuple[float, int]] = {}
    changed = 0
    for f in sorted(cfg.source_dir.rglob("*")):
        if not f.is_file():
            continue
        st = f.stat()
        path = f"{prefix}/{f.relative_to(cfg.source_dir).as_posix()}"
        now_files[path] = (st.st_mtime, st.st_size)
        if seen.get(path) != now_files[path]:
            try:
                sender.push(path, f.read_bytes())
                changed += 1
            except (OSError, ValueError) as e:
                log.warning("cannot push %s: %s", f, e)
    gone = [p for p in seen if p not in now_files]
    if gone:
        sender.invalidate(gone)
        changed += len(gone)
    seen.clear()
    seen.update(now_files)
    return changed


async def _http_api(cfg: SenderConfig, sender: IngestSender, runner: EndpointRunner):
    from aiohttp import web

    async def push(req: web.Request) -> web.Response:
        path = req.query.get("path", "")
        try:
            oid = sender.push(path, await req.read(), status=int(req.query.get("status", "200")))
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        runner.kick()
        return web.json_response({"object_id": oid})

    async def invalidate(req: web.Request) -> web.Response:
        try:
            body = await req.json()
            paths = body["paths"]
            if not isinstance(paths, list) or not paths:
                raise ValueError("paths must be a non-empty list")
            iid = sender.invalidate(paths, prefix=bool(body.get("prefix")), refresh=bool(body.get("refresh")))
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"bad request: {e}"}, status=400)
        runner.kick()
        return web.json_response({"inval_id": iid})

    async def stats(_req: web.Request) -> web.Response:
        return web.json_response(
            {"sender_id": sender.sender_id, "idle": sender.idle, **sender.stats.as_dict()}
        )

    app = web.Application(client_max_size=256 << 20)
    app.add_routes([web.post("/push", push), web.post("/invalidate", invalidate), web.get("/stats", stats)])
    ar = web.AppRunner(app, access_log=None)
    await ar.setup()
    site = web.TCPSite(ar, cfg.http_host, cfg.http_port)
    await site.start()
    return ar


async def serve(cfg: SenderConfig, stop: asyncio.Event) -> None:
    """Multicast ingest sender: push objects to edge caches over a multicast group, repair on NACK."""
    runner = EndpointRunner(cfg.group)
    sender = make_sender(cfg, runner.transmit)
    log.info(
        "sender id %08x session %d on %s:%d",
        sender.sender_id,
        cfg.session_id,
        cfg.group.group,
        cfg.group.port,
    )
    api = await _http_api(cfg, sender, runner) if cfg.http_port else None
    tasks = [asyncio.create_task(runner.run(sender, stop))]

    async def scanner() -> None:
        seen: dict[str, tuple[float, int]] = {}
        while not stop.is_set():
            if _scan(cfg, seen, sender):
                runner.kick()
            try:
                await asyncio.wait_for(stop.wait(), cfg.scan_interval_s)
            except TimeoutError:
                pass

    if cfg.source_dir:
        tasks.append(asyncio.create_task(scanner()))
    try:
        await asyncio.gather(*tasks)
    finally:
        if api:
            await api.cleanup()


def main(argv: list[str] | None = None) -> int:
    return service_main(SenderConfig, serve, argv, prog="testbed.services.mcast.sender")


if __name__ == "__main__":
    sys.exit(main())
