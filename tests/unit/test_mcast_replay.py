"""Replayed multicast control messages are dropped (issue #16: anti-replay window, RFC 4303 §3.4.3).

First the engines themselves (sans-I/O, encoded datagrams fed in):

* the edge's ingest receiver, for INVALIDATEs;
* the origin's ingest sender, for NACKs;
* the control listener of the DNS and redirector, for HEARTBEATs.

Then the same attack on loopback. Genuine keyed INVALIDATE and HEARTBEAT datagrams are built with Scapy
(``testbed.measure.layers``, HMAC tag by ``signed``) as IP/UDP packets to the multicast group, and
written to a pcap, as an attacker on the path would capture them. Each UDP payload goes to the running
receiver once, and is acted on. Later the payload read back from the pcap is sent again, byte for byte:
it is dropped and counted in ``replayed``. The receivers are the real ones:

* the edge service, with its ingest receiver driven by the socket driver
  (:class:`~testbed.services.mcast.sockets.EndpointRunner`);
* the DNS/redirector's :class:`~testbed.services.mcast.consumer.ControlFeed`, with its listener thread.

Both read a unicast loopback socket instead of joining a group, so no multicast leaves for the root
namespace's loopback.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp
import pytest
from cdn_helpers import start_edge, start_origin

from contract import mcast_wire as wire
from testbed.measure.layers import (
    IP,
    UDP,
    CDNMcast,
    InvalEntry,
    McastHeartbeat,
    McastInvalidate,
    rdpcap,
    signed,
    wrpcap,
)
from testbed.services.health import HealthChecker, HealthConfig
from testbed.services.mapping import EdgeSpec
from testbed.services.mcast import control as control_mod
from testbed.services.mcast.cdn import EdgeIngest
from testbed.services.mcast.consumer import ControlConsumerConfig, ControlFeed
from testbed.services.mcast.control import ControlListener
from testbed.services.mcast.receiver import IngestReceiver
from testbed.services.mcast.sender import IngestSender
from testbed.services.mcast.sinks import MemorySink
from testbed.util import async_wait_until, free_port

KEY = b"replay-test-key"
SESSION = 16
ORIGIN_ID = 0x0A1B2C3D


def inval(iid: int, path: str, sent_at_us: int | None = None) -> wire.Invalidate:
    """An INVALIDATE of ``path``, first issued at ``sent_at_us`` (default: now)."""
    sent = int(time.time() * 1e6) if sent_at_us is None else sent_at_us
    return wire.Invalidate(iid, wire.InvalAction.PURGE, sent, ((wire.Match.EXACT, path),))


def report(next_id: int, invals: tuple[int, ...], ts_us: int | None = None) -> wire.SenderReport:
    """A SENDER_REPORT sent at ``ts_us`` (default: now) that retains the invalidations ``invals``."""
    return wire.SenderReport(int(time.time() * 1e6) if ts_us is None else ts_us, next_id, (), invals)


def heartbeat(name: str, ts_us: int, rps: float = 1.0, interval_ms: int = 100) -> wire.Heartbeat:
    return wire.Heartbeat(name, wire.Role.EDGE, ts_us, interval_ms, "10.0.0.1", rps, 0, 0.1, 1)


# ---------------------------------------------------------------------------------------------- engines


def test_a_replayed_invalidate_purges_nothing_even_after_the_receiver_forgot_it() -> None:
    """The receiver remembers the last 1024 invalidation ids per sender; the window does not forget."""
    sink = MemorySink()
    rx = IngestReceiver(lambda d: None, sink, session_id=SESSION, key=KEY, clock=lambda: 0.0)
    origin = wire.Codec(SESSION, ORIGIN_ID, KEY)
    sink.admit("/a", 200, {}, b"v1")
    captured = origin.encode(inval(1, "/a"))
    rx.datagram_received(captured)
    assert sink.purges == ["/a"] and rx.stats.invalidations_applied == 1
    sink.admit("/a", 200, {}, b"v2")  # fetched again
    rx.datagram_received(captured)
    assert "/a" in sink.objects and rx.stats.replayed == 1 and rx.stats.duplicates == 0
    for iid in range(2, 1200):  # later invalidations of other paths push id 1 out of the receiver's memory
        rx.datagram_received(origin.encode(inval(iid, f"/other/{iid}")))
    assert rx.stats.invalidations_applied == 1199
    rx.datagram_received(captured)
    assert "/a" in sink.objects and sink.purges.count("/a") == 1
    assert rx.stats.replayed == 2 and rx.stats.errors == {}


def test_a_recording_of_invalidations_replayed_to_a_receiver_that_just_started_purges_nothing() -> None:
    """No window yet, so sequence numbers cannot tell; the invalidations' age holds them until the
    sender's first fresh SENDER_REPORT, which no longer retains them."""
    hour_ago = int((time.time() - 3600) * 1e6)
    origin = wire.Codec(SESSION, ORIGIN_ID, KEY)
    recording = [origin.encode(inval(i, f"/obj/{i}", hour_ago)) for i in (1, 2, 3)]
    sink = MemorySink()
    for p in ("/obj/1", "/obj/2", "/obj/3"):
        sink.admit(p, 200, {}, b"current")
    rx = IngestReceiver(lambda d: None, sink, session_id=SESSION, key=KEY, clock=lambda: 0.0)
    for d in recording:
        rx.datagram_received(d)
    assert sink.purges == [] and rx.stats.invalidations_applied == 0
    rx.datagram_received(origin.encode(report(next_id=500, invals=(400, 401))))  # the sender, now
    assert sink.purges == [] and rx.stats.invalidations_applied == 0 and rx.stats.replayed == 3
    for d in recording:  # and again after the anchor: below the window
        rx.datagram_received(d)
    assert sink.purges == [] and rx.stats.replayed == 6
    rx.datagram_received(origin.encode(inval(501, "/obj/2")))  # the next genuine one
    assert sink.purges == ["/obj/2"]


