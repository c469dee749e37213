"""Reliable multicast ingest, invalidation and the control channel.

The core tests run the sans-I/O engines on :class:`SimNetwork` (seeded random loss, virtual time): they
are deterministic and fast. The ``mininet``-marked tests run the real services with real UDP multicast
inside a network namespace of their own (root only).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest

from contract import mcast_wire as wire
from testbed.services.mcast.control import ControlListener, LoadTable
from testbed.services.mcast.receiver import IngestReceiver
from testbed.services.mcast.sender import IngestSender
from testbed.services.mcast.simnet import SimNetwork
from testbed.services.mcast.sinks import MemorySink
from testbed.util import wait_until

SESSION = 42


class Net:
    """A sender ``origin`` and receivers ``e0..e{k-1}`` on one simulated group."""

    def __init__(self, k: int, loss: float, seed: int = 1, key: bytes | None = None, **sender_kw) -> None:
        self.net = SimNetwork(seed=seed, loss=loss)
        self.key = key
        self.sender: IngestSender = self.net.add(
            "origin",
            lambda tx: IngestSender(
                tx,
                session_id=SESSION,
                key=key,
                clock=self.net.clock,
                wall=self.net.clock,
                rng=random.Random(seed),
                rate_bps=sender_kw.pop("rate_bps", 4e6),
                **sender_kw,
            ),
        )
        self.sinks: dict[str, MemorySink] = {}
        self.rx: dict[str, IngestReceiver] = {}
        for i in range(k):
            self.add_receiver(f"e{i}")

    def add_receiver(self, name: str, join: bool = True) -> IngestReceiver:
        sink = self.sinks[name] = MemorySink()
        r = self.net.add(
            name,
            lambda tx: IngestReceiver(
                tx,
                sink,
                session_id=SESSION,
                key=self.key,
                clock=self.net.clock,
                wall=self.net.clock,
                rng=random.Random(zlib.crc32(name.encode())),
            ),
            join=join,
        )
        self.rx[name] = r
        return r

    def push(self, objects: dict[str, bytes]) -> None:
        for p, b in objects.items():
            self.sender.push(p, b, headers={"Content-Type": "application/octet-stream"})
        self.net.kick("origin")

    def all_have(self, objects: dict[str, bytes], names: list[str] | None = None) -> bool:
        return all(
            all(p in self.sinks[n].objects for p in objects)
            for n in (names if names is not None else self.sinks)
        )


def objects(n: int, seed: int = 7, chunk: int = wire.DEFAULT_CHUNK) -> dict[str, bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, chunk - 1, chunk, chunk + 1, 10 * chunk] + [rng.randrange(1, 40_000) for _ in range(n)]
    return {f"/obj/{i}": rng.randbytes(s) for i, s in enumerate(sizes)}


def assert_intact(net: Net, objs: dict[str, bytes], names: list[str] | None = None) -> None:
    for name in names if names is not None else net.sinks:
        sink = net.sinks[name]
        for p, body in objs.items():
            status, headers, got = sink.objects[p]
            assert wire.sha256(got) == wire.sha256(body), f"{name} {p} corrupt"
            assert status == 200 and headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("loss", [0.0, 0.10, 0.30])
def test_every_object_arrives_intact_on_every_receiver(loss: float) -> None:
    net = Net(k=6, loss=loss)
    objs = objects(24)
    net.push(objs)
    assert net.net.run_until(lambda: net.all_have(objs), max_time=120), {
        n: len(s.objects) for n, s in net.sinks.items()
    }
    assert_intact(net, objs)
    for r in net.rx.values():
        assert r.stats.delivered == len(objs) and r.stats.errors == {} and r.stats.abandoned == 0
    if loss:
        assert net.sender.stats.repair_packets > 0
        assert all(r.stats.repair_chunks > 0 and r.stats.nacks_sent > 0 for r in net.rx.values())
    # the sender multicast each first-pass chunk once, whatever the number of receivers
    assert net.sender.stats.data_packets == sum(
        wire.n_chunks_for(len(b), wire.DEFAULT_CHUNK) for b in objs.values()
    )


def test_keyed_session_delivers_under_loss() -> None:
    net = Net(k=3, loss=0.1, seed=3, key=b"ingest-key")
    objs = objects(8, seed=3)
    net.push(objs)
    assert net.net.run_until(lambda: net.all_have(objs), max_time=60)
    assert_intact(net, objs)


def test_nacks_are_suppressed_among_receivers() -> None:
    """RFC 5740 §5.3: loss shared by all receivers (upstream of the branching point) is NACKed by few."""
    net = Net(k=12, loss=0.0, seed=5)
    net.net.source_loss["origin"] = 0.1
    objs = objects(10, seed=5)
    net.push(objs)
    assert net.net.run_until(lambda: net.all_have(objs), max_time=120)
    assert_intact(net, objs)
    suppressed = sum(r.stats.nacks_suppressed for r in net.rx.values())
    sent = sum(r.stats.nacks_sent for r in net.rx.values())
    # every receiver missed the same chunks; most NACK timers were cancelled by another's NACK
    assert suppressed > sent and net.sender.stats.nacks_received == sent


def test_late_joiner_catches_up() -> None:
    net = Net(k=2, loss=0.1, seed=11)
    late = net.add_receiver("late", join=False)
    objs = objects(10, seed=11)
    net.push(objs)
    assert net.net.run_until(lambda: net.all_have(objs, ["e0", "e1"]), max_time=60)
    assert late.stats.packets == 0 and net.sinks["late"].objects == {}
    net.net.join("late")  # joins after the whole first pass: learns from SENDER_REPORTs
    assert net.net.run_until(lambda: net.all_have(objs, ["late"]), max_time=60)
    assert_intact(net, objs, ["late"])
    assert late.stats.data_chunks == 0 and late.stats.repair_chunks > 0 and late.stats.nacks_sent > 0


def test_only_joined_receivers_get_data() -> None:
    net = Net(k=2, loss=0.0)
    outsider = net.add_receiver("outsider", join=False)
    objs = objects(3)
    net.push(objs)
    assert net.net.run_until(lambda: net.all_have(objs, ["e0", "e1"]), max_time=30)
    net.net.run_for(2.0)
    assert outsider.stats.packets == 0 and net.sinks["outsider"].objects == {}
    assert net.net.counters["outsider"].received_packets == 0


def test_manifest_then_objects() -> None:
    net = Net(k=3, loss=0.1, seed=2)
    objs = objects(5, seed=2)
    mid, oids = net.sender.push_manifest(objs.items())
    net.net.kick("origin")
    assert net.net.run_until(lambda: net.all_have(objs), max_time=60)
    for r in net.rx.values():
        st = r.manifest_status(mid)
        assert st is None or st == (len(objs), len(objs))  # the manifest itself may be lost: it is a hint
    assert any(r.manifest_status(mid) == (len(objs), len(objs)) for r in net.rx.values())
    assert oids == sorted(oids) and len(oids) == len(objs)


@pytest.mark.parametrize("loss", [0.0, 0.10, 0.30])
def test_invalidation_reaches_every_receiver(loss: float) -> None:
    net = Net(k=5, loss=loss, seed=21)
    objs = {"/img/a.png": b"a" * 3000, "/img/b.png": b"b" * 10, "/css/site.css": b"c" * 500, "/keep": b"k"}
    net.push(objs)
    assert net.net.run_until(lambda: net.all_have(objs), max_time=60)
    sent_at = net.net.now
    net.sender.invalidate(["/css/site.css"])
    net.sender.invalidate(["/img/"], prefix=True)
    net.net.kick("origin")
    assert net.net.run_until(
        lambda: all(r.stats.invalidations_applied == 2 for r in net.rx.values()), max_time=60
    )
    for name, sink in net.sinks.items():
        assert set(sink.objects) == {"/keep"}, name
        assert {"/css/site.css", "/img/a.png", "/img/b.png"} <= set(sink.purges)
        lat = list(net.rx[name].stats.inval_latency_s)
        assert len(lat) == 2 and all(x >= net.net.delay for x in lat)
        assert all(applied >= sent for _, sent, applied in net.rx[name].apply_log)
        assert net.rx[name].apply_log[0][1] == pytest.approx(sent_at)
    # invalidated objects are no longer offered to late joiners
    assert net.sender.retained_paths() == ["/keep"]


def test_refresh_replaces_content() -> None:
    net = Net(k=3, loss=0.1, seed=8)
    net.push({"/page": b"version 1"})
    assert net.net.run_until(lambda: net.all_have({"/page": b""}), max_time=30)
    net.sender.invalidate(["/page"], refresh=True)
    net.sender.push("/page", b"version 2", headers={"Content-Type": "application/octet-stream"})
    net.net.kick("origin")
    assert net.net.run_until(
        lambda: (
            all(s.objects.get("/page", (0, {}, b""))[2] == b"version 2" for s in net.sinks.values())
            and all(r.stats.invalidations_applied == 1 for r in net.rx.values())
        ),
        max_time=30,
    )
    net.net.run_for(2.0)  # late repairs of version 1 (if any) must not resurrect it
    assert all(s.objects["/page"][2] == b"version 2" for s in net.sinks.values())


def _codec(key: bytes | None = None, session: int = SESSION, sender: int = 0x5E9D) -> wire.Codec:
    return wire.Codec(session, sender, key)


def test_object_older_than_an_applied_invalidation_is_not_admitted() -> None:
    sink = MemorySink()
    r = IngestReceiver(lambda d: None, sink, session_id=SESSION, clock=lambda: 0.0, wall=lambda: 0.0)
    c = _codec()
    body = b"x" * 2000
    r.datagram_received(c.encode(wire.ObjectMeta(5, "/a", 2000, 1200, 2, wire.sha256(body))))
    r.datagram_received(c.encode(wire.ObjectData(5, 0, 0, 2000, body[:1200])))
    r.datagram_received(c.encode(wire.Invalidate(6, wire.InvalAction.PURGE, 0, ((wire.Match.EXACT, "/a"),))))
    r.datagram_received(c.encode(wire.Repair(5, 1, 1200, 2000, body[1200:])))
    assert "/a" not in sink.objects and r.stats.stale_skipped == 1 and sink.purges == ["/a"]
    # a newer version delivered first is not purged by an older, late-arriving invalidation
    r.datagram_received(c.encode(wire.ObjectMeta(9, "/b", 1, 1200, 1, wire.sha256(b"n"))))
    r.datagram_received(c.encode(wire.ObjectData(9, 0, 0, 1, b"n")))
    r.datagram_received(c.encode(wire.Invalidate(8, wire.InvalAction.PURGE, 0, ((wire.Match.EXACT, "/b"),))))
    assert sink.objects["/b"][2] == b"n" and "/b" not in sink.purges


def test_bad_packets_are_counted_and_ignored_and_delivery_still_completes() -> None:
    net = Net(k=2, loss=0.1, seed=13, key=b"right-key")
    objs = objects(6, seed=13)
    net.push(objs)
    sid = net.sender.sender_id
    good = wire.encode(
        wire.ObjectData(1, 0, 0, 10, b"0123456789"),
        session_id=SESSION,
        sender_id=sid,
        seq=1,
        key=b"right-key",
    )
    bad = {
        "malformed": [b"", b"\x00" * 10, random.Random(0).randbytes(300), good[:-1], good[:20]],
        "auth": [
            wire.encode(
                wire.ObjectData(1, 0, 0, 10, b"evil!evil!"),
                session_id=SESSION,
                sender_id=sid,
                seq=9,
                key=b"wrong",
            ),
            wire.encode(
                wire.ObjectData(1, 0, 0, 10, b"evil!evil!"), session_id=SESSION, sender_id=sid, seq=9
            ),
            good[:-3] + bytes(b ^ 0xFF for b in good[-3:]),
        ],
        "wrong_session": [
            wire.encode(
                wire.Invalidate(99, wire.InvalAction.PURGE, 0, ((wire.Match.PREFIX, "/"),)),
                session_id=7,
                sender_id=sid,
                seq=3,
                key=b"right-key",
            )
        ],
        "version": [good[:2] + b"\x09" + good[3:]],
    }
    for datagrams in bad.values():
        for d in datagrams:
            for name in net.rx:
                net.net.inject(d, name)
    assert net.net.run_until(lambda: net.all_have(objs), max_time=60)
    assert_intact(net, objs)
    for r in net.rx.values():
        for reason, datagrams in bad.items():
            assert r.stats.errors.get(reason, 0) == len(datagrams), (reason, r.stats.errors)
        assert r.stats.invalidations_applied == 0 and r.stats.duplicates > 0
    # duplicates of a valid packet are counted and change nothing
    before = net.rx["e0"].stats.duplicates
    net.net.inject(good, "e0")
    net.net.inject(good, "e0")
    net.net.run_for(0.1)
    assert net.rx["e0"].stats.duplicates >= before + 1  # good is object 1 chunk 0: already held or stale


def test_forged_chunk_with_a_valid_unkeyed_tag_is_caught_by_the_object_digest() -> None:
    """Without a key anyone can recompute the SHA-256 tag; the object digest still rejects the forgery."""
    net = Net(k=1, loss=0.0, seed=4)
    body = bytes(range(256)) * 20  # 5120 bytes, 5 chunks
    oid = net.sender.push("/victim", body, headers={"Content-Type": "application/octet-stream"})
    forged = wire.encode(
        wire.ObjectData(oid, 0, 0, len(body), b"E" * 1200),
        session_id=SESSION,
        sender_id=net.sender.sender_id,
        seq=1,
    )
    net.net.inject(forged, "e0")  # arrives before the real chunk 0
    net.net.kick("origin")
    assert net.net.run_until(lambda: "/victim" in net.sinks["e0"].objects, max_time=30)
    assert net.sinks["e0"].objects["/victim"][2] == body
    assert net.rx["e0"].stats.errors == {"digest": 1}


def test_sender_counts_bad_nacks_and_serves_good_ones() -> None:
    net = Net(k=1, loss=0.0)
    net.push({"/x": b"x" * 5000})
    assert net.net.run_until(lambda: net.all_have({"/x": b""}), max_time=10)
    s = net.sender
    s.datagram_received(b"garbage")
    s.datagram_received(
        wire.encode(wire.Nack(s.sender_id, 1, 0, ((0, 1),)), session_id=1, sender_id=3, seq=1)
    )
    s.datagram_received(
        wire.encode(wire.Nack(s.sender_id, 999, 0, ((0, 1),)), session_id=SESSION, sender_id=3, seq=2)
    )
    assert s.stats.errors == {"malformed": 1, "wrong_session": 1} and s.stats.nacks_unserviceable == 1
    before = s.stats.repair_packets
    s.datagram_received(
        wire.encode(
            wire.Nack(s.sender_id, 1, wire.NACK_NEED_META, ((0, 5),)), session_id=SESSION, sender_id=3, seq=3
        )
    )
    net.net.kick("origin")
    net.net.run_for(0.5)
    assert s.stats.repair_packets == before + 5 and s.stats.meta_packets == 2


def test_sender_paces_to_its_rate() -> None:
    rate = 1e6  # bytes/s
    net = Net(k=1, loss=0.0, rate_bps=rate, burst_bytes=10_000)
    body = random.Random(0).randbytes(500_000)
    start = net.net.now
    net.push({"/big": body})
    assert net.net.run_until(lambda: net.all_have({"/big": b""}), max_time=30)
    elapsed = net.net.now - start  # virtual seconds: exact, not a wall-clock timing
    assert elapsed >= (net.sender.stats.bytes_sent - 10_000) / rate * 0.99


# ---------------------------------------------------------------------------------------------- control


def test_load_table_tracks_load_and_detects_failure() -> None:
    now = [100.0]
    t = LoadTable(miss_limit=3, clock=lambda: now[0])
    hb = lambda name, rps: wire.Heartbeat(name, wire.Role.EDGE, 0, 500, "10.0.0.1", rps, 10, 0.5, 3)  # noqa: E731
    t.update(hb("e1", 10.0))
    t.update(hb("e2", 3.0))
    t.update(wire.Heartbeat("dns", wire.Role.DNS, 0, 500, "10.0.0.9"))
    assert t.least_loaded().name == "e2" and set(t.nodes("edge")) == {"e1", "e2"}
    now[0] += 1.4  # < 3 x 0.5 s
    t.update(hb("e1", 20.0))
    assert t.failed() == [] and t.load("e1").requests_per_s == 20.0 and t.load("e1").heartbeats == 2
    now[0] += 0.2  # e2 and dns silent for 1.6 s > 1.5 s
    assert t.failed() == ["dns", "e2"] and t.least_loaded().name == "e1"
    t.update(hb("e2", 1.0))  # back
    assert t.failed() == ["dns"] and t.least_loaded().name == "e2"


def test_control_listener_counts_bad_datagrams() -> None:
    lst = ControlListener(session_id=3, key=b"k")
    good = wire.encode(
        wire.Heartbeat("e1", wire.Role.EDGE, 1, 1000), session_id=3, sender_id=1, seq=1, key=b"k"
    )
    assert lst.feed(good, "10.0.0.5") and lst.nodes()["e1"].addr == "10.0.0.5"
    assert not lst.feed(b"junk")
    assert not lst.feed(
        wire.encode(wire.Heartbeat("x", wire.Role.EDGE, 1, 1000), session_id=3, sender_id=1, seq=2)
    )
    assert not lst.feed(
        wire.encode(wire.Heartbeat("y", wire.Role.EDGE, 1, 1000), session_id=4, sender_id=1, seq=2, key=b"k")
    )
    assert not lst.feed(
        wire.encode(wire.SenderReport(1, 1, (), ()), session_id=3, sender_id=1, seq=3, key=b"k")
    )
    assert lst.errors == {"malformed": 1, "auth": 1, "wrong_session": 1, "ignored": 1}
    assert set(lst.nodes()) == {"e1"}


# ---------------------------------------------------------------------------------------------- namespace

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable

COUNTER = """
import socket, sys, time, pathlib
from testbed.services.mcast.sockets import GroupConfig, open_group_socket
cfg = GroupConfig(group=sys.argv[1], port=int(sys.argv[2]), iface_addr="127.0.0.1")
s = open_group_socket(cfg, join=sys.argv[3] == "join", blocking=True)
s.settimeout(0.1)
out, stop = pathlib.Path(sys.argv[4]), pathlib.Path(sys.argv[5])
n = 0
deadline = time.monotonic() + 60
while not stop.exists() and time.monotonic() < deadline:
    try:
        s.recvfrom(65535); n += 1
    except TimeoutError:
        pass
    out.write_text(str(n))
