"""Active health checking of edge servers, shared by the mapping DNS and the redirector.

"Any alive node: to provide fault tolerance" (lecture, server selection): every ``interval`` seconds each
edge's ``GET /_cdn/health`` is probed with a ``timeout`` (plus two of the edge's ``probe_rtt_ms``, the path
RTT the plan gives, so a far edge is not down for being far); ``fall`` consecutive failures mark it down, ``rise``
consecutive successes mark it up again (the HAProxy/nginx ``fall``/``rise`` scheme). A dead edge therefore
leaves every answer within about ``interval x fall`` seconds. Before the first answer a warm-up round probes
every edge once and takes the result as the initial state, so the first answer is neither "everything down"
nor an edge that was never seen alive.

When ``stats`` is on, ``GET /_cdn/stats`` is polled too and the numeric field ``load_field`` (a dotted path
into the JSON, e.g. ``requests`` or ``counters.requests``) becomes the edge's load: its rate per second for
``load_kind: rate`` (a cumulative counter) or its value for ``gauge``. Explicit reports via
:meth:`HealthChecker.report_load` override polled values until the next poll.

A second, passive liveness opinion may be given with :meth:`HealthChecker.report_alive` (the multicast
control channel's heartbeat timeout, :mod:`testbed.services.mcast.consumer`). The two combine
conservatively: an edge is down if either says down, up only when both agree (an edge the second source
has never heard of, ``None``, is judged by the probes alone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from testbed.services import admin
from testbed.services.mapping import EdgeSpec

log = logging.getLogger(__name__)


class HealthConfig(BaseModel):
    """The ``health:`` section of the DNS and redirector configs."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    interval: float = Field(1.0, gt=0)  # seconds between probe rounds
    timeout: float = Field(0.5, gt=0)  # per probe
    fall: int = Field(2, ge=1)  # consecutive failures -> down
    rise: int = Field(2, ge=1)  # consecutive successes -> up again
    path: str = "/_cdn/health"
    stats: bool = False  # also poll stats for LoadAware
    stats_path: str = "/_cdn/stats"
    load_field: str = "requests"
    load_kind: Literal["rate", "gauge"] = "rate"

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthConfig:
        if self.timeout > self.interval:
            raise ValueError(f"timeout ({self.timeout}) must not exceed interval ({self.interval})")
        return self


@dataclass
class EdgeHealth:
    """What the checker knows about one edge."""

    up: bool = False
    fails: int = 0
    oks: int = 0
    probes: int = 0
    last_error: str = ""
    load: float | None = None
    #: the passive opinion (:meth:`HealthChecker.report_alive`): True/False, None = no opinion
    pushed_up: bool | None = None
    _last_counter: float | None = None
    _last_t: float = 0.0


def _dig(obj: Any, dotted: str) -> float | None:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        return None
    return float(obj)