def test_an_old_invalidation_the_sender_still_retains_is_applied_at_its_first_report() -> None:
    """A late joiner hears a repeat of an invalidation first issued a minute ago: held, then applied."""
    origin = wire.Codec(SESSION, ORIGIN_ID, KEY)
    sink = MemorySink()
    sink.admit("/a", 200, {}, b"v1")
    rx = IngestReceiver(lambda d: None, sink, session_id=SESSION, key=KEY, clock=lambda: 0.0)
    rx.datagram_received(origin.encode(inval(7, "/a", int((time.time() - 60) * 1e6))))
    assert sink.purges == []
    rx.datagram_received(origin.encode(report(next_id=8, invals=(7,))))
    assert sink.purges == ["/a"] and rx.stats.invalidations_applied == 1 and rx.stats.replayed == 0


def test_a_stale_sender_report_is_dropped_and_anchors_nothing() -> None:
    origin = wire.Codec(SESSION, ORIGIN_ID, KEY)
    sink = MemorySink()
    sink.admit("/a", 200, {}, b"v1")
    rx = IngestReceiver(lambda d: None, sink, session_id=SESSION, key=KEY, clock=lambda: 0.0)
    rx.datagram_received(origin.encode(report(next_id=3, invals=(1,), ts_us=int((time.time() - 3600) * 1e6))))
    assert rx.stats.replayed == 1
    rx.datagram_received(origin.encode(inval(1, "/a", int((time.time() - 3600) * 1e6))))
    assert sink.purges == []  # held: the stale report did not anchor the sender


def test_a_forgery_cannot_move_the_window_to_block_genuine_invalidations() -> None:
    sink = MemorySink()
    rx = IngestReceiver(lambda d: None, sink, session_id=SESSION, key=KEY, clock=lambda: 0.0)
    origin = wire.Codec(SESSION, ORIGIN_ID, KEY)
    rx.datagram_received(origin.encode(inval(1, "/a")))
    far = (origin.seq + 100_000) % 2**32
    for forged in (
        wire.encode(inval(2, "/b"), session_id=SESSION, sender_id=ORIGIN_ID, seq=far, key=b"guessed"),
        wire.encode(inval(2, "/b"), session_id=SESSION, sender_id=ORIGIN_ID, seq=far),  # unkeyed tag
        wire.encode(inval(2, "/b"), session_id=SESSION + 1, sender_id=ORIGIN_ID, seq=far, key=KEY),
    ):
        rx.datagram_received(forged)
    assert rx.stats.errors == {"auth": 2, "wrong_session": 1} and rx.stats.invalidations_applied == 1
    rx.datagram_received(origin.encode(inval(3, "/c")))  # the next genuine one, numbered far below `far`
    assert sink.purges == ["/a", "/c"] and rx.stats.replayed == 0