"""


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns():
    """A network namespace of our own with multicast on its loopback (never the root namespace's lo)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    if not shutil.which("ip"):
        pytest.skip("iproute2 (ip) is not installed")
    name = f"cdnh4-{uuid.uuid4().hex[:8]}"
    _sh("ip", "netns", "add", name)
    procs: list[subprocess.Popen] = []
    try:
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "-n", name, "link", "set", "lo", "multicast", "on")
        _sh("ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo")

        def spawn(*argv: str, log: Path) -> subprocess.Popen:
            p = subprocess.Popen(
                ["ip", "netns", "exec", name, PY, *argv],
                cwd=ROOT,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
            )
            procs.append(p)
            return p

        yield spawn
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.mininet
def test_real_multicast_in_a_namespace(netns, tmp_path: Path) -> None:
    group, port = "239.255.40.9", 17400
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    rng = random.Random(3)
    files = {"a.html": rng.randbytes(100), "img/big.bin": rng.randbytes(300_000), "empty": b""}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    grp = {"group": group, "port": port, "iface_addr": "127.0.0.1", "ttl": 1, "loop": True}
    stop = tmp_path / "stop"
    counters = {}
    for kind in ("join", "nojoin"):
        counters[kind] = tmp_path / f"count-{kind}"
        netns(
            "-c",
            COUNTER,
            group,
            str(port),
            kind,
            str(counters[kind]),
            str(stop),
            log=tmp_path / f"{kind}.log",
        )
    receivers = []
    for i in range(2):
        cfg = tmp_path / f"rx{i}.json"
        cfg.write_text(
            json.dumps(
                {
                    "name": f"rx{i}",
                    "session_id": 5,
                    "key": "k",
                    "group": grp,
                    "store_dir": str(tmp_path / f"store{i}"),
                    "stats_file": str(tmp_path / f"rx{i}-stats.json"),
                }
            )
        )
        receivers.append(
            netns("-m", "testbed.services.mcast.receiver_service", "--config", str(cfg), log=tmp_path / f"rx{i}.log")
        )
    wait_until(
        lambda: all((tmp_path / f"rx{i}-stats.json").exists() for i in range(2)), 15, what="receivers up"
    )
    wait_until(lambda: all(counters[k].exists() for k in counters), 15, what="counters up")
    scfg = tmp_path / "tx.json"
    scfg.write_text(
        json.dumps(
            {
                "session_id": 5,
                "key": "k",
                "group": grp,
                "source_dir": str(src),
                "scan_interval_s": 0.2,
                "rate_mbps": 20,
            }
        )
    )
    netns("-m", "testbed.services.mcast.sender", "--config", str(scfg), log=tmp_path / "tx.log")

    def stored(i: int, rel: str) -> Path:
        from urllib.parse import quote

        return tmp_path / f"store{i}" / quote(rel, safe="")

    wait_until(
        lambda: all(
            stored(i, rel).exists() and stored(i, rel).read_bytes() == data
            for i in range(2)
            for rel, data in files.items()
        ),
        30,
        what="every file on every receiver",
    )
    (src / "a.html").unlink()  # the sender's scan turns a deletion into an INVALIDATE
    wait_until(
        lambda: all(not stored(i, "a.html").exists() for i in range(2)), 15, what="invalidation applied"
    )
    for i in range(2):
        st = wait_until(
            lambda i=i: (s := _stats(tmp_path / f"rx{i}-stats.json")).get("invalidations_applied") and s, 5
        )
        assert st["delivered"] == len(files) and st["errors"] == {}
        assert st["inval_latency_s"]["count"] == 1 and st["inval_latency_s"]["last"] >= 0
    stop.touch()
    wait_until(lambda: int(counters["join"].read_text() or 0) > 0, 5, what="member socket counted")
    assert int(counters["join"].read_text()) > 0
    assert int(counters["nojoin"].read_text() or 0) == 0  # bound to the same group and port, but not a member
    for p in receivers:
        p.terminate()
        assert p.wait(timeout=10) == 0  # clean SIGTERM shutdown


