"""Packet capture on chosen links, saved as pcap and counted per link and per protocol with Scapy.

:class:`Capture` runs one ``tcpdump -w`` process per interface — inside a Mininet host's network
namespace (``node.popen``) or in the root namespace (switch ports such as ``s1-eth2``) — tracks their PIDs,
stops them cleanly (SIGINT, so the pcap is flushed and closed; SIGKILL only after a grace period) and
reads every pcap back with Scapy's :class:`~scapy.utils.PcapReader`. Bytes are the original on-the-wire
lengths (``wirelen``), so a short snap length keeps files small without undercounting.

Protocols (:func:`classify`): ``dns`` (port 53), ``icp`` (ICPv2, RFC 2186, port 3130), ``mcast`` (cdnlab's
multicast transport), both dissected by the layers of :mod:`testbed.measure.layers`, ``http`` (the
configured HTTP ports, or a payload that starts like HTTP/1.x), then ``arp``, ``icmp``, ``lldp``,
``other-tcp``, ``other-udp``, ``other``.

Usage::

    cap = Capture({"client-s1": (cn.host("c1"), "c1-eth0"), "s1-s2": (None, "s1-eth3")}, out / "pcap")
    cap.start()
    ...  # the experiment
    counts = cap.stop()  # {"client-s1": {"packets": 812, "bytes": 402133, "by_protocol": {...}}, ...}
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from scapy.layers.dns import DNS
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapReader

from testbed.measure.layers import ICP, CDNMcast

DEFAULT_HTTP_PORTS = frozenset({80, 8080, 8000})
_HTTP_START = re.compile(
    rb"^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PURGE|PATCH) \S+ HTTP/1\.[01]|^HTTP/1\.[01] \d{3}"
)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class PopenNode(Protocol):
    """What a Mininet host offers: ``popen(cmd, **kw)`` running ``cmd`` in its network namespace."""

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen: ...


class CaptureError(RuntimeError):
    pass


def classify(pkt: Packet, http_ports: Iterable[int] = DEFAULT_HTTP_PORTS) -> str:
    """The protocol a captured packet belongs to (see the module docstring)."""
    ports = set(http_ports)
    if ARP in pkt:
        return "arp"
    if Ether in pkt and pkt[Ether].type == 0x88CC:
        return "lldp"
    if ICMP in pkt:
        return "icmp"
    if UDP in pkt:
        u = pkt[UDP]
        if CDNMcast in pkt:
            return "mcast"
        if ICP in pkt:
            return "icp"
        if DNS in pkt or 53 in (u.sport, u.dport):
            return "dns"
        return "other-udp"
    if TCP in pkt:
        t = pkt[TCP]
        if 53 in (t.sport, t.dport):
            return "dns"
        if t.sport in ports or t.dport in ports:
            return "http"
        if Raw in pkt and _HTTP_START.match(bytes(pkt[Raw].load)):
            return "http"
        return "other-tcp"
    if IP in pkt:
        return "other"
    return "other"


def count_pcap(path: str | Path, http_ports: Iterable[int] = DEFAULT_HTTP_PORTS) -> dict[str, Any]:
    """Packets and bytes (on-the-wire length) in a pcap, in total and per protocol.

    A missing or empty file counts as nothing; a file truncated mid-record (a capture killed hard) counts
    what was complete.
    """
    p = Path(path)
    total = Counter()
    by_proto: dict[str, Counter[str]] = {}
    if not p.exists() or p.stat().st_size < 24:  # the pcap global header is 24 bytes
        return {"packets": 0, "bytes": 0, "by_protocol": {}}
    ports = frozenset(http_ports)
    with PcapReader(str(p)) as reader:
        for pkt in reader:
            n = int(getattr(pkt, "wirelen", None) or len(pkt))
            proto = classify(pkt, ports)
            total["packets"] += 1
            total["bytes"] += n
            c = by_proto.setdefault(proto, Counter())
            c["packets"] += 1
            c["bytes"] += n
    return {
        "packets": total["packets"],
        "bytes": total["bytes"],
        "by_protocol": {k: dict(v) for k, v in sorted(by_proto.items())},
    }


class Capture:
    """tcpdump on several interfaces at once; ``interfaces`` maps a link name to (node or None, ifname).

    ``node`` None runs tcpdump in the root namespace (switch ports); otherwise ``node.popen`` runs it in
    that host's namespace. ``bpf`` is an optional capture filter, ``snaplen`` the bytes kept per packet.
    """

    def __init__(
        self,
        interfaces: Mapping[str, tuple[PopenNode | None, str]],
        out_dir: str | Path,
        *,
        snaplen: int = 512,
        bpf: str | None = None,
        http_ports: Iterable[int] = DEFAULT_HTTP_PORTS,
        tcpdump: str = "tcpdump",
    ) -> None:
        if not interfaces:
            raise ValueError("Capture needs at least one interface")
        self.interfaces = dict(interfaces)
        self.out_dir = Path(out_dir)
        self.snaplen = snaplen
        self.bpf = bpf
        self.http_ports = frozenset(http_ports)
        self.tcpdump = tcpdump
        self.procs: dict[str, subprocess.Popen] = {}
        self.pids: dict[str, int] = {}
        self.files: dict[str, Path] = {}
        self.counts: dict[str, dict[str, Any]] = {}

    def pcap(self, link: str) -> Path:
        return self.out_dir / f"{_SAFE.sub('_', link)}.pcap"

    def command(self, ifname: str, path: Path) -> list[str]:
        cmd = [
            self.tcpdump,
            "-i",
            ifname,
            "-w",
            str(path),
            "-U",
            "--immediate-mode",
            "-n",
            "-s",
            str(self.snaplen),
        ]
        if os.geteuid() == 0:
            cmd += ["-Z", "root"]  # keep write access to out_dir (tcpdump may drop to its own user)
        if self.bpf:
            cmd.append(self.bpf)
        return cmd

    def start(self, timeout: float = 10.0) -> None:
        """Start every tcpdump and wait until each one is listening (or raise and stop the rest)."""
        if self.procs:
            raise CaptureError("capture already running")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            for link, (node, ifname) in self.interfaces.items():
                path = self.pcap(link)
                path.unlink(missing_ok=True)
                err = path.with_suffix(".log")
                with err.open("w") as ef:
                    cmd = self.command(ifname, path)
                    if node is None:
                        proc = subprocess.Popen(
                            cmd, stdout=subprocess.DEVNULL, stderr=ef, start_new_session=True
                        )
                    else:
                        proc = node.popen(cmd, stdout=subprocess.DEVNULL, stderr=ef)
                self.procs[link], self.pids[link], self.files[link] = proc, proc.pid, path
            deadline = time.monotonic() + timeout
            for link, proc in self.procs.items():
                log = self.pcap(link).with_suffix(".log")
                while "listening on" not in log.read_text():
                    if proc.poll() is not None:
                        raise CaptureError(
                            f"tcpdump for {link} exited {proc.returncode}: {log.read_text().strip()[-300:]}"
                        )
                    if time.monotonic() > deadline:
                        raise CaptureError(f"tcpdump on {link} not listening within {timeout:.0f}s")
                    time.sleep(0.02)
        except BaseException:
            self._terminate()
            raise

    def settle(self, quiet_s: float = 0.15, timeout: float = 3.0) -> None:
        """Wait (bounded) until no pcap has grown for ``quiet_s``: packets already on the wire are written."""
        deadline = time.monotonic() + timeout
        last = None
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            sizes = [p.stat().st_size if p.exists() else 0 for p in self.files.values()]
            if sizes != last:
                last, quiet_since = sizes, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(0.02)

    def _terminate(self, grace: float = 5.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # tcpdump flushes and closes the file
        for proc in self.procs.values():
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def stop(self) -> dict[str, dict[str, Any]]:
        """Stop every tcpdump this capture started, then count each pcap: link -> {packets, bytes, by_protocol}."""
        if any(p.poll() is None for p in self.procs.values()):
            self.settle()
        self._terminate()
        self.counts = {link: count_pcap(path, self.http_ports) for link, path in self.files.items()}
        return self.counts

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.procs:
            self.stop()


def totals(counts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per-protocol packets and bytes summed over links."""
    out: dict[str, Counter[str]] = {}
    for c in counts.values():
        for proto, v in c.get("by_protocol", {}).items():
            out.setdefault(proto, Counter()).update(v)
    return {k: dict(v) for k, v in sorted(out.items())}
