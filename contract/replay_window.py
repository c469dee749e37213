"""Anti-replay sliding window for the multicast control messages (after IPsec ESP, RFC 4303 §3.4.3).

A captured, authentic datagram stays authentic: the HMAC of :mod:`contract.mcast_wire` does not stop
an attacker from sending a recorded INVALIDATE or HEARTBEAT again later. :class:`ReplayWindow` stops
that. It is pure logic, with no I/O and no clock. A receiver calls :meth:`ReplayWindow.admit` for each
control message *after* the message has passed the tag check and the session check. So a forgery, or
a message of another session, never reaches the window and cannot move it forward to block real
traffic. Without a session key the tag is a plain SHA-256 that anyone can compute: the window then
still drops replays, but it cannot stop forgeries.

Per peer (the receivers use ``(session_id, sender_id)``), the window keeps what RFC 4303 §3.4.3 keeps:

* the highest sequence number accepted (``top``);
* a bitmap of ``size`` bits. Bit *i* is set when ``top - i`` was accepted.

A sequence number ahead of ``top`` slides the window and is accepted. One inside the window whose bit
is clear is accepted, so reordering within ``size`` sequence numbers costs nothing. One whose bit is set
is a duplicate. One left of the window is too old. Both are dropped. The header's sequence number is
32 bits and wraps from 2**32 - 1 to 0. Comparisons use serial-number arithmetic (RFC 1982): *ahead*
means less than 2**31 ahead, modulo 2**32.

**A peer heard for the first time** (a late joiner, or a receiver that restarted) has no history. Every
sequence number at or below the first accepted one is treated as already seen. A replay of an older
captured message is dropped. The cost: a genuine message reordered behind the very first one is
dropped too. The protocols recover it: a missed INVALIDATE is listed in the next SENDER_REPORT, NACKed
and repaired under a new sequence number; a heartbeat is followed by the next one.

**Sender restarts.** A restarted sender counts from 1 again under the same sender id (a heartbeat
publisher's id is a hash of its node name). Its new numbers look like replays. The wire format has no
epoch or boot id, and adding one would change the format (version, Scapy layers, captures). So a
restart is recognised by the *transmission timestamp* that some messages carry: HEARTBEAT and
SENDER_REPORT (:func:`contract.mcast_wire.send_time_us`). The rules:

* A message the sequence check rejects, but whose timestamp is newer than every timestamp accepted from
  that peer, is from a new incarnation. Within one incarnation, a later message has both a higher
  sequence number and a later timestamp, and an attacker cannot alter either under the HMAC. The window
  restarts at that message (:attr:`Verdict.RESTART`): everything at or below it counts as seen, as for a
  first contact.
* The restart message's timestamp becomes the incarnation's *floor*. A timestamped message older than
  the floor is from an earlier incarnation and is dropped (:attr:`Verdict.STALE`), even when its old
  sequence number is ahead of the new incarnation's. The floor is otherwise the first timestamp
  accepted from the peer (so, as at a first contact, a timestamped message reordered behind it is
  dropped).

Messages without a transmission timestamp (INVALIDATE, NACK) are checked against the sequence window
only. INVALIDATE's ``sent_at_us`` is its first issue time: repeats and repairs resend it unchanged. It
does not order transmissions. The ingest sender's id is random per process, so a restarted origin is a
new peer anyway. Timestamps are the sender's wall clock (one shared clock under Mininet, NTP
elsewhere); a backward step of the sender's clock by *d* delays the detection of its restart by up to
*d*.

**Freshness** (``max_age_us``): a receiver that starts, or restarts, has no history of a peer, so the
sequence window alone would accept the first authentic message it hears, however old (a heartbeat
recorded an hour ago and replayed to a receiver that has just come up would say a dead edge is alive).
A timestamped message whose transmission time is more than ``max_age_us`` before the receiver's own
clock (``now_us``) is :attr:`Verdict.STALE`, at first contact as at any other time, and leaves no state.
Heartbeats are sent every interval, so the bound (:data:`DEFAULT_MAX_AGE_S`, far above any interval and
any queueing) only drops recordings. It needs the sender's and the receiver's clocks to agree within the
bound: one clock under Mininet, NTP elsewhere. Messages without a timestamp are not bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

SEQ_MOD = 1 << 32  # the header's sequence number is 32 bits
_HALF = 1 << 31
DEFAULT_SIZE = 1024  # bits; RFC 4303 asks for at least 32 and prefers 64 by default: larger is cheap here
DEFAULT_MAX_PEERS = 4096  # least recently heard peers are forgotten beyond this
DEFAULT_MAX_AGE_S = 30.0  # a timestamped message older than this (receiver's clock) is stale


class Verdict(Enum):
    """What :meth:`ReplayWindow.admit` decided; :attr:`ok` says whether to act on the message."""

    NEW = "new"  # first message from this peer: accepted, the window starts here
    ACCEPTED = "accepted"  # ahead of the window, or inside it and not seen before
    RESTART = "restart"  # behind the window but newer than anything accepted: the sender restarted
    DUPLICATE = "duplicate"  # inside the window, already accepted
    TOO_OLD = "too_old"  # left of the window
    STALE = "stale"  # timestamp below the floor of the peer's current incarnation, or older than max_age_us

    @property
    def ok(self) -> bool:
        return self in (Verdict.NEW, Verdict.ACCEPTED, Verdict.RESTART)


@dataclass
class _Peer:
    top: int  # highest accepted sequence number of the current incarnation
    bitmap: int  # bit i set: top - i accepted (or presumed seen); bit 0 is top
    floor_us: int | None  # earliest transmission timestamp the current incarnation can carry
    newest_us: int | None  # newest transmission timestamp accepted


class ReplayWindow:
    """Per-peer sliding anti-replay windows of ``size`` bits (RFC 4303 §3.4.3), at most ``max_peers`` peers.

    Call :meth:`admit` only for authenticated messages. Counters are kept in :attr:`counts`
    (by :class:`Verdict` value).
    """

    def __init__(
        self, size: int = DEFAULT_SIZE, max_peers: int = DEFAULT_MAX_PEERS, max_age_us: int | None = None
    ) -> None:
        if not 1 <= size < _HALF:
            raise ValueError(f"window size {size} out of range")
        if max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        if max_age_us is not None and max_age_us <= 0:
            raise ValueError("max_age_us must be positive")
        self.max_age_us = max_age_us
        self.size = size
        self.max_peers = max_peers
        self._full = (1 << size) - 1
        self._peers: OrderedDict[Hashable, _Peer] = OrderedDict()
        self.counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def top(self, peer: Hashable) -> int | None:
        """The highest sequence number accepted from ``peer`` (None: never heard, or forgotten)."""
        p = self._peers.get(peer)
        return None if p is None else p.top

    def forget(self, peer: Hashable) -> None:
        self._peers.pop(peer, None)

    def admit(self, peer: Hashable, seq: int, ts_us: int | None = None, now_us: int | None = None) -> Verdict:
        """Check ``seq`` (and the transmission timestamp ``ts_us``, if the message has one) from ``peer``;
        slide the window if it is accepted. ``now_us``, the receiver's wall clock, bounds a timestamped
        message's age by ``max_age_us``. Only authenticated messages may be passed in."""
        if not 0 <= seq < SEQ_MOD:
            raise ValueError(f"sequence number {seq} is not 32-bit")
        if (
            ts_us is not None
            and now_us is not None
            and self.max_age_us is not None
            and now_us - ts_us > self.max_age_us
        ):
            v = Verdict.STALE
        else:
            v = self._admit(peer, seq, ts_us)
        self.counts[v.value] = self.counts.get(v.value, 0) + 1
        return v

    def _admit(self, peer: Hashable, seq: int, ts_us: int | None) -> Verdict:
        p = self._peers.get(peer)
        if p is None:
            self._peers[peer] = _Peer(seq, self._full, ts_us, ts_us)
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
            return Verdict.NEW
        self._peers.move_to_end(peer)
        if ts_us is not None and p.floor_us is not None and ts_us < p.floor_us:
            return Verdict.STALE
        ahead = (seq - p.top) % SEQ_MOD
        if 0 < ahead < _HALF:
            p.bitmap = 1 if ahead >= self.size else ((p.bitmap << ahead) | 1) & self._full
            p.top = seq
        else:
            behind = (p.top - seq) % SEQ_MOD
            if behind < self.size and not (p.bitmap >> behind) & 1:
                p.bitmap |= 1 << behind
            elif ts_us is not None and p.newest_us is not None and ts_us > p.newest_us:
                p.top, p.bitmap, p.floor_us, p.newest_us = seq, self._full, ts_us, ts_us
                return Verdict.RESTART
            else:
                return Verdict.DUPLICATE if behind < self.size else Verdict.TOO_OLD
        if ts_us is not None:
            if p.floor_us is None:
                p.floor_us = ts_us
            p.newest_us = ts_us if p.newest_us is None else max(p.newest_us, ts_us)
        return Verdict.ACCEPTED
