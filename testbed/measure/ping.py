"""Round-trip times with iputils ``ping``, run inside a host (any object with Mininet's ``cmd``): the one
parser of ping's output in cdnlab.

Two ways, by the precision needed:

* :func:`rtts` -- one ``ping -c N``, its per-packet ``time=`` values. ping prints those with three
  significant digits ("time=102 ms"), enough to see a path's shape or that something answers.
* :func:`precise_rtts` -- N runs of ``ping -c 1``, the summary line of each (``rtt min/avg/max/mdev =
  10.101/...``), which has microseconds: for checking a link's delay to a fraction of a millisecond.
"""

from __future__ import annotations

import re
import statistics

_PACKET = re.compile(r"\btime=([0-9.]+) ms")
_SUMMARY = re.compile(r"= ([0-9.]+)/[0-9.]+/[0-9.]+/[0-9.]+ ms")


def parse_packet_rtts(out: str) -> list[float]:
    """The per-packet RTTs (ms) in ping's output, in order."""
    return [float(x) for x in _PACKET.findall(out)]


def parse_summary_rtts(out: str) -> list[float]:
    """The minimum RTT (ms) of every ``rtt min/avg/max/mdev`` summary line in the output, in order."""
    return [float(x) for x in _SUMMARY.findall(out)]


def rtts(node, ip: str, count: int = 5, interval: float = 0.05, wait_s: int = 2) -> list[float]:
    """RTTs of ``count`` pings from ``node`` to ``ip`` (ms, three significant digits; lost ones missing)."""
    return parse_packet_rtts(node.cmd(f"ping -n -c {count} -i {interval} -W {wait_s} {ip}"))


def precise_rtts(node, ip: str, count: int = 20, interval: float = 0.05, warmup: int = 3) -> list[float]:
    """RTTs of ``count`` single pings (microsecond precision), after ``warmup`` pings for ARP and
    switch learning."""
    if warmup:
        node.cmd(f"ping -n -q -c {warmup} -i 0.05 -W 2 {ip} >/dev/null")
    out = node.cmd(f"for i in $(seq {count}); do ping -n -q -c 1 -W 2 {ip} | tail -n 1; sleep {interval}; done")
    return parse_summary_rtts(out)


def median(values: list[float]) -> float | None:
    """The median, or None when nothing answered."""
    return statistics.median(values) if values else None
