"""The CDN's internal multicast control channel: load heartbeats and failure detection.

Every edge (and any other node) multicasts a HEARTBEAT (:class:`~contract.mcast_wire.Heartbeat`:
name, role, service address, requests/s, bytes served, cache fill) every ``interval`` seconds on the
control group. Any service that needs the CDN's current state (the mapping DNS's load-aware policy, the
redirector, the controller) runs a :class:`ControlListener` and reads :meth:`ControlListener.nodes`:
the latest load per node, and whether the node is considered failed, which it is after
``miss_limit`` consecutive heartbeat intervals without a heartbeat (the heartbeat-timeout failure
detector of the lecture's "internal communication" use of multicast). One multicast datagram per node
and interval reaches every consumer, instead of every consumer polling every edge.

``python -m testbed.services.mcast.control --config F`` runs a publisher (``node_name`` set; load read
from ``load_url`` JSON if given) and/or a listener with ``GET /nodes`` on ``http_port``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from contract import mcast_wire as wire
from contract.mcast_wire import Role
from contract.replay_window import DEFAULT_MAX_AGE_S, DEFAULT_SIZE, ReplayWindow, Verdict
from testbed.services.base import ServiceConfig, service_main
from testbed.services.mcast.sockets import GroupConfig, open_group_socket

log = logging.getLogger(__name__)

CONTROL_GROUP = GroupConfig(group="239.255.40.2", port=wire.CONTROL_PORT)


@dataclass(frozen=True)
class LoadSample:
    requests_per_s: float = 0.0
    bytes_served: int = 0
    cache_fill: float = 0.0  # 0..1
    cache_objects: int = 0


@dataclass
class NodeState:
    """What the control channel knows about one node."""

    name: str
    role: str
    addr: str
    requests_per_s: float
    bytes_served: int
    cache_fill: float
    cache_objects: int
    interval_s: float
    last_seen: float  # listener's monotonic clock
    sent_at: float  # publisher's wall clock
    heartbeats: int
    failed: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


class LoadTable:
    """Latest heartbeat per node and a timeout failure detector (sans-I/O; ``now`` from ``clock``)."""

    def __init__(self, miss_limit: int = 3, clock: Callable[[], float] = time.monotonic) -> None:
        self.miss_limit = miss_limit
        self.clock = clock
        self._nodes: dict[str, NodeState] = {}
        self._lock = threading.Lock()

    def update(self, hb: wire.Heartbeat, addr: str | None = None) -> None:
        now = self.clock()
        with self._lock:
            prev = self._nodes.get(hb.name)
            service_addr = hb.addr if hb.addr != "0.0.0.0" else (addr or "0.0.0.0")
            self._nodes[hb.name] = NodeState(
                hb.name,
                hb.role.name.lower(),
                service_addr,
                hb.requests_per_s,
                hb.bytes_served,
                hb.cache_fill,
                hb.cache_objects,
                hb.interval_ms / 1000,
                now,
                hb.timestamp_us / 1e6,
                (prev.heartbeats if prev else 0) + 1,
            )

    def nodes(self, role: str | None = None) -> dict[str, NodeState]:
        """Every node heard from (copies), with ``failed`` evaluated now."""
        now = self.clock()
        out = {}
        with self._lock:
            for name, n in self._nodes.items():
                if role is not None and n.role != role:
                    continue
                c = NodeState(**asdict(n))
                c.failed = now - n.last_seen > self.miss_limit * n.interval_s
                out[name] = c
        return out

    def alive(self, role: str | None = None) -> dict[str, NodeState]:
        return {k: v for k, v in self.nodes(role).items() if not v.failed}

    def failed(self, role: str | None = None) -> list[str]:
        return sorted(k for k, v in self.nodes(role).items() if v.failed)

    def load(self, name: str) -> NodeState | None:
        return self.nodes().get(name)

    def least_loaded(self, role: str = "edge") -> NodeState | None:
        alive = self.alive(role)
        return min(alive.values(), key=lambda n: (n.requests_per_s, n.name)) if alive else None


class HeartbeatPublisher:
    """Multicasts this node's HEARTBEAT every ``interval`` seconds; ``load()`` supplies the figures."""

    def __init__(
        self,
        name: str,
        role: Role | str,
        *,
        group: GroupConfig = CONTROL_GROUP,
        session_id: int = 1,
        key: bytes | None = None,
        interval: float = 1.0,
        addr: str = "0.0.0.0",
        load: Callable[[], LoadSample] = LoadSample,
    ) -> None:
        self.name = name
        self.role = role if isinstance(role, Role) else Role[role.upper()]
        self.group = group
        self.codec = wire.Codec(session_id, int.from_bytes(wire.sha256(name.encode())[:4], "big"), key)
        self.interval = interval
        self.addr = addr
        self.load = load
        self.sent = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def message(self) -> wire.Heartbeat:
        s = self.load()
        return wire.Heartbeat(
            self.name,
            self.role,
            int(time.time() * 1e6),
            max(1, int(self.interval * 1000)),
            self.addr,
            float(s.requests_per_s),
            int(s.bytes_served),
            min(1.0, max(0.0, float(s.cache_fill))),
            int(s.cache_objects),
        )

    def send_once(self) -> None:
        if self._sock is None:
            self._sock = open_group_socket(self.group, join=False, blocking=True)
        try:
            data = self.codec.encode(self.message())
        except Exception:  # noqa: BLE001 - a failing load callback must not stop the heartbeats
            log.exception("cannot build heartbeat")
            return
        try:
            self._sock.sendto(data, (self.group.group, self.group.port))
            self.sent += 1
        except OSError as e:
            log.warning("heartbeat not sent: %s", e)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.send_once()
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass
        self.close()

    def start(self) -> HeartbeatPublisher:
        """Publish from a daemon thread (for services that are not asyncio)."""

        def loop() -> None:
            while not self._stop.is_set():
                self.send_once()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name=f"heartbeat-{self.name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
            self._thread = None
        if self._sock:
            self._sock.close()
            self._sock = None


