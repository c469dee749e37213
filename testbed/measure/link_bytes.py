"""Byte counters of an interface, the one reader of them in cdnlab: the kernel's
``/sys/class/net/<intf>/statistics/{rx,tx}_bytes``, of a switch port in the root namespace or of an
interface inside a named network namespace. Reading a counter sends nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

COUNTERS = ("rx_bytes", "tx_bytes")


def read_counter(intf: str, counter: str = "tx_bytes", netns: str | None = None) -> int:
    """One counter (``rx_bytes``, ``tx_bytes`` or any other of ``statistics/``) of ``intf``; in ``netns``
    (a name under /run/netns, read with ``ip netns exec``) when given. Raises ValueError for a counter
    name with a path in it, OSError or CalledProcessError when the interface is gone."""
    if "/" in counter or counter.startswith("."):
        raise ValueError(f"not a counter name: {counter!r}")
    path = Path("/sys/class/net") / intf / "statistics" / counter
    if netns is None:
        return int(path.read_text())
    r = subprocess.run(["ip", "netns", "exec", netns, "cat", str(path)], capture_output=True, text=True,
                       check=True, timeout=10)
    return int(r.stdout)


def rx_tx(intf: str, netns: str | None = None) -> tuple[int, int]:
    """``(rx_bytes, tx_bytes)`` of ``intf``."""
    rx, tx = (read_counter(intf, c, netns) for c in COUNTERS)
    return rx, tx
