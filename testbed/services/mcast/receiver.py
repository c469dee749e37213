"""Edge side of multicast content ingest: reassemble, verify, deliver; NACK what is missing (RFC 5740 style).

:class:`IngestReceiver` is a sans-I/O engine. It reassembles objects from OBJECT_META + OBJECT_DATA /
REPAIR chunks, checks length and SHA-256 digest, and hands complete intact objects to an
:class:`ObjectSink` (the edge cache). Loss is detected from gaps in the sender's in-order transmission
and from SENDER_REPORTs (which list the objects the sender retains, so tail loss and objects a late
joiner never saw are noticed). As in NORM (RFC 5740 §5.3), a receiver that lacks something waits a
random back-off in ``[0, nack_backoff]`` before multicasting its NACK; if meanwhile it hears another
receiver's NACK covering what it lacks, it suppresses its own and waits ``nack_retry`` for the repair.
INVALIDATE messages purge matching paths through the sink (the time from send to apply is recorded);
a missed invalidation is noticed in a SENDER_REPORT and NACKed like data. Objects older than an
applied invalidation of their path, or than a version already delivered, are not admitted.

Every malformed, truncated, forged (wrong key/session, bad digest) or duplicate packet is counted in
:attr:`IngestReceiver.stats` and ignored; nothing a packet contains can raise out of
:meth:`IngestReceiver.datagram_received`. Control messages (INVALIDATE, SENDER_REPORT, other receivers'
NACKs) that pass the tag check also pass a per-(session, sender) anti-replay window
(:mod:`contract.replay_window`, RFC 4303 §3.4.3): a captured one sent again is dropped and counted in
``stats.replayed``. A SENDER_REPORT sent more than ``DEFAULT_MAX_AGE_S`` (30 s) before the receiver's wall
clock is dropped too. An INVALIDATE carries its first issue time, not its transmission time, so at first
contact (no fresh SENDER_REPORT heard from its sender yet) one issued more than 30 s ago is held, not
applied: the sender's next report anchors it, and a held invalidation the sender no longer retains is a
recording and is dropped (``stats.replayed``); one it retains would be NACKed and applied anyway.

Sinks are in :mod:`testbed.services.mcast.sinks`; the standalone service (``python -m
testbed.services.mcast.receiver_service --config F``) in :mod:`testbed.services.mcast.receiver_service`.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from contract import mcast_wire as wire
from contract.mcast_wire import Match
from contract.replay_window import DEFAULT_MAX_AGE_S, DEFAULT_SIZE, ReplayWindow, Verdict
from testbed.services.mcast.sinks import ObjectSink

log = logging.getLogger(__name__)


@dataclass
class ReceiverStats:
    packets: int = 0
    bytes: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    data_chunks: int = 0
    repair_chunks: int = 0
    duplicates: int = 0
    nacks_sent: int = 0
    nacks_suppressed: int = 0
    nacks_heard: int = 0
    invalidations_applied: int = 0
    purged: int = 0
    stale_skipped: int = 0  # complete objects older than an applied invalidation or delivered version
    abandoned: int = 0  # gave up after max_nack_rounds
    sink_errors: int = 0
    manifests: int = 0
    ignored: int = 0
    replayed: int = 0  # authentic control messages dropped by the anti-replay window (already seen / too old)
    sender_restarts: int = 0  # senders seen to restart their sequence numbers (the window restarted)
    # rejected packets by reason: malformed, auth (forged/corrupt tag), version, wrong_session,
    # digest (object digest mismatch), too_big, inconsistent (chunk disagrees with META)
    errors: dict[str, int] = field(default_factory=dict)
    inval_latency_s: deque = field(default_factory=lambda: deque(maxlen=1000))

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    @property
    def rejected(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "inval_latency_s"}
        lat = list(self.inval_latency_s)
        d["inval_latency_s"] = {
            "count": len(lat),
            "last": lat[-1] if lat else None,
            "mean": sum(lat) / len(lat) if lat else None,
            "max": max(lat) if lat else None,
        }
        return d


@dataclass
class _Want:
    """Something this receiver lacks and will NACK: an object (``oid``) or an invalidation."""

    oid: int
    inval: bool = False
    meta: wire.ObjectMeta | None = None
    n_chunks: int | None = None
    total_size: int | None = None
    chunks: dict[int, bytes] = field(default_factory=dict)
    max_idx: int = -1  # upper bound of the held chunk indices
    horizon: int = 0  # chunk indices below this were transmitted at least once
    tx_done: bool = False  # the sender finished its first pass of this object
    nack_due: float | None = None
    holdoff_until: float = 0.0
    rounds: int = 0
    heard_cover: bool = False
    digest_failures: int = 0

    def missing(self) -> tuple[bool, list[tuple[int, int]]]:
        """(needs META, missing chunk ranges) as far as known now."""
        if self.inval:
            return False, []
        need_meta = self.meta is None
        top = self._top()
        ranges: list[tuple[int, int]] = []
        nxt = 0  # walk the held indices in order; gaps below ``top`` are missing
        for i in sorted(self.chunks):
            if i >= top:
                break
            if i > nxt:
                ranges.append((nxt, i))
            nxt = i + 1
        if nxt < top:
            ranges.append((nxt, top))
        return need_meta, ranges

    def _top(self) -> int:
        n = self.n_chunks
        if n is None:
            return self.horizon
        return n if self.tx_done else min(self.horizon, n)

    def lacking(self) -> bool:
        """Whether a NACK is due (cheap: called on every chunk, so no sorting on the common path)."""
        if self.inval:
            return True
        if self.meta is None and (self.tx_done or self.horizon > 0):
            return True
        top = self._top()
        held = len(self.chunks)
        if held < top:
            return True
        if self.max_idx < top:  # every held index is below top and distinct
            return False
        return sum(1 for i in self.chunks if i < top) < top


@dataclass
class _SenderState:
    wants: dict[int, _Want] = field(default_factory=dict)
    done: OrderedDict = field(default_factory=OrderedDict)  # oid -> None (complete, stale or given up)
    applied: OrderedDict = field(default_factory=OrderedDict)  # inval id -> Invalidate
    path_oid: dict[str, int] = field(default_factory=dict)  # path -> oid of the version delivered
    manifests: OrderedDict = field(default_factory=OrderedDict)
    last_seen: float = 0.0
    max_data_oid: int = 0
    anchored: bool = False  # a fresh SENDER_REPORT from this sender was heard
    held: OrderedDict = field(default_factory=OrderedDict)  # inval id -> old INVALIDATE heard before the anchor


MAX_HELD_INVALS = 64

MAX_RANGES_PER_NACK = 128
# control messages this receiver acts on (heartbeats on the ingest group are ignored, not replay-checked)
_REPLAY_CHECKED = wire.CONTROL_TYPES - {wire.MsgType.HEARTBEAT}


class IngestReceiver:
    """Sans-I/O edge-side engine: ``transmit(bytes)`` multicasts NACKs; objects go to ``sink``."""

    def __init__(
        self,
        transmit: Callable[[bytes], None],
        sink: ObjectSink,
        *,
        session_id: int,
        key: bytes | None = None,
        receiver_id: int | None = None,
        nack_backoff: float = 0.03,
        nack_retry: float = 0.15,
        max_nack_rounds: int = 50,
        max_object_bytes: int = 256 << 20,
        max_partial: int = 256,
        replay_window: int = DEFAULT_SIZE,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.rng = rng or random.Random()
        self.transmit = transmit
        self.sink = sink
        self.replay = ReplayWindow(replay_window, max_age_us=int(DEFAULT_MAX_AGE_S * 1e6))
        self.codec = wire.Codec(session_id, receiver_id or self.rng.randrange(1, 2**32), key)
        self.nack_backoff = nack_backoff
        self.nack_retry = nack_retry
        self.max_nack_rounds = max_nack_rounds
        self.max_object_bytes = max_object_bytes
        self.max_partial = max_partial
        self.clock = clock
        self.wall = wall
        self.stats = ReceiverStats()
        self.senders: OrderedDict[int, _SenderState] = OrderedDict()
        self.apply_log: deque[tuple[int, float, float]] = deque(maxlen=1000)  # (inval id, sent, applied)

    @property
    def receiver_id(self) -> int:
        return self.codec.sender_id

    # ------------------------------------------------------------------------------------------ input

    def datagram_received(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        self.stats.packets += 1
        self.stats.bytes += len(data)
        try:
            h, msg = self.codec.decode(data)
        except wire.WireError as e:
            self.stats.error(e.reason)
            return
        if h.session_id != self.codec.session_id:
            self.stats.error("wrong_session")
            return
        if h.sender_id == self.receiver_id:
            return  # our own NACK looped back
        if h.type in _REPLAY_CHECKED:
            v = self.replay.admit(
                (h.session_id, h.sender_id), h.seq, wire.send_time_us(msg), now_us=int(self.wall() * 1e6)
            )
            if not v.ok:
                self.stats.replayed += 1
                return
            if v is Verdict.RESTART:
                self.stats.sender_restarts += 1
        try:
            self._handle(h, msg)
        except wire.WireError as e:  # a semantically inconsistent message
            self.stats.error(e.reason)

    def _state(self, sender_id: int) -> _SenderState:
        st = self.senders.get(sender_id)
        if st is None:
            st = self.senders[sender_id] = _SenderState()
            while len(self.senders) > 8:
                self.senders.popitem(last=False)
        self.senders.move_to_end(sender_id)
        st.last_seen = self.clock()
        return st

    def _handle(self, h: wire.Header, msg: wire.Message) -> None:
        if isinstance(msg, wire.Nack):
            self._on_nack(msg)
            return
        if isinstance(msg, wire.Heartbeat):
            self.stats.ignored += 1
            return
        st = self._state(h.sender_id)
        if isinstance(msg, wire.ObjectMeta):
            self._on_meta(h.sender_id, st, msg)
        elif isinstance(msg, wire.ObjectData):
            self._on_data(h.sender_id, st, msg)
        elif isinstance(msg, wire.SenderReport):
            self._on_report(h.sender_id, st, msg)
        elif isinstance(msg, wire.Invalidate):
            if not st.anchored and self.wall() - msg.sent_at_us / 1e6 > DEFAULT_MAX_AGE_S:
                self._hold(st, msg)
            else:
                self._on_invalidate(st, msg)
        elif isinstance(msg, wire.Manifest):
            st.manifests[msg.manifest_id] = msg
            self.stats.manifests += 1
            while len(st.manifests) > 64:
                st.manifests.popitem(last=False)

    def _want(self, st: _SenderState, oid: int) -> _Want | None:
        if oid in st.done:
            return None
        w = st.wants.get(oid)
        if w is None:
            objs = [x for x in st.wants.values() if not x.inval]
            if len(objs) >= self.max_partial:  # bounded memory: give up the oldest partial object
                oldest = min(objs, key=lambda x: x.oid)
                self._give_up(st, oldest)
            w = st.wants[oid] = _Want(oid)
        return w

    def _give_up(self, st: _SenderState, w: _Want) -> None:
        st.wants.pop(w.oid, None)
        self.stats.abandoned += 1
        if not w.inval:
            self._mark_done(st, w.oid)

    def _mark_done(self, st: _SenderState, oid: int) -> None:
        st.done[oid] = None
        while len(st.done) > 65536:
            st.done.popitem(last=False)

    def _on_meta(self, sid: int, st: _SenderState, m: wire.ObjectMeta) -> None:
        if m.total_size > self.max_object_bytes:
            self.stats.error("too_big")
            return
        w = self._want(st, m.object_id)
        if w is None or w.meta is not None:
            self.stats.duplicates += 1
            return
        if (w.total_size is not None and w.total_size != m.total_size) or (
            w.n_chunks is not None and w.n_chunks != m.n_chunks
        ):
            self.stats.error("inconsistent")
            return
        w.meta, w.total_size, w.n_chunks = m, m.total_size, m.n_chunks
        for i in [i for i, c in w.chunks.items() if not self._chunk_fits(m, i, len(c))]:
            del w.chunks[i]
            self.stats.error("inconsistent")
        self._sender_moved_on(st, m.object_id)
        self._progress(sid, st, w)

    @staticmethod
    def _chunk_fits(m: wire.ObjectMeta, idx: int, length: int) -> bool:
        if idx >= m.n_chunks:
            return False
        return length == min(m.chunk_size, m.total_size - idx * m.chunk_size)

    def _on_data(self, sid: int, st: _SenderState, d: wire.ObjectData) -> None:
        repair = isinstance(d, wire.Repair)
        if repair:
            self.stats.repair_chunks += 1
        else:
            self.stats.data_chunks += 1
        if d.total_size > self.max_object_bytes:
            self.stats.error("too_big")
            return
        w = self._want(st, d.object_id)
        if w is None or d.chunk_index in w.chunks:
            self.stats.duplicates += 1
            return
        if w.total_size is not None and w.total_size != d.total_size:
            self.stats.error("inconsistent")
            return
        if w.meta is not None and (
            d.offset != d.chunk_index * w.meta.chunk_size
            or not self._chunk_fits(w.meta, d.chunk_index, len(d.data))
        ):
            self.stats.error("inconsistent")
            return
        w.total_size = d.total_size
        w.chunks[d.chunk_index] = d.data
        w.max_idx = max(w.max_idx, d.chunk_index)
        if not repair:
            w.horizon = max(w.horizon, d.chunk_index + 1)
            self._sender_moved_on(st, d.object_id)
        self._progress(sid, st, w)

    def _sender_moved_on(self, st: _SenderState, oid: int) -> None:
        """First-pass data of ``oid`` is out: every earlier object's first pass is complete."""
        if oid <= st.max_data_oid:
            return
        st.max_data_oid = oid
        for w in st.wants.values():
            if w.oid < oid and not w.inval and not w.tx_done:
                w.tx_done = True
                self._schedule(w)

    def _hold(self, st: _SenderState, m: wire.Invalidate) -> None:
        """An old INVALIDATE before the sender's first fresh report: it may be a recording; wait for the anchor."""
        st.held[m.inval_id] = m
        while len(st.held) > MAX_HELD_INVALS:
            st.held.popitem(last=False)
            self.stats.replayed += 1

    def _anchor(self, st: _SenderState, r: wire.SenderReport) -> None:
        """The sender's first fresh report: apply the held invalidations it still retains, drop the rest."""
        st.anchored = True
        held, st.held = st.held, OrderedDict()
        retained = set(r.invals)
        for iid, m in held.items():
            if iid in retained:
                self._on_invalidate(st, m)
            else:
                self.stats.replayed += 1

    def _on_report(self, sid: int, st: _SenderState, r: wire.SenderReport) -> None:
        if not st.anchored:
            self._anchor(st, r)
        for oid, n in r.objects:
            w = self._want(st, oid)
            if w is None:
                continue
            if w.n_chunks is not None and w.n_chunks != n:
                self.stats.error("inconsistent")
                continue
            w.n_chunks, w.tx_done = n, True
            self._progress(sid, st, w)
        for iid in r.invals:
            if iid not in st.applied and iid not in st.wants:
                st.wants[iid] = _Want(iid, inval=True)
                self._schedule(st.wants[iid])
        retained = {o for o, _ in r.objects} | set(r.invals)
        for w in list(st.wants.values()):
            # no longer retained by the sender and already announced as finished: cannot be repaired
            if w.oid not in retained and w.oid < r.next_id and (w.tx_done or w.inval) and w.rounds > 0:
                self._give_up(st, w)

    def _on_nack(self, n: wire.Nack) -> None:
        """Another receiver's NACK: suppress ours if it covers what we lack (RFC 5740 §5.3)."""
        self.stats.nacks_heard += 1
        st = self.senders.get(n.target)
        if st is None:
            return
        w = st.wants.get(n.object_id)
        if w is None or w.nack_due is None or bool(n.flags & wire.NACK_INVAL) != w.inval:
            return
        need_meta, ranges = w.missing()
        if need_meta and not n.flags & wire.NACK_NEED_META and not w.inval:
            return
        if all(any(a >= c and b <= d for c, d in n.ranges) for a, b in ranges):
            w.heard_cover = True

    def _on_invalidate(self, st: _SenderState, m: wire.Invalidate) -> None:
        if m.inval_id in st.applied:
            self.stats.duplicates += 1
            return
        st.wants.pop(m.inval_id, None)
        st.applied[m.inval_id] = m
        while len(st.applied) > 1024:
            st.applied.popitem(last=False)
        purge_prefix = getattr(self.sink, "purge_prefix", None)
        for match, p in m.entries:
            if match is Match.EXACT:
                targets = [p] if st.path_oid.get(p, 0) < m.inval_id else []
            else:
                targets = [q for q, o in st.path_oid.items() if q.startswith(p) and o < m.inval_id]
                if purge_prefix is not None and not any(
                    o > m.inval_id for q, o in st.path_oid.items() if q.startswith(p)
                ):
                    targets = []
                    try:
                        self.stats.purged += int(purge_prefix(p) or 0)
                    except Exception:  # noqa: BLE001 - a failing sink must not stop the receiver
                        self.stats.sink_errors += 1
                    for q in [q for q in st.path_oid if q.startswith(p)]:
                        del st.path_oid[q]
            for q in targets:
                st.path_oid.pop(q, None)
                try:
                    if self.sink.purge(q):
                        self.stats.purged += 1
                except Exception:  # noqa: BLE001
                    self.stats.sink_errors += 1
        # partial objects this invalidation makes stale are dropped
        for w in [w for w in st.wants.values() if not w.inval and w.oid < m.inval_id and w.meta]:
            if any(_match(e, w.meta.path) for e in m.entries):
                st.wants.pop(w.oid)
                self._mark_done(st, w.oid)
                self.stats.stale_skipped += 1
        now_wall = self.wall()
        lat = now_wall - m.sent_at_us / 1e6
        self.stats.inval_latency_s.append(lat)
        self.apply_log.append((m.inval_id, m.sent_at_us / 1e6, now_wall))
        self.stats.invalidations_applied += 1

    # ------------------------------------------------------------------------------------------ progress

    def _progress(self, sid: int, st: _SenderState, w: _Want) -> None:
        m = w.meta
        if m is not None and len(w.chunks) == m.n_chunks:
            self._complete(st, w, m)
        else:
            self._schedule(w)

    def _complete(self, st: _SenderState, w: _Want, m: wire.ObjectMeta) -> None:
        body = b"".join(w.chunks[i] for i in range(m.n_chunks))
        if len(body) != m.total_size or wire.sha256(body) != m.digest:
            # a forged or corrupted chunk (or META) got in: start this object over, a bounded number of times
            self.stats.error("digest")
            w.digest_failures += 1
            if w.digest_failures > 2:
                self._give_up(st, w)
                return
            w.chunks.clear()
            w.max_idx = -1
            w.meta = None
            w.tx_done = True
            self._schedule(w)
            return
        st.wants.pop(w.oid, None)
        self._mark_done(st, w.oid)
        newer_inval = any(
            iid > w.oid and any(_match(e, m.path) for e in inv.entries) for iid, inv in st.applied.items()
        )
        if newer_inval or st.path_oid.get(m.path, 0) > w.oid:
            self.stats.stale_skipped += 1
            return
        try:
            self.sink.admit(m.path, m.status, m.headers, body)
        except Exception:  # noqa: BLE001
            self.stats.sink_errors += 1
            log.exception("sink refused %s", m.path)
            return
        st.path_oid[m.path] = w.oid
        self.stats.delivered += 1
        self.stats.delivered_bytes += len(body)

    def _schedule(self, w: _Want) -> None:
        if w.nack_due is None and w.lacking():
            now = self.clock()
            w.nack_due = max(now, w.holdoff_until) + self.rng.uniform(0, self.nack_backoff)
            w.heard_cover = False

    def poll(self) -> float | None:
        """Send due NACKs; returns the next time to be polled (None: nothing pending)."""
        now = self.clock()
        nxt: float | None = None
        for sid, st in list(self.senders.items()):
            for w in list(st.wants.values()):
                if w.nack_due is None:
                    if w.lacking() and now >= w.holdoff_until and w.rounds > 0:
                        self._schedule(w)  # the repair we waited for did not come: ask again
                    elif w.rounds > 0 and w.lacking():
                        nxt = w.holdoff_until if nxt is None else min(nxt, w.holdoff_until)
                        continue
                    if w.nack_due is None:
                        continue
                if now < w.nack_due:
                    nxt = w.nack_due if nxt is None else min(nxt, w.nack_due)
                    continue
                w.nack_due = None
                if not w.lacking():
                    continue
                w.rounds += 1
                w.holdoff_until = now + self.nack_retry
                if w.rounds > self.max_nack_rounds:
                    self._give_up(st, w)
                    continue
                if w.heard_cover:
                    self.stats.nacks_suppressed += 1
                else:
                    self._send_nack(sid, w)
                nxt = w.holdoff_until if nxt is None else min(nxt, w.holdoff_until)
        return nxt

    def _send_nack(self, sid: int, w: _Want) -> None:
        if w.inval:
            msg = wire.Nack(sid, w.oid, wire.NACK_INVAL, ())
        else:
            need_meta, ranges = w.missing()
            msg = wire.Nack(
                sid, w.oid, wire.NACK_NEED_META if need_meta else 0, tuple(ranges[:MAX_RANGES_PER_NACK])
            )
        self.transmit(self.codec.encode(msg))
        self.stats.nacks_sent += 1

    # ------------------------------------------------------------------------------------------ queries

    def pending(self) -> int:
        """Objects and invalidations still being recovered."""
        return sum(len(st.wants) for st in self.senders.values())

    def manifest_status(self, manifest_id: int) -> tuple[int, int] | None:
        """(entries delivered or otherwise finished, entries) of a received manifest, or None if unknown."""
        for st in self.senders.values():
            m = st.manifests.get(manifest_id)
            if m is not None:
                return sum(1 for e in m.entries if e.object_id in st.done), len(m.entries)
        return None