def wall_clock_us() -> int:
    """The wall clock in microseconds, as heartbeats carry their transmission time."""
    return time.time_ns() // 1000


class ControlListener:
    """Joins the control group and keeps a :class:`LoadTable` of every node's latest heartbeat.

    ``start()`` runs a daemon thread (usable from asyncio and threaded services alike); ``close()`` stops it.
    Bad datagrams are counted in ``errors`` by reason and ignored. An authentic heartbeat then passes a
    per-(session, sender) anti-replay window (:mod:`contract.replay_window`, RFC 4303 §3.4.3; sender
    restarts recognised by the heartbeat's timestamp): one already accepted, or older than the window,
    is dropped and counted in ``replayed``, so a recorded heartbeat cannot keep a dead node alive. With
    ``wall_clock_us`` (the services pass the real clock; :func:`wall_clock_us`) a heartbeat sent more than
    ``DEFAULT_MAX_AGE_S`` before it is dropped too, so a recording replayed to a listener that has just
    started, and so has no window for that sender yet, cannot either.
    """

    def __init__(
        self,
        group: GroupConfig = CONTROL_GROUP,
        *,
        session_id: int = 1,
        key: bytes | None = None,
        miss_limit: int = 3,
        clock: Callable[[], float] = time.monotonic,
        replay_window: int = DEFAULT_SIZE,
        wall_clock_us: Callable[[], int] | None = None,
    ) -> None:
        self.group = group
        self.wall_clock_us = wall_clock_us
        self.session_id = session_id
        self.key = key
        self.table = LoadTable(miss_limit, clock)
        self.replay = ReplayWindow(replay_window, max_age_us=int(DEFAULT_MAX_AGE_S * 1e6))
        self.received = 0
        self.replayed = 0  # authentic heartbeats dropped by the anti-replay window (or too old)
        self.sender_restarts = 0  # publishers seen to restart their sequence numbers
        self.errors: dict[str, int] = {}
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def feed(self, data: bytes, addr: str | None = None) -> bool:
        """Handle one datagram; True when it was a valid heartbeat of our session, not a replay."""
        try:
            h, msg = wire.decode(data, self.key)
            if h.session_id != self.session_id:
                raise wire.WireError("wrong_session", f"session {h.session_id}")
            if not isinstance(msg, wire.Heartbeat):
                raise wire.WireError("ignored", f"{h.type.name} on the control channel")
        except wire.WireError as e:
            self.errors[e.reason] = self.errors.get(e.reason, 0) + 1
            return False
        now_us = self.wall_clock_us() if self.wall_clock_us is not None else None
        v = self.replay.admit((h.session_id, h.sender_id), h.seq, wire.send_time_us(msg), now_us)
        if not v.ok:
            self.replayed += 1
            return False
        if v is Verdict.RESTART:
            self.sender_restarts += 1
        self.received += 1
        self.table.update(msg, addr)
        return True

    def start(self) -> ControlListener:
        self._sock = open_group_socket(self.group, join=True, blocking=True)
        self._sock.settimeout(0.2)

        def loop() -> None:
            assert self._sock is not None
            while not self._stop.is_set():
                try:
                    data, addr = self._sock.recvfrom(65535)
                except TimeoutError:
                    continue
                except OSError:
                    break
                self.feed(data, addr[0])

        self._thread = threading.Thread(target=loop, name="control-listener", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
            self._thread = None
        if self._sock:
            self._sock.close()
            self._sock = None

    def nodes(self, role: str | None = None) -> dict[str, NodeState]:
        return self.table.nodes(role)

    def __enter__(self) -> ControlListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- service


class ControlConfig(ServiceConfig):
    """Config of ``python -m testbed.services.mcast.control``."""

    name: str = "mcast-control"
    session_id: int = Field(1, ge=0, le=2**32 - 1)
    key: str | None = None
    group: GroupConfig = CONTROL_GROUP
    interval_s: float = Field(1.0, gt=0)
    miss_limit: int = Field(3, ge=1)
    node_name: str | None = None  # publish heartbeats as this node
    role: Literal["other", "edge", "origin", "dns", "redirector", "controller"] = "edge"
    addr: str = "0.0.0.0"
    load_url: str | None = None  # GET -> JSON {requests_per_s, bytes_served, cache_fill, cache_objects}
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=1, le=65535)  # listener: GET /nodes
    nodes_file: Path | None = None  # listener: write the /nodes JSON here twice a second


