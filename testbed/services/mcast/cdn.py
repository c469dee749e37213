"""Multicast run in-process by the CDN's own services: ingest into edge caches, invalidation, heartbeats.

The lecture's three uses of multicast inside a CDN, wired into the real origin and edge processes:

* **content ingestion** (origin -> edges): the origin runs :class:`OriginIngest`, an
  :class:`~testbed.services.mcast.sender.IngestSender` on the ingest group; every edge runs
  :class:`EdgeIngest`, an :class:`~testbed.services.mcast.receiver.IngestReceiver` whose
  :class:`~testbed.services.mcast.sinks.ObjectSink` is the edge cache itself, so a pushed object becomes
  a fresh cache entry (``Edge.admit``) and the first client request for it is a hit;
* **origin-edge updates**: when the origin publishes a new version it multicasts an INVALIDATE (or pushes
  the new version), applied by every edge through ``Edge.purge``;
* **internal communication**: every edge multicasts HEARTBEATs with its load on the control group
  (:class:`~testbed.services.mcast.control.HeartbeatPublisher`, load from :class:`EdgeLoad`).

Reliability is NACK-based (NORM, RFC 5740). On a static single-source tree (the controller's
``multicast_static`` groups forward only the source's packets) receivers cannot multicast NACKs to each
other, so the edges send them by unicast to the sender (``sender_addr``/``feedback_port``), which RFC 5740
permits; the sender still aggregates NACKs and multicasts one repair for all receivers.

The config models here are the ``ingest``/``control`` sections of ``EdgeConfig`` and ``OriginConfig``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contract import mcast_wire as wire
from testbed.services.mcast.control import CONTROL_GROUP, HeartbeatPublisher, LoadSample
from testbed.services.mcast.receiver import ReceiverSettings
from testbed.services.mcast.sender import make_sender
from testbed.services.mcast.sinks import ObjectSink
from testbed.services.mcast.sockets import EndpointRunner, GroupConfig

log = logging.getLogger(__name__)


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: GroupConfig = Field(default_factory=lambda: GroupConfig(port=wire.DATA_PORT))
    session_id: int = Field(1, ge=0, le=2**32 - 1)
    #: shared HMAC key of the session (text); None/empty: unkeyed SHA-256 tags (integrity only)
    key: str | None = None


class EdgeIngestConfig(_Channel, ReceiverSettings):
    """``EdgeConfig.ingest``: receive objects and invalidations from the ingest group into the cache (the
    session, key and repair settings are :class:`ReceiverSettings`')."""

    #: unicast NACKs to this sender address (the origin's IP); None: NACKs are multicast on the group
    sender_addr: str | None = None
    feedback_port: int = Field(wire.FEEDBACK_PORT, ge=1, le=65535)

    @field_validator("sender_addr")
    @classmethod
    def _unicast(cls, v: str | None) -> str | None:
        if v is not None and ipaddress.IPv4Address(v).is_multicast:
            raise ValueError(f"{v} is a multicast address; give the sender's unicast address")
        return v


class OriginIngestConfig(_Channel):
    """``OriginConfig.ingest``: push catalog objects and invalidations to the edges over the ingest group."""

    #: UDP port on ``group.iface_addr`` where unicast NACKs are accepted; None: multicast NACKs only
    feedback_port: int | None = Field(wire.FEEDBACK_PORT, ge=1, le=65535)
    #: join the group too (needed to hear multicast NACKs; not needed with unicast feedback)
    join_group: bool = False
    chunk_size: int = Field(wire.DEFAULT_CHUNK, ge=64, le=60000)
    rate_mbps: float = Field(50.0, ge=0)  # 0 = unpaced
    report_interval_s: float = Field(0.5, gt=0)
    repair_delay_s: float = Field(0.01, ge=0)
    repair_holdoff_s: float = Field(0.05, ge=0)
    retain_objects: int = Field(256, ge=1, le=1000)
    retain_bytes: int = Field(64 << 20, ge=1)
    inval_repeats: int = Field(2, ge=1, le=10)
    #: what ``update(path)`` multicasts: purge (INVALIDATE), push (the new version) or none
    on_update: Literal["purge", "push", "none"] = "purge"


class ControlPublishConfig(BaseModel):
    """``EdgeConfig.control``: publish this node's HEARTBEAT with its load on the control group."""

    model_config = ConfigDict(extra="forbid")

    group: GroupConfig = Field(default_factory=lambda: CONTROL_GROUP.model_copy())
    session_id: int = Field(1, ge=0, le=2**32 - 1)
    key: str | None = None
    interval_s: float = Field(1.0, gt=0, le=3600)
    #: service address advertised in the heartbeat; 0.0.0.0: listeners use the datagram's source
    addr: str = "0.0.0.0"

    @field_validator("addr")
    @classmethod
    def _ipv4(cls, v: str) -> str:
        ipaddress.IPv4Address(v)
        return v


async def _run_logged(what: str, coro, errors: list[str]) -> None:
    """Run a channel; a failure (e.g. the interface address is not on this host) is logged and kept in
    ``errors`` so the service goes on serving HTTP and its stats show why multicast is off."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001
        log.exception("%s stopped", what)
        errors.append(f"{e.__class__.__name__}: {e}")


class EdgeIngest:
    """An ingest receiver whose sink is the edge cache (anything with ``admit`` and ``purge``)."""

    def __init__(self, cfg: EdgeIngestConfig, sink: ObjectSink) -> None:
        self.cfg = cfg
        dest = (cfg.sender_addr, cfg.feedback_port) if cfg.sender_addr else None
        self.runner = EndpointRunner(cfg.group, dest)
        self.rx = cfg.receiver(self.runner.transmit, sink)
        self.failures: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "ingest receiver %08x on %s:%d via %s (NACKs to %s)",
            self.rx.receiver_id,
            self.cfg.group.group,
            self.cfg.group.port,
            self.cfg.group.iface_addr,
            self.runner.dest,
        )
        await _run_logged("ingest receiver", self.runner.run(self.rx, stop), self.failures)

    def stats(self) -> dict[str, Any]:
        s = self.rx.stats
        d = s.as_dict()
        return {
            "group": f"{self.cfg.group.group}:{self.cfg.group.port}",
            "receiver_id": self.rx.receiver_id,
            "running": self.runner._transport is not None,
            "failures": list(self.failures),
            "objects_received": s.delivered,
            "bytes_received": s.delivered_bytes,
            "data_chunks": s.data_chunks,
            "repairs": s.repair_chunks,
            "nacks_sent": s.nacks_sent,
            "invalidations_applied": s.invalidations_applied,
            "purged": s.purged,
            "stale_skipped": s.stale_skipped,
            "abandoned": s.abandoned,
            "duplicates": s.duplicates,
            "replayed": s.replayed,
            "sender_restarts": s.sender_restarts,
            "sink_errors": s.sink_errors,
            "errors": dict(s.errors),
            "pending": self.rx.pending(),
            "inval_latency_s": d["inval_latency_s"],
            "applied": [
                {"inval_id": i, "sent_at": sent, "applied_at": at}
                for i, sent, at in list(self.rx.apply_log)[-20:]
            ],
        }


class OriginIngest:
    """An ingest sender run by the origin: :meth:`push` objects, :meth:`invalidate` paths."""

    def __init__(self, cfg: OriginIngestConfig) -> None:
        self.cfg = cfg
        self.runner = EndpointRunner(cfg.group)
        self.tx = make_sender(cfg, self.runner.transmit)  # type: ignore[arg-type]
        self.failures: list[str] = []
        self.pushed_at: dict[str, float] = {}
        self.invalidated_at: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "ingest sender %08x on %s:%d via %s (unicast NACKs on port %s)",
            self.tx.sender_id,
            self.cfg.group.group,
            self.cfg.group.port,
            self.cfg.group.iface_addr,
            self.cfg.feedback_port,
        )
        coro = self.runner.run(self.tx, stop, join=self.cfg.join_group, unicast_port=self.cfg.feedback_port)
        await _run_logged("ingest sender", coro, self.failures)

    def push(
        self, path: str, body: bytes, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> int:
        oid = self.tx.push(path, body, status=status, headers=headers)
        self.pushed_at[path] = time.time()
        self.runner.kick()
        return oid

    def invalidate(self, paths: list[str], *, prefix: bool = False, refresh: bool = False) -> int:
        iid = self.tx.invalidate(paths, prefix=prefix, refresh=refresh)
        now = time.time()
        for p in paths:
            self.invalidated_at[p] = now
        self.runner.kick()
        return iid

    def stats(self) -> dict[str, Any]:
        return {
            "group": f"{self.cfg.group.group}:{self.cfg.group.port}",
            "sender_id": self.tx.sender_id,
            "running": self.runner._transport is not None,
            "failures": list(self.failures),
            "idle": self.tx.idle,
            "on_update": self.cfg.on_update,
            "retained": len(self.tx.retained_paths()),
            **self.tx.stats.as_dict(),
        }


class EdgeLoad:
    """Load figures of an edge for its heartbeats, from a ``stats()`` callable (``Edge.stats``).

    Requests/s is the increase of the request counters (hits, misses, revalidations, stale) since the
    previous sample divided by the time between them.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]], clock: Callable[[], float] = time.monotonic):
        self.stats = stats
        self.clock = clock
        self._last: tuple[float, int] | None = None

    def __call__(self) -> LoadSample:
        s = self.stats()
        n = sum(int(s.get(k, 0)) for k in ("hits", "misses", "revalidated", "stale"))
        now = self.clock()
        rps = 0.0
        if self._last is not None and now > self._last[0]:
            rps = max(0, n - self._last[1]) / (now - self._last[0])
        self._last = (now, n)
        st = s.get("store", {})
        cap = st.get("capacity_bytes") or 1
        served = sum(int(s.get(k, 0)) for k in ("bytes_from_cache", "bytes_from_origin", "bytes_from_peers"))
        return LoadSample(rps, served, min(1.0, st.get("bytes_used", 0) / cap), int(st.get("objects", 0)))


def make_publisher(
    name: str, cfg: ControlPublishConfig, load: Callable[[], LoadSample]
) -> HeartbeatPublisher:
    return HeartbeatPublisher(
        name,
        "edge",
        group=cfg.group,
        session_id=cfg.session_id,
        key=wire.key_bytes(cfg.key),
        interval=cfg.interval_s,
        addr=cfg.addr,
        load=load,
    )


def publisher_stats(pub: HeartbeatPublisher, failures: list[str]) -> dict[str, Any]:
    return {
        "group": f"{pub.group.group}:{pub.group.port}",
        "heartbeats_sent": pub.sent,
        "interval_s": pub.interval,
        "failures": list(failures),
    }


async def run_publisher(pub: HeartbeatPublisher, stop: asyncio.Event, failures: list[str]) -> None:
    await _run_logged("heartbeat publisher", pub.run(stop), failures)