def _match(entry: tuple[Match, str], path: str) -> bool:
    m, p = entry
    return path == p if m is Match.EXACT else path.startswith(p)


class ReceiverSettings(BaseModel):
    """An ingest receiver's session and repair settings: the fields the edge's ``ingest`` section
    (:class:`~testbed.services.mcast.cdn.EdgeIngestConfig`) and the standalone receiver's config
    (:class:`~testbed.services.mcast.receiver_service.ReceiverConfig`) share; :meth:`receiver` builds the
    engine from them."""

    session_id: int = Field(wire.INGEST_SESSION, ge=0, le=2**32 - 1)
    #: shared HMAC key of the session (text); None/empty: unkeyed SHA-256 tags (integrity only)
    key: str | None = None
    nack_backoff_s: float = Field(0.03, ge=0, le=10)
    nack_retry_s: float = Field(0.15, gt=0, le=60)
    max_nack_rounds: int = Field(50, ge=1, le=10_000)
    max_object_bytes: int = Field(256 << 20, ge=1)

    def receiver(self, transmit: Callable[[bytes], None], sink: ObjectSink) -> IngestReceiver:
        return IngestReceiver(
            transmit,
            sink,
            session_id=self.session_id,
            key=wire.key_bytes(self.key),
            nack_backoff=self.nack_backoff_s,
            nack_retry=self.nack_retry_s,
            max_nack_rounds=self.max_nack_rounds,
            max_object_bytes=self.max_object_bytes,
        )

