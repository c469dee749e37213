"""One-way UDP probes of an emulated link: loss, delivered rate and the bottleneck queue, measured.

Run the receiver in one host's namespace and the sender in another's (both are real processes; Mininet's
hosts share the machine's ``CLOCK_MONOTONIC``, so one-way times need no clock sync)::

    python -m testbed.measure.linkprobe recv --port P --out recv.json --ready FILE [--idle 1.5]
    python -m testbed.measure.linkprobe send --dst IP --port P --count N --pps R [--size 1000] --out send.json

Each datagram carries its sequence number and send time. The receiver writes every arrival
(``seq``, ``t_ns``); the pure functions below turn the two JSON files into figures:

* :func:`loss_pct` -- datagrams sent but never received, in % of those sent;
* :func:`delivered_mbit` -- the rate of Ethernet frames leaving the bottleneck while it was overloaded;
* :func:`queue_pkts` -- the bottleneck queue: with the link overloaded (offered at twice its rate) until
  the end, the queue is full when the last datagram reaches it, one one-way delay after it was sent;
  every datagram delivered after that moment was waiting in the queue (the delay line comes before the
  queue in both link modes, as in ``tc``'s netem-then-HTB and in the relay). So the queue is the number
  of arrivals later than ``last send + one-way delay``: counted, not inferred from a timing model. Give
  the probes a rate whose frame time is well above the platform's timing jitter (under QEMU's TCG tens
  of ms) and the count stays exact to one packet.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

HEADER = struct.Struct("!QQ")  # sequence number, send time (CLOCK_MONOTONIC ns)
FRAME_OVERHEAD = 14 + 20 + 8  # Ethernet + IPv4 + UDP header bytes around a datagram's payload


def frame_bytes(payload: int) -> int:
    """Ethernet frame bytes of one probe of ``payload`` bytes (what HTB and the relay count)."""
    return payload + FRAME_OVERHEAD


def send(dst: str, port: int, count: int, pps: float, size: int) -> dict[str, Any]:
    """Send ``count`` datagrams of ``size`` payload bytes at ``pps`` (absolute deadlines, no drift)."""
    if size < HEADER.size:
        raise ValueError(f"--size must be at least {HEADER.size} bytes, not {size}")
    if count < 1 or pps <= 0:
        raise ValueError(f"--count must be >= 1 and --pps > 0, not {count} and {pps}")
    pad = b"\0" * (size - HEADER.size)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect((dst, port))
    gap = int(1e9 / pps)
    t0 = time.monotonic_ns()
    errors = 0
    first = last = t0
    for i in range(count):
        due = t0 + i * gap
        while (now := time.monotonic_ns()) < due:
            if due - now > 2_000_000:
                time.sleep((due - now - 1_000_000) / 1e9)
        last = time.monotonic_ns()
        if i == 0:
            first = last
        try:
            s.send(HEADER.pack(i, last) + pad)
        except OSError:  # ENOBUFS: the sender's own queue, not the link under test
            errors += 1
    s.close()
    return {"sent": count, "send_errors": errors, "size": size, "pps": pps, "first_ns": first, "last_ns": last}


def recv(port: int, idle_s: float, deadline_s: float, ready: Path | None) -> dict[str, Any]:
    """Receive until ``idle_s`` passed without a datagram (after the first), or ``deadline_s`` in all."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", port))
    if ready is not None:
        ready.write_text("ready\n")
    seqs: list[int] = []
    times: list[int] = []
    malformed = 0
    end = time.monotonic() + deadline_s
    s.settimeout(min(idle_s * 4, deadline_s))  # until the first datagram, wait longer
    while time.monotonic() < end:
        try:
            data = s.recv(65535)
        except TimeoutError:
            break
        t = time.monotonic_ns()
        if len(data) < HEADER.size:
            malformed += 1
            continue
        seq, _sent = HEADER.unpack_from(data)
        seqs.append(seq)
        times.append(t)
        s.settimeout(idle_s)
    s.close()
    return {"received": len(seqs), "seqs": seqs, "t_ns": times, "malformed": malformed}


# -- figures from the two records ---------------------------------------------------------------
def loss_pct(sent: dict[str, Any], got: dict[str, Any]) -> float:
    """% of the datagrams sent that never arrived (duplicates counted once)."""
    n = sent["sent"] - sent.get("send_errors", 0)
    if n <= 0:
        raise ValueError("nothing was sent")
    return 100.0 * (n - len(set(got["seqs"]))) / n


def delivered_mbit(got: dict[str, Any], size: int, skip: int = 20) -> float:
    """Mbit/s of Ethernet frames delivered, from the ``skip``-th arrival to the last (the first ones may
    pass in the rate limiter's initial burst)."""
    t = got["t_ns"]
    if len(t) < skip + 2:
        raise ValueError(f"too few arrivals ({len(t)}) to measure a rate")
    span = (t[-1] - t[skip]) / 1e9
    return (len(t) - 1 - skip) * frame_bytes(size) * 8 / span / 1e6


def queue_pkts(sent: dict[str, Any], got: dict[str, Any], one_way_delay_ms: float) -> int:
    """Datagrams delivered after the last one sent reached the queue: the queue's size when full."""
    reached = sent["last_ns"] + one_way_delay_ms * 1e6
    return sum(1 for t in got["t_ns"] if t > reached)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.measure.linkprobe", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv", help="receive probes; write every arrival as JSON")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--ready", type=Path, help="file written once the socket is bound")
    r.add_argument("--idle", type=float, default=1.5, help="stop this long after the last datagram")
    r.add_argument("--deadline", type=float, default=120.0, help="stop after this many seconds in all")
    s = sub.add_parser("send", help="send paced probes; write what was sent as JSON")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--pps", type=float, required=True)
    s.add_argument("--size", type=int, default=1000, help="payload bytes (default 1000)")
    s.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "recv":
            res = recv(a.port, a.idle, a.deadline, a.ready)
        else:
            res = send(a.dst, a.port, a.count, a.pps, a.size)
    except (OSError, ValueError) as e:
        print(f"linkprobe {a.cmd}: {e}", file=sys.stderr)
        return 2
    tmp = a.out.with_suffix(a.out.suffix + ".part")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, a.out)  # the reader never sees half a file
    return 0


if __name__ == "__main__":
    sys.exit(main())
