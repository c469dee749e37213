"""The relays of the networks running on this machine, seen from outside (for ``cdnlab doctor``).

A network's builder asks its relay processes for counters over their control sockets
(:func:`testbed.net.fidelity.collect`); another process cannot. It finds them instead in the run records
(``/run/cdnlab``, role ``relay``), sends each SIGUSR1 (a relay then logs every link's counters, one
``relay: counters {...}`` line per link, to its log, its stdout), reads the new lines, and asks the kernel
whether the process got real-time priority (SCHED_FIFO).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from testbed.net.fidelity import MAX_LATE_FRACTION, MIN_FRAMES_FOR_FRACTION
from testbed.net.relay import COUNTERS_PREFIX
from testbed.net.state import all_states, owner_alive, same_process

TOTALS = ("tx", "late_frames", "queue_drop", "tx_error", "socket_drops", "lost")


def totals(lines: list[str]) -> dict[str, int]:
    """Sum both directions of every ``relay: counters`` line (other lines are ignored): ``links``, and
    ``tx`` (frames sent on), ``late_frames``, ``queue_drop``, ``tx_error``, ``socket_drops``, ``lost``."""
    out = dict.fromkeys(TOTALS, 0)
    links = set()
    for ln in lines:
        i = ln.find(COUNTERS_PREFIX)
        if i < 0:
            continue
        try:
            c = json.loads(ln[i + len(COUNTERS_PREFIX):])
        except ValueError:
            continue
        links.add(c.get("link"))
        for d in ("a_to_b", "b_to_a"):
            for k in TOTALS:
                out[k] += int(c.get(d, {}).get(k, 0))
    return {"links": len(links), **out}


def _log_of(pid: int) -> Path | None:
    try:
        p = Path(os.readlink(f"/proc/{pid}/fd/1"))
    except OSError:
        return None
    return p if p.is_file() else None


def catches_sigusr1(pid: int) -> bool:
    """True once the process has its SIGUSR1 handler (before that, SIGUSR1 would kill a starting relay)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGUSR1 - 1)))
    except (OSError, ValueError):
        pass
    return False


def relay_counters(pid: int, settle_s: float = 0.3, timeout_s: float = 2.0) -> list[str]:
    """SIGUSR1 to relay ``pid`` and the counter lines it then logs (until its log stops growing); nothing
    for a relay still starting (no handler yet: the signal would kill it)."""
    log = _log_of(pid)
    if log is None or not catches_sigusr1(pid):
        return []
    start = log.stat().st_size
    os.kill(pid, signal.SIGUSR1)
    deadline, last, size = time.monotonic() + timeout_s, time.monotonic(), start
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = log.stat().st_size
        if now != size:
            size, last = now, time.monotonic()
        elif size > start and time.monotonic() - last >= settle_s:
            break
    with log.open("rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace").splitlines()


def realtime(pid: int) -> bool | None:
    """Whether the process runs at real-time priority (None if it is gone)."""
    try:
        return os.sched_getscheduler(pid) in (os.SCHED_FIFO, os.SCHED_RR)
    except OSError:
        return None


def running_relays() -> list[dict[str, Any]]:
    """One entry per running network with relays: ``run_id``, ``procs``, ``realtime`` (how many of them
    got SCHED_FIFO) and the :func:`totals` of their links."""
    out = []
    for st in all_states():
        if not owner_alive(st):
            continue
        procs = [t.pid for t in st.pids if t.role == "relay" and same_process(t)]
        if not procs:
            continue
        lines: list[str] = []
        for pid in procs:
            lines += relay_counters(pid)
        out.append({"run_id": st.run_id, "procs": len(procs),
                    "realtime": sum(1 for p in procs if realtime(p)), **totals(lines)})
    return out


def keeping_up(r: dict[str, Any]) -> bool:
    """As :func:`testbed.net.fidelity.assess` judges: no socket drops, at most 1 % of frames late
    (counted over at least 100 frames)."""
    return not r["socket_drops"] and r["late_frames"] / max(r["tx"], MIN_FRAMES_FOR_FRACTION) <= MAX_LATE_FRACTION


def describe(r: dict[str, Any]) -> str:
    return (f"{r['run_id']}: {r['procs']} relay processes ({r['realtime']} at real-time priority), "
            f"{r['links']} links, {r['tx']} frames sent, {r['late_frames']} late, {r['queue_drop']} queue "
            f"drops, {r['tx_error']} send errors, {r['socket_drops']} socket drops")