def test_a_reordered_invalidate_is_still_applied() -> None:
    sink = MemorySink()
    rx = IngestReceiver(lambda d: None, sink, session_id=SESSION, key=KEY, clock=lambda: 0.0)
    origin = wire.Codec(SESSION, ORIGIN_ID, KEY)
    d1, d2, d3 = (origin.encode(inval(i, f"/{i}")) for i in (1, 2, 3))
    for d in (d1, d3, d2):
        rx.datagram_received(d)
    assert sorted(sink.purges) == ["/1", "/2", "/3"] and rx.stats.replayed == 0


def test_a_replayed_nack_makes_the_sender_repair_nothing() -> None:
    sent: list[bytes] = []
    tx = IngestSender(sent.append, session_id=SESSION, key=KEY, rate_bps=0, repair_delay=0, repair_holdoff=0)
    oid = tx.push("/x", b"x" * 5000)
    while tx.poll() is not None and not tx.idle:
        pass
    edge = wire.Codec(SESSION, 0xE1, KEY)
    nack = edge.encode(wire.Nack(tx.sender_id, oid, 0, ((0, 2),)))
    tx.datagram_received(nack)
    tx.poll()
    assert tx.stats.nacks_received == 1 and tx.stats.repair_packets == 2
    tx.datagram_received(nack)
    tx.poll()
    assert tx.stats.nacks_received == 1 and tx.stats.repair_packets == 2 and tx.stats.replayed == 1


def test_a_replayed_heartbeat_does_not_revive_a_silent_node() -> None:
    now = [100.0]
    lst = ControlListener(session_id=SESSION, key=KEY, miss_limit=2, clock=lambda: now[0])
    pub = wire.Codec(SESSION, 0xED6E, KEY)
    captured = pub.encode(heartbeat("e1", 1_000_000, rps=5.0))
    assert lst.feed(captured)
    now[0] += 1.0  # 1 s > 2 x 100 ms
    assert lst.table.failed() == ["e1"]
    assert not lst.feed(captured)
    assert lst.table.failed() == ["e1"] and lst.nodes()["e1"].heartbeats == 1 and lst.replayed == 1


def test_a_restarted_publisher_is_heard_again_and_its_old_heartbeats_stay_dropped() -> None:
    """Same node name, so same sender id; sequence numbers from 1 again; later timestamps."""
    lst = ControlListener(session_id=SESSION, key=KEY)
    before = wire.Codec(SESSION, 0xED6E, KEY)
    old = [before.encode(heartbeat("e1", 1_000_000 + i * 100_000, rps=float(i))) for i in range(50)]
    assert all(lst.feed(d) for d in old)
    after = wire.Codec(SESSION, 0xED6E, KEY)  # the restarted process
    assert lst.feed(after.encode(heartbeat("e1", 9_000_000, rps=99.0)))
    assert lst.sender_restarts == 1 and lst.nodes()["e1"].requests_per_s == 99.0
    assert lst.feed(after.encode(heartbeat("e1", 9_100_000, rps=98.0)))
    assert not any(lst.feed(d) for d in (old[-1], old[0], old[10]))  # old[-1] is numbered 50, ahead of 2
    assert lst.replayed == 3 and lst.nodes()["e1"].requests_per_s == 98.0


def test_a_recording_replayed_to_a_listener_that_just_started_is_dropped() -> None:
    """A fresh listener has no window for the sender: the wall-clock bound decides."""
    now_us = 1_800_000_000_000_000
    lst = ControlListener(session_id=SESSION, key=KEY, wall_clock_us=lambda: now_us)
    pub = wire.Codec(SESSION, 0xED6E, KEY)
    recording = pub.encode(heartbeat("e1", now_us - 3600 * 10**6, rps=5.0))  # an hour old
    assert not lst.feed(recording)
    assert lst.replayed == 1 and "e1" not in lst.nodes()
    assert lst.feed(pub.encode(heartbeat("e1", now_us - 100_000, rps=6.0)))  # sent 0.1 s ago
    assert lst.nodes()["e1"].requests_per_s == 6.0


# ---------------------------------------------------------------------------------------------- Scapy


def scapy_datagram(group: str, port: int, body, seq: int, sender_id: int, key: bytes = KEY) -> IP:
    """A keyed cdnlab datagram as it travels to the group, built and tagged with Scapy's layers."""
    typ = wire.MsgType.INVALIDATE if isinstance(body, McastInvalidate) else wire.MsgType.HEARTBEAT
    pkt = (
        IP(src="127.0.0.1", dst=group, ttl=1)
        / UDP(sport=40_000, dport=port)
        / CDNMcast(type=int(typ), session_id=SESSION, sender_id=sender_id, seq=seq)
        / body
    )
    return IP(signed(pkt, key))


