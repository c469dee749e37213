"""Consumers of the multicast control channel inside the mapping DNS and the redirector.

The lecture's "internal communication" use of multicast: every edge multicasts a HEARTBEAT with its load
(:class:`~testbed.services.mcast.control.HeartbeatPublisher`); the services that choose edges listen
instead of polling each edge. :class:`ControlFeed` runs a
:class:`~testbed.services.mcast.control.ControlListener` in-process and, every ``sync_interval_s``,
copies what it heard into the service's :class:`~testbed.services.health.HealthChecker`:

* **load**: each edge's requests/s from its latest heartbeat goes to ``HealthChecker.report_load``, so
  the ``LoadAware`` policy ranks on pushed load (``use_load``); if the checker also polls
  ``/_cdn/stats`` the newer figure wins;
* **liveness**: an edge whose heartbeats stopped for ``miss_limit`` x its advertised interval (the
  heartbeat-timeout failure detector) is reported down through ``HealthChecker.report_alive``; a
  heartbeat again reports it up. The checker combines this with its active HTTP probes: an edge is down
  if either says down and up only when both agree. An edge never heard from has no heartbeat opinion
  (the probes alone judge it), so a listener that is not (yet) on the group removes nothing.

Heartbeats are matched to the mapping's edges by name, else by the advertised service address.
The section is ``control:`` of :class:`~testbed.services.dns.DnsConfig` and
:class:`~testbed.services.redirector.RedirectorConfig` (:class:`ControlConsumerConfig`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from contract import mcast_wire as wire
from testbed.services.mcast.control import CONTROL_GROUP, ControlListener, NodeState, wall_clock_us
from testbed.services.mcast.sockets import GroupConfig

log = logging.getLogger(__name__)


class ControlConsumerConfig(BaseModel):
    """``control:`` of the DNS and redirector configs: listen to the edges' heartbeats."""

    model_config = ConfigDict(extra="forbid")

    group: GroupConfig = Field(default_factory=lambda: CONTROL_GROUP.model_copy())
    session_id: int = Field(1, ge=0, le=2**32 - 1)
    #: shared HMAC key of the session (text); None/empty: unkeyed tags (integrity only)
    key: str | None = None
    #: heartbeat intervals without a heartbeat before an edge counts as failed
    miss_limit: int = Field(3, ge=1, le=1000)
    #: how often heard load and liveness are copied into the health checker
    sync_interval_s: float = Field(0.1, gt=0, le=60)
    #: feed heartbeat load (requests/s) to the checker (LoadAware); False: liveness only
    use_load: bool = True
    #: use heartbeat timeouts as a liveness opinion; False: load only
    use_liveness: bool = True


class _EdgeLike(Protocol):
    name: str
    address: Any


class _Checker(Protocol):
    def report_load(self, name: str, value: float) -> None: ...

    def report_alive(self, name: str, alive: bool | None, why: str = "") -> None: ...


class ControlFeed:
    """A control-channel listener whose heartbeats drive a health checker's load and liveness.

    ``await start()`` joins the group (``listen=False``: no socket, datagrams only via
    ``listener.feed``, as the unit tests do); :meth:`sync` copies the table into the checker now;
    ``await stop()`` leaves.
    """

    def __init__(
        self,
        cfg: ControlConsumerConfig,
        edges: Sequence[_EdgeLike],
        checker: _Checker,
        *,
        listen: bool = True,
    ) -> None:
        self.cfg = cfg
        self.edges = list(edges)
        self.checker = checker
        self.listen = listen
        self.listener = ControlListener(
            cfg.group,
            session_id=cfg.session_id,
            key=wire.key_bytes(cfg.key),
            miss_limit=cfg.miss_limit,
            wall_clock_us=wall_clock_us,
        )
        self.syncs = 0
        self.failures: list[str] = []
        self._by_name = {e.name: e.name for e in self.edges}
        self._by_addr = {str(e.address): e.name for e in self.edges}
        self._task: asyncio.Task[None] | None = None
        self._last: dict[str, NodeState] = {}

    def _edge_of(self, n: NodeState) -> str | None:
        return self._by_name.get(n.name) or self._by_addr.get(n.addr)

    def sync(self) -> dict[str, NodeState]:
        """Copy every heard edge's load and liveness into the checker; returns the edges' states."""
        seen: dict[str, NodeState] = {}
        for n in self.listener.nodes().values():
            edge = self._edge_of(n)
            if edge is None:
                continue
            prev = seen.get(edge)
            if prev is None or n.last_seen > prev.last_seen:
                seen[edge] = n
        for edge, n in seen.items():
            if self.cfg.use_load and not n.failed:
                self.checker.report_load(edge, float(n.requests_per_s))
            if self.cfg.use_liveness:
                why = (
                    f"no heartbeat for {self.cfg.miss_limit} x {n.interval_s:g} s"
                    if n.failed
                    else "heartbeats"
                )
                self.checker.report_alive(edge, not n.failed, why)
        self._last = seen
        self.syncs += 1
        return seen

    async def start(self) -> None:
        if self.listen:
            try:
                self.listener.start()
            except OSError as e:  # e.g. the interface address is not on this host: keep serving without
                log.error("control channel listener not started: %s", e)
                self.failures.append(f"{e.__class__.__name__}: {e}")
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - a sync bug must not silently stop the feed
                log.exception("control sync failed")
            await asyncio.sleep(self.cfg.sync_interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.listener.close()

    def stats(self) -> dict[str, Any]:
        return {
            "group": f"{self.cfg.group.group}:{self.cfg.group.port}",
            "listening": self.listener._sock is not None,  # noqa: SLF001
            "failures": list(self.failures),
            "heartbeats": self.listener.received,
            "errors": dict(self.listener.errors),
            "replayed": self.listener.replayed,
            "syncs": self.syncs,
            "edges": {
                e: {"requests_per_s": n.requests_per_s, "failed": n.failed, "heartbeats": n.heartbeats}
                for e, n in sorted(self._last.items())
            },
        }