def _http_load(url: str) -> Callable[[], LoadSample]:
    import urllib.request

    def load() -> LoadSample:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as r:  # noqa: S310 - configured local URL
                d = json.loads(r.read())
            return LoadSample(
                float(d.get("requests_per_s", 0)),
                int(d.get("bytes_served", 0)),
                float(d.get("cache_fill", 0)),
                int(d.get("cache_objects", 0)),
            )
        except (OSError, ValueError, TypeError) as e:
            log.warning("load from %s failed: %s", url, e)
            return LoadSample()

    return load


async def serve(cfg: ControlConfig, stop: asyncio.Event) -> None:
    """Multicast control channel: publish this node's heartbeats and/or serve every node's load at /nodes."""
    key = wire.key_bytes(cfg.key)
    tasks = []
    pub = None
    if cfg.node_name:
        pub = HeartbeatPublisher(
            cfg.node_name,
            cfg.role,
            group=cfg.group,
            session_id=cfg.session_id,
            key=key,
            interval=cfg.interval_s,
            addr=cfg.addr,
            load=_http_load(cfg.load_url) if cfg.load_url else LoadSample,
        )
        if cfg.load_url:
            pub.start()  # the HTTP fetch blocks: publish from its own thread
        else:
            tasks.append(asyncio.create_task(pub.run(stop)))
    listener = api = None
    if cfg.http_port or cfg.nodes_file:
        listener = ControlListener(
            cfg.group,
            session_id=cfg.session_id,
            key=key,
            miss_limit=cfg.miss_limit,
            wall_clock_us=wall_clock_us,
        )
        listener.start()

        def snapshot() -> dict:
            return {k: v.as_dict() for k, v in listener.nodes().items()}

        async def dumper(path: Path) -> None:
            while not stop.is_set():
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(snapshot()))
                tmp.replace(path)
                try:
                    await asyncio.wait_for(stop.wait(), min(cfg.interval_s, 0.5))
                except TimeoutError:
                    pass

        if cfg.nodes_file:
            tasks.append(asyncio.create_task(dumper(cfg.nodes_file)))
        if cfg.http_port:
            from aiohttp import web

            async def nodes(_req: web.Request) -> web.Response:
                return web.json_response(snapshot())

            app = web.Application()
            app.add_routes([web.get("/nodes", nodes)])
            api = web.AppRunner(app, access_log=None)
            await api.setup()
            await web.TCPSite(api, cfg.http_host, cfg.http_port).start()
    try:
        await stop.wait()
        await asyncio.gather(*tasks)
    finally:
        if pub is not None:
            pub.close()
        if listener:
            listener.close()
        if api:
            await api.cleanup()


def main(argv: list[str] | None = None) -> int:
    return service_main(ControlConfig, serve, argv, prog="testbed.services.mcast.control")


if __name__ == "__main__":
    sys.exit(main())