def capture(path: Path, pkt: IP) -> bytes:
    """Write ``pkt`` to a pcap and return the UDP payload of what reads back (the attacker's copy)."""
    wrpcap(str(path), [pkt])
    (back,) = rdpcap(str(path))
    return bytes(back[UDP].payload)


class Sock:
    def __init__(self, port: int) -> None:
        self.port = port
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, data: bytes) -> None:
        self.s.sendto(data, ("127.0.0.1", self.port))


async def until(pred, what: str, timeout: float = 5.0) -> None:
    async def check() -> bool:
        return bool(pred())

    await async_wait_until(check, timeout, what=what)


@pytest.fixture
async def edge_on_loopback(monkeypatch):
    """An origin and an edge whose ingest receiver listens on a loopback UDP port (no group joined)."""
    port = free_port(socket.SOCK_DGRAM)

    async def run(self: EdgeIngest, stop) -> None:
        await self.runner.run(self.rx, stop, join=False, unicast_port=port)

    monkeypatch.setattr(EdgeIngest, "run", run)
    group = {"group": "239.255.16.1", "port": free_port(socket.SOCK_DGRAM), "iface_addr": "127.0.0.1"}
    ingest = {
        "group": group,
        "session_id": SESSION,
        "key": KEY.decode(),
        "sender_addr": "127.0.0.1",  # NACKs, if any, go by unicast to a closed loopback port
        "feedback_port": free_port(socket.SOCK_DGRAM),
    }
    origin = await start_origin()
    edge = await start_edge(origin.url, name="e1", ingest=ingest)
    sock = Sock(port)
    assert edge.ingest is not None
    rx = edge.ingest.rx

    def up() -> bool:  # the loopback socket is read once junk sent to it is counted
        sock.send(b"junk")
        return rx.stats.errors.get("malformed", 0) > 0

    await until(up, "ingest receiver listening")
    yield origin, edge, sock
    await edge.close()
    await origin.close()


