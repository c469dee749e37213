"""A deterministic, in-process simulated multicast network for the sans-I/O engines.

:class:`SimNetwork` is a discrete-event simulator with a virtual clock: every datagram a member
transmits is copied to every *other joined* member, each copy independently lost with probability
``loss`` (seeded) and delayed by ``delay`` plus uniform jitter (so copies may be reordered). Members are
polled at the deadlines their ``poll()`` returns. Runs of many simulated seconds take milliseconds, so
the reliability of the ingest protocol is unit-tested exactly and fast, with no sockets.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from testbed.services.mcast.sockets import Endpoint

E = TypeVar("E", bound=Endpoint)


@dataclass
class NodeCounters:
    sent_packets: int = 0
    sent_bytes: int = 0
    received_packets: int = 0
    dropped_packets: int = 0


@dataclass
class SimNetwork:
    seed: int = 0
    loss: float = 0.0
    delay: float = 0.002
    jitter: float = 0.001
    now: float = 1000.0
    rng: random.Random = field(init=False)
    nodes: dict[str, Endpoint] = field(default_factory=dict)
    joined: set[str] = field(default_factory=set)
    counters: dict[str, NodeCounters] = field(default_factory=dict)
    link_loss: dict[str, float] = field(default_factory=dict)  # per receiving node, overrides ``loss``
    source_loss: dict[str, float] = field(default_factory=dict)  # per sending node: lost for everyone

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._events: list[tuple[float, int, str, bytes]] = []
        self._deadline: dict[str, float | None] = {}
        self._n = 0

    def clock(self) -> float:
        return self.now

    def add(self, name: str, factory: Callable[[Callable[[bytes], None]], E], *, join: bool = True) -> E:
        """Create a member with ``factory(transmit)``; it should use :meth:`clock` as its clocks."""
        ep = factory(lambda data: self._transmit(name, data))
        self.nodes[name] = ep
        self.counters[name] = NodeCounters()
        self._deadline[name] = self.now
        if join:
            self.joined.add(name)
        return ep

    def join(self, name: str) -> None:
        self.joined.add(name)
        self._deadline[name] = self.now

    def leave(self, name: str) -> None:
        self.joined.discard(name)

    def kick(self, name: str) -> None:
        """Poll ``name`` at the current time (after giving it new work)."""
        self._deadline[name] = self.now

    def inject(self, data: bytes, to: str) -> None:
        """Deliver a raw datagram to ``to`` now (forged/malformed packets in tests)."""
        self._push(self.now, to, data)

    def _push(self, t: float, to: str, data: bytes) -> None:
        self._n += 1
        heapq.heappush(self._events, (t, self._n, to, data))

    def _transmit(self, src: str, data: bytes) -> None:
        c = self.counters[src]
        c.sent_packets += 1
        c.sent_bytes += len(data)
        if self.rng.random() < self.source_loss.get(src, 0.0):  # lost upstream of every receiver
            for dst in self.joined - {src}:
                self.counters[dst].dropped_packets += 1
            return
        for dst in sorted(self.joined):
            if dst == src:
                continue
            if self.rng.random() < self.link_loss.get(dst, self.loss):
                self.counters[dst].dropped_packets += 1
                continue
            self._push(self.now + self.delay + self.rng.uniform(0, self.jitter), dst, data)

    def run_until(self, pred: Callable[[], bool], max_time: float = 60.0, max_steps: int = 5_000_000) -> bool:
        """Advance virtual time until ``pred()`` holds (True) or ``max_time`` simulated seconds pass (False)."""
        end = self.now + max_time
        for _ in range(max_steps):
            if pred():
                return True
            times = [t for t in self._deadline.values() if t is not None]
            if self._events:
                times.append(self._events[0][0])
            if not times:
                return pred()
            t = min(times)
            if t > end:
                self.now = end
                return pred()
            self.now = max(self.now, t)
            while self._events and self._events[0][0] <= self.now:
                _, _, dst, data = heapq.heappop(self._events)
                if dst in self.joined:
                    self.counters[dst].received_packets += 1
                    self.nodes[dst].datagram_received(data, None)
                    self._deadline[dst] = self.now
            for name, d in list(self._deadline.items()):
                if d is not None and d <= self.now:
                    self._deadline[name] = self.nodes[name].poll()
        raise RuntimeError("simulation did not settle within max_steps (an engine polls without progress?)")

    def run_for(self, duration: float) -> None:
        self.run_until(lambda: False, max_time=duration)