@pytest.mark.mininet
def test_heartbeats_over_real_multicast(netns, tmp_path: Path) -> None:
    grp = {"group": "239.255.40.10", "port": 17401, "iface_addr": "127.0.0.1", "ttl": 1}
    nodes = tmp_path / "nodes.json"
    lcfg = tmp_path / "listen.json"
    lcfg.write_text(json.dumps({"group": grp, "interval_s": 0.2, "miss_limit": 3, "nodes_file": str(nodes)}))
    netns("-m", "testbed.services.mcast.control", "--config", str(lcfg), log=tmp_path / "listen.log")
    pubs = {}
    for name in ("edge-a", "edge-b"):
        cfg = tmp_path / f"{name}.json"
        cfg.write_text(json.dumps({"group": grp, "interval_s": 0.2, "node_name": name, "addr": "10.0.0.1"}))
        pubs[name] = netns(
            "-m", "testbed.services.mcast.control", "--config", str(cfg), log=tmp_path / f"{name}.log"
        )
    wait_until(lambda: {"edge-a", "edge-b"} <= set(_stats(nodes)), 15, what="both edges heard")
    assert not any(n["failed"] for n in _stats(nodes).values())
    pubs["edge-b"].terminate()
    assert pubs["edge-b"].wait(timeout=10) == 0
    wait_until(lambda: _stats(nodes).get("edge-b", {}).get("failed"), 10, what="edge-b declared failed")
    assert _stats(nodes)["edge-a"]["failed"] is False and _stats(nodes)["edge-a"]["role"] == "edge"


