"""Bandwidth traces: a link's rate changing over time, as on a mobile network.

A trace file is CSV, one step per line: ``duration_s,mbit`` (the link's rate for that long), ``#``
comments and blank lines ignored, an optional ``duration_s,mbit`` header. The trace loops. The shipped
traces in ``topologies/traces/`` are small files of our own in the shape of published 3G and 4G
throughput traces (Riiser et al., "Commute path bandwidth traces from 3G networks", MMSys 2013; van der
Hooft et al., "HTTP/2-Based Adaptive Streaming of HEVC Video over 4G/LTE Networks", 2016): seconds-long
steps between a fraction of a megabit and several, with deep dips.

A spec names one on a host's access link, ``link: {delay_ms: 3, trace: 3g-bus}`` (a name in
``topologies/traces/``, or a path), and the builder starts a :class:`TracePlayer` for it: at each step it
changes the rate of the link's HTB class in both directions (``tc class change``), which both link
modes have (netem links hold HTB under netem; relay links on the relay's own devices). The first step's
rate is the link's rate at build time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.net.spec import MAX_BW_MBIT

TRACE_DIR = Path(__file__).resolve().parents[2] / "topologies" / "traces"


class TraceError(ValueError):
    """A trace file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Trace:
    name: str
    steps: tuple[tuple[float, float], ...]  # (duration_s, mbit), in order

    @property
    def period_s(self) -> float:
        return sum(d for d, _ in self.steps)

    def rate_at(self, t: float) -> float:
        """The rate (Mbit/s) at ``t`` seconds after the trace started (it loops)."""
        t %= self.period_s
        for d, mbit in self.steps:
            if t < d:
                return mbit
            t -= d
        return self.steps[-1][1]

    def mean_mbit(self) -> float:
        return sum(d * m for d, m in self.steps) / self.period_s


def trace_path(spec: str) -> Path:
    """A trace's file: a bare name is ``topologies/traces/<name>.csv``; anything else is a path."""
    if "/" not in spec and not spec.endswith(".csv"):
        return TRACE_DIR / f"{spec}.csv"
    return Path(spec)


def parse_trace(text: str, name: str) -> Trace:
    steps: list[tuple[float, float]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cells = [c.strip() for c in line.replace("\t", ",").split(",")] if "," in line or "\t" in line \
            else line.split()
        if not steps and cells == ["duration_s", "mbit"]:
            continue
        if len(cells) != 2:
            raise TraceError(f"{name}:{n}: expected 'duration_s,mbit', got {raw.strip()!r}")
        try:
            d, mbit = float(cells[0]), float(cells[1])
        except ValueError:
            raise TraceError(f"{name}:{n}: {raw.strip()!r} is not two numbers (duration_s,mbit)") from None
        if not 0.05 <= d <= 3600:
            raise TraceError(f"{name}:{n}: duration {d:g} s is outside 0.05..3600 s")
        if not 0 < mbit <= MAX_BW_MBIT:
            raise TraceError(f"{name}:{n}: rate {mbit:g} Mbit/s is outside (0, {MAX_BW_MBIT}] (a link that is "
                             "down is a failure, not a rate)")
        steps.append((d, mbit))
    if not steps:
        raise TraceError(f"{name}: no steps (lines of 'duration_s,mbit')")
    return Trace(name, tuple(steps))


def load_trace(spec: str) -> Trace:
    p = trace_path(spec)
    try:
        text = p.read_text()
    except OSError as e:
        known = ", ".join(sorted(x.stem for x in TRACE_DIR.glob("*.csv")))
        raise TraceError(f"trace {spec!r}: cannot read {p} ({e.strerror}); shipped traces: {known}") from None
    return parse_trace(text, str(p))


@dataclass
class TracePlayer:
    """Plays a :class:`Trace` on a link: ``set_rate(mbit)`` at each step, in a thread, until stopped.
    ``applied`` keeps ``(monotonic time, mbit)`` of every change, for the tests and the run's records."""

    trace: Trace
    set_rate: Callable[[float], Any]
    what: str = ""
    applied: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TracePlayer:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"trace {self.what}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        at = self.started
        while not self._stop.is_set():
            for d, mbit in self.trace.steps:
                wait = at - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
                try:
                    self.set_rate(mbit)
                    self.applied.append((time.monotonic(), mbit))
                except Exception as e:  # noqa: BLE001 - kept and reported; the link keeps its last rate
                    self.errors.append(f"{self.what}: {type(e).__name__}: {e}")
                    if len(self.errors) > 20:
                        return
                at += d

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
