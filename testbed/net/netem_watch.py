"""The netem links of networks running now, from outside (``cdnlab doctor``): the kernel's own counters.

A network built with netem links has no relay processes to ask; its links are ``netem`` qdiscs (with the
spec's ``pfifo`` queue under them) on both ends of each link. This module reads ``tc -s qdisc show`` on
the switch ports of each running network's OVS bridges (root namespace) and, through ``nsenter``, in the
network namespace of every service process the run recorded (the host ends). It only reads: nothing is
sent anywhere. The totals are :func:`testbed.net.fidelity.netem_totals`'s.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from testbed.net.fidelity import netem_totals
from testbed.net.state import RunState, all_states, owner_alive, same_process


def _run(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout if r.returncode == 0 else ""


def tc_outputs(st: RunState) -> list[str]:
    """``tc -s qdisc show`` of every switch port of the run's bridges and of every namespace its recorded
    service processes live in (one output per interface or namespace)."""
    out: list[str] = []
    for br in st.bridges:
        for port in _run(["ovs-vsctl", "--timeout=5", "list-ports", br]).split():
            out.append(_run(["tc", "-s", "qdisc", "show", "dev", port]))
    seen: set[str] = set()
    for t in st.pids:
        if t.role in ("controller", "relay") or not same_process(t):
            continue
        try:
            ns = os.readlink(f"/proc/{t.pid}/ns/net")
        except OSError:
            continue
        if ns in seen:
            continue
        seen.add(ns)
        out.append(_run(["nsenter", "-t", str(t.pid), "-n", "tc", "-s", "qdisc", "show"]))
    return out


def running_netem() -> list[dict[str, Any]]:
    """One entry per running network whose links are netem: ``run_id`` and the netem totals
    (``directions``, ``frames``, ``dropped``, ``queue_drops``)."""
    found = []
    for st in all_states():
        if not owner_alive(st) or not st.bridges:
            continue
        totals = netem_totals(tc_outputs(st))
        if totals["directions"]:
            found.append({"run_id": st.run_id, **totals})
    return found


def describe(r: dict[str, Any]) -> str:
    return (f"{r['run_id']}: {r['directions']} netem link directions, {r['frames']} frames sent on, "
            f"{r['dropped']} dropped by netem (loss, rate limiter), {r['queue_drops']} tail-dropped by the "
            "links' queues")