async def test_sender_http_api_pushes_and_invalidates() -> None:
    import aiohttp

    from testbed.services.mcast.sender import SenderConfig, _http_api
    from testbed.util import free_port

    sent: list[bytes] = []
    sender = IngestSender(sent.append, session_id=SESSION)

    class Kick:
        kicks = 0

        def kick(self) -> None:
            self.kicks += 1

    port = free_port()
    runner = Kick()
    api = await _http_api(SenderConfig(http_port=port), sender, runner)  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/push", params={"path": "/a.js"}, data=b"x" * 3000) as r:
                assert r.status == 200 and (await r.json())["object_id"] == 1
            async with s.post(f"{base}/push", params={"path": "no-slash"}, data=b"x") as r:
                assert r.status == 400 and "bad path" in (await r.json())["error"]
            async with s.post(f"{base}/invalidate", json={"paths": ["/a.js"]}) as r:
                assert r.status == 200 and (await r.json())["inval_id"] == 2
            for bad in ({"paths": []}, {"nope": 1}, {"paths": ["x"]}):
                async with s.post(f"{base}/invalidate", json=bad) as r:
                    assert r.status == 400
            async with s.post(f"{base}/invalidate", data=b"not json") as r:
                assert r.status == 400
            async with s.get(f"{base}/stats") as r:
                assert (await r.json())["objects_pushed"] == 1
    finally:
        await api.cleanup()
    assert runner.kicks == 2 and sender.retained_paths() == []
    sender.poll()
    kinds = [wire.decode(d)[0].type for d in sent]
    assert (
        wire.MsgType.INVALIDATE in kinds and wire.MsgType.OBJECT_DATA not in kinds
    )  # invalidated before sent