class HealthChecker:
    """An :class:`testbed.services.mapping.EdgeState` fed by active HTTP probes.

    Use ``await checker.start()`` (returns after the warm-up round), then ``is_up``/``load``; ``await
    checker.stop()`` at the end. ``generation`` increases whenever any edge's state or load changes.
    """

    def __init__(self, edges: Sequence[EdgeSpec], cfg: HealthConfig, admin_token: str | None = None) -> None:
        self.cfg = cfg
        #: the run's management token, which the edges' stats need (their health path is open)
        self._stats_headers = admin.bearer(admin_token) if admin_token else {}
        self.edges = list(edges)
        self.state: dict[str, EdgeHealth] = {e.name: EdgeHealth() for e in self.edges}
        self.generation = 0
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        if not cfg.enabled:
            for h in self.state.values():
                h.up = True

    # EdgeState protocol
    def is_up(self, name: str) -> bool:
        """Up only when the probes say up and the passive source (if any) does not say down."""
        h = self.state.get(name)
        return h is not None and h.up and h.pushed_up is not False

    def load(self, name: str) -> float | None:
        h = self.state.get(name)
        return None if h is None else h.load

    def report_load(self, name: str, value: float) -> None:
        """An explicit load report (e.g. pushed by an edge) for LoadAware."""
        h = self.state.get(name)
        if h is not None and h.load != value:
            h.load = value
            self.generation += 1

    def report_alive(self, name: str, alive: bool | None, why: str = "") -> None:
        """A passive liveness opinion on ``name`` (e.g. heartbeats heard or timed out); None withdraws it."""
        h = self.state.get(name)
        if h is None or h.pushed_up == alive:
            return
        before = self.is_up(name)
        h.pushed_up = alive
        self.generation += 1
        if self.is_up(name) != before:
            state = "UP" if not before else "DOWN"
            log.warning("edge %s is now %s%s", name, state, f" ({why})" if why else "")

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            n: {
                "up": h.up and h.pushed_up is not False,
                "probe_up": h.up,
                "pushed_up": h.pushed_up,
                "fails": h.fails,
                "oks": h.oks,
                "probes": h.probes,
                "load": h.load,
                "error": h.last_error,
            }
            for n, h in self.state.items()
        }

    def _url(self, e: EdgeSpec, path: str) -> str:
        base = e.probe_url.rstrip("/") if e.probe_url else f"http://{e.address}:{e.port}"
        return base + path

    def timeout_for(self, e: EdgeSpec) -> float:
        """Seconds a probe of ``e`` may take: the configured ``timeout`` plus two path RTTs (a connection's
        handshake and the request's round trip) when the plan gave the edge's ``probe_rtt_ms``."""
        return self.cfg.timeout + 2 * (e.probe_rtt_ms or 0.0) / 1000

    async def _probe(self, e: EdgeSpec) -> tuple[bool, str]:
        assert self._session is not None
        try:
            async with self._session.get(self._url(e, self.cfg.path),
                                         timeout=aiohttp.ClientTimeout(total=self.timeout_for(e))) as r:
                if r.status != 200:
                    return False, f"HTTP {r.status}"
                try:
                    body = await r.json(content_type=None)
                except ValueError:
                    return False, "health body is not JSON"
                if isinstance(body, dict) and body.get("ok") is False:
                    return False, "edge says ok=false"
                return True, ""
        except (TimeoutError, aiohttp.ClientError, OSError) as ex:
            return False, f"{type(ex).__name__}: {ex}"

    async def _poll_stats(self, e: EdgeSpec, h: EdgeHealth) -> None:
        assert self._session is not None
        try:
            async with self._session.get(self._url(e, self.cfg.stats_path), headers=self._stats_headers,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout_for(e))) as r:
                body = await r.json(content_type=None) if r.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return
        value = _dig(body, self.cfg.load_field)
        if value is None:
            return
        now = time.monotonic()
        if self.cfg.load_kind == "gauge":
            new = value
        else:
            prev, prev_t = h._last_counter, h._last_t
            h._last_counter, h._last_t = value, now
            if prev is None or now <= prev_t:
                return
            new = max(0.0, (value - prev) / (now - prev_t))
        if new != h.load:
            h.load = new
            self.generation += 1

    async def _check(self, e: EdgeSpec, warmup: bool) -> None:
        h = self.state[e.name]
        ok, err = await self._probe(e)
        h.probes += 1
        before = h.up
        if ok:
            h.oks, h.fails, h.last_error = h.oks + 1, 0, ""
            if warmup or (not h.up and h.oks >= self.cfg.rise):
                h.up = True
        else:
            h.fails, h.oks, h.last_error = h.fails + 1, 0, err
            if warmup or (h.up and h.fails >= self.cfg.fall):
                h.up = False
        if h.up != before:
            self.generation += 1
            log.warning("edge %s is now %s%s", e.name, "UP" if h.up else "DOWN", f" ({err})" if err else "")
        if ok and self.cfg.stats:
            await self._poll_stats(e, h)

    async def run_round(self, warmup: bool = False) -> None:
        await asyncio.gather(*(self._check(e, warmup) for e in self.edges))
        self.rounds += 1

    async def start(self) -> None:
        """Open the HTTP session, run the warm-up round, then keep probing in the background."""
        if not self.cfg.enabled or self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
        )
        await self.run_round(warmup=True)
        up = [n for n, h in self.state.items() if h.up]
        log.info("health warm-up done: %d/%d edges up %s", len(up), len(self.edges), up)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                await self.run_round()
            except Exception:  # noqa: BLE001 - a checker bug must not silently stop checking
                log.exception("health round failed")
            await asyncio.sleep(max(0.0, self.cfg.interval - (time.monotonic() - t0)))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