async def x_cache(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as r:
        await r.read()
        return r.headers["X-Cache"]


async def test_scapy_replayed_invalidate_is_dropped_by_the_edge(edge_on_loopback, http, tmp_path) -> None:
    origin, edge, sock = edge_on_loopback
    path = next(o.path for o in origin.catalog.objects if o.size > 1000)
    url = edge.url + path
    assert [await x_cache(http, url), await x_cache(http, url)] == ["MISS", "HIT"]
    stats = edge.ingest.stats

    body = McastInvalidate(
        inval_id=1, action=0, sent_at_us=int(time.time() * 1e6), entries=[InvalEntry(match=0, path=path)]
    )
    pkt = scapy_datagram("239.255.16.1", wire.DATA_PORT, body, seq=7, sender_id=ORIGIN_ID)
    assert pkt[CDNMcast].seq == 7 and pkt.haslayer(McastInvalidate)  # dissected from the built bytes
    payload = bytes(pkt[UDP].payload)
    h, msg = wire.decode(payload, KEY)  # genuine: the edge's key verifies it
    assert h.type is wire.MsgType.INVALIDATE and msg == wire.Invalidate(
        1, wire.InvalAction.PURGE, body.sent_at_us, ((wire.Match.EXACT, path),)
    )
    recorded = capture(tmp_path / "inval.pcap", pkt)
    assert recorded == payload

    sock.send(payload)  # delivered once: applied
    await until(lambda: stats()["invalidations_applied"] == 1, "invalidation applied")
    assert [await x_cache(http, url), await x_cache(http, url)] == ["MISS", "HIT"]  # purged, fetched again

    sock.send(recorded)  # the same bytes later: dropped
    await until(lambda: stats()["replayed"] == 1, "replay counted")
    st = stats()
    assert st["invalidations_applied"] == 1 and st["duplicates"] == 0 and st["purged"] == 1
    assert await x_cache(http, url) == "HIT"  # still cached

    newer = McastInvalidate(
        inval_id=2, action=0, sent_at_us=int(time.time() * 1e6), entries=[InvalEntry(match=0, path=path)]
    )
    sock.send(bytes(scapy_datagram("239.255.16.1", wire.DATA_PORT, newer, 8, ORIGIN_ID)[UDP].payload))
    await until(lambda: stats()["invalidations_applied"] == 2, "next genuine invalidation applied")
    assert await x_cache(http, url) == "MISS" and stats()["replayed"] == 1


@pytest.fixture
async def feed_on_loopback(monkeypatch):
    """The DNS/redirector heartbeat consumer, its listener thread reading a loopback UDP socket."""
    port = free_port(socket.SOCK_DGRAM)

    def loopback_socket(cfg, *, join: bool = True, blocking: bool = False) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        s.setblocking(blocking)
        return s

    monkeypatch.setattr(control_mod, "open_group_socket", loopback_socket)
    edges = [EdgeSpec(name="eu1", address="10.0.0.1", region="r")]
    checker = HealthChecker(edges, HealthConfig(enabled=False))  # no probes: heartbeats decide
    cfg = ControlConsumerConfig(session_id=SESSION, key=KEY.decode(), miss_limit=2, sync_interval_s=0.02)
    feed = ControlFeed(cfg, edges, checker)
    await feed.start()
    assert feed.listener._sock is not None  # noqa: SLF001
    yield feed, checker, Sock(port)
    await feed.stop()


async def test_scapy_replayed_heartbeat_is_dropped_by_the_control_feed(feed_on_loopback, tmp_path) -> None:
    feed, checker, sock = feed_on_loopback
    sender_id = int.from_bytes(wire.sha256(b"eu1")[:4], "big")  # as HeartbeatPublisher numbers itself

    def hb(seq: int, ts_us: int, rps: float, key: bytes = KEY) -> IP:
        body = McastHeartbeat(
            timestamp_us=ts_us, interval_ms=500, role=1, addr="10.0.0.1", requests_per_s=rps, node_name=b"eu1"
        )
        return scapy_datagram("239.255.16.2", wire.CONTROL_PORT, body, seq, sender_id, key)

    t0 = int(time.time() * 1e6)
    pkt = hb(41, t0, 12.5)
    assert pkt[McastHeartbeat].node_name == b"eu1"
    recorded = capture(tmp_path / "hb.pcap", pkt)

    sock.send(bytes(pkt[UDP].payload))  # delivered once: the node's load is updated and it is up
    await until(lambda: checker.load("eu1") == 12.5 and checker.is_up("eu1"), "heartbeat applied")
    assert feed.stats()["heartbeats"] == 1
    await until(lambda: not checker.is_up("eu1"), "eu1 silent past 2 x 500 ms")

    sock.send(recorded)  # a recorded heartbeat of a node that went silent: dropped, the node stays down
    await until(lambda: feed.stats()["replayed"] == 1, "replay counted")
    feed.sync()
    assert not checker.is_up("eu1") and feed.stats()["heartbeats"] == 1
    assert feed.listener.nodes()["eu1"].heartbeats == 1

    # a forgery numbered far ahead does not move the window ...
    sock.send(bytes(hb(100_000, t0 + 10**9, 0.0, key=b"not-the-key")[UDP].payload))
    await until(lambda: feed.stats()["errors"].get("auth") == 1, "forgery refused")
    # ... and the node restarts: numbered from 1 again, later timestamps: heard again
    sock.send(bytes(hb(1, t0 + 2_000_000, 30.0)[UDP].payload))
    await until(lambda: checker.load("eu1") == 30.0 and checker.is_up("eu1"), "restarted node heard")
    assert feed.listener.sender_restarts == 1
    sock.send(recorded)  # the capture of the previous incarnation, numbered 41 > 1: still dropped
    await until(lambda: feed.stats()["replayed"] == 2, "old incarnation's replay counted")
    assert feed.stats()["heartbeats"] == 2 and checker.load("eu1") == 30.0


async def test_scapy_old_heartbeat_is_dropped_by_a_feed_that_never_heard_the_node(
    feed_on_loopback, tmp_path
) -> None:
    """First contact: no window yet, so only the age bound stands between a recording and the table."""
    feed, checker, sock = feed_on_loopback
    sender_id = int.from_bytes(wire.sha256(b"eu2")[:4], "big")
    body = McastHeartbeat(
        timestamp_us=int(time.time() * 1e6) - 3600 * 10**6,
        interval_ms=500,
        role=1,
        addr="10.0.0.2",
        requests_per_s=1.0,
        node_name=b"eu2",
    )
    recorded = capture(
        tmp_path / "old.pcap", scapy_datagram("239.255.16.2", wire.CONTROL_PORT, body, 9, sender_id, KEY)
    )
    sock.send(recorded)
    await until(lambda: feed.stats()["replayed"] == 1, "an hour-old heartbeat dropped")
    feed.sync()
    assert feed.stats()["heartbeats"] == 0 and "eu2" not in feed.listener.nodes()
