"""Measure one emulated link between two Mininet hosts: loss, rate and the bottleneck queue (its RTT:
:mod:`testbed.measure.ping`).

Every probe runs in the hosts' own namespaces (``node.popen``/``node.cmd``): the receiver of
:mod:`testbed.measure.linkprobe` on ``dst``, its sender on ``src``. Used by ``cdnlab bench links`` and by
the link tests of both link modes (netem and the relay), so the two are measured the same way.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.measure import linkprobe
from testbed.util import wait_until

PROBE = [sys.executable, "-m", "testbed.measure.linkprobe"]
PROBE_PORT = 47_000  # inside the hosts' namespaces: nothing else of cdnlab listens there


@dataclass
class Probe:
    """What one probe run sent and received (the two JSON records of :mod:`linkprobe`)."""

    sent: dict[str, Any]
    got: dict[str, Any]

    @property
    def loss_pct(self) -> float:
        return linkprobe.loss_pct(self.sent, self.got)


def run_probe(src, dst, dst_ip: str, count: int, pps: float, size: int = 1000,
              workdir: Path | None = None, timeout: float = 120.0) -> Probe:
    """Send ``count`` probes of ``size`` bytes at ``pps`` from host ``src`` to ``dst_ip`` (host ``dst``)."""
    wd = Path(workdir or tempfile.mkdtemp(prefix="cdnlab-linkprobe-"))
    wd.mkdir(parents=True, exist_ok=True)
    ready, r_out, s_out = wd / "recv.ready", wd / "recv.json", wd / "send.json"
    for f in (ready, r_out, s_out):
        f.unlink(missing_ok=True)
    rx = dst.popen([*PROBE, "recv", "--port", str(PROBE_PORT), "--out", str(r_out), "--ready", str(ready),
                    "--deadline", str(timeout)])
    try:
        wait_until(lambda: ready.exists() or rx.poll() is not None, 30, what=f"probe receiver on {dst.name}")
        if rx.poll() is not None:
            raise RuntimeError(f"probe receiver on {dst.name} exited: {rx.communicate()[1]!r}")
        tx = src.popen([*PROBE, "send", "--dst", dst_ip, "--port", str(PROBE_PORT), "--count", str(count),
                        "--pps", f"{pps:g}", "--size", str(size), "--out", str(s_out)])
        _, err = tx.communicate(timeout=timeout)
        if tx.returncode != 0:
            raise RuntimeError(f"probe sender on {src.name} failed: {err!r}")
        rx.communicate(timeout=timeout)
        if rx.returncode != 0:
            raise RuntimeError(f"probe receiver on {dst.name} failed (exit {rx.returncode})")
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    return Probe(json.loads(s_out.read_text()), json.loads(r_out.read_text()))


@dataclass
class QueueMeasurement:
    """The bottleneck measured under overload: the queue (packets) and the delivered frame rate."""

    queue_pkts: int
    rate_mbit: float
    offered_pps: float
    sent_pps: float  # what the sender reached (below ``offered_pps`` when this machine is too slow)
    sent: int
    received: int


class CannotOverload(ValueError):
    """The link cannot be overloaded without overflowing its delay line first (a long, fast link)."""


def measure_queue(src, dst, dst_ip: str, bw_mbit: float, one_way_delay_ms: float, queue_pkts: int,
                  size: int = 1000, workdir: Path | None = None, delay_line_pkts: int = 10_000) -> QueueMeasurement:
    """Overload the link (twice its rate) long enough to fill a ``queue_pkts`` queue and then some, and
    count the queue (:func:`linkprobe.queue_pkts`). Pick ``bw_mbit`` so that a frame takes much longer
    than the platform's timing jitter (``size`` 1000 at 0.125 Mbit/s: 67 ms per frame).

    The frames in flight on the delay must stay within the delay line (``delay_line_pkts``, 10000 in both
    link modes), or it drops before the queue does: on a long, fast link the overload is less than
    twice the rate (at least 1.2 times; :class:`CannotOverload` below that)."""
    frame_bits = linkprobe.frame_bytes(size) * 8
    cap_pps = bw_mbit * 1e6 / frame_bits
    factor = 2.0
    if one_way_delay_ms > 0:
        factor = min(factor, 0.9 * delay_line_pkts / (cap_pps * one_way_delay_ms / 1000))
    if factor < 1.2:
        raise CannotOverload(f"{bw_mbit:g} Mbit/s over {one_way_delay_ms:g} ms: overloading it would overflow "
                             f"the {delay_line_pkts}-frame delay line first")
    pps = factor * cap_pps
    burst_pkts = 15000 / linkprobe.frame_bytes(size)  # what HTB lets through at once (links.htb_commands)
    fill_s = (queue_pkts + burst_pkts) / (pps - cap_pps)
    count = int(pps * (fill_s + 1.5)) + 1
    p = run_probe(src, dst, dst_ip, count, pps, size, workdir,
                  timeout=60 + count / cap_pps + one_way_delay_ms / 1000)
    span = max(1e-9, (p.sent["last_ns"] - p.sent["first_ns"]) / 1e9)
    return QueueMeasurement(linkprobe.queue_pkts(p.sent, p.got, one_way_delay_ms),
                            linkprobe.delivered_mbit(p.got, size), pps, (p.sent["sent"] - 1) / span,
                            p.sent["sent"], p.got["received"])


def measure_loss(src, dst, dst_ip: str, count: int = 10_000, pps: float = 2000, size: int = 100,
                 workdir: Path | None = None) -> float:
    """% of ``count`` small datagrams lost one way (10000: ±0.3 points at 10 %, one standard deviation)."""
    return run_probe(src, dst, dst_ip, count, pps, size, workdir).loss_pct

