"""Packet capture: per-link/per-protocol counting of pcaps (written with Scapy), and a live tcpdump
capture on the loopback of a network namespace created (and removed) here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from testbed.measure.capture import Capture, CaptureError, classify, count_pcap, totals
from testbed.measure.layers import ICP, CDNMcast, McastHeartbeat
from testbed.services.icp import IcpMessage, Op


def _ip(src="10.0.0.1", dst="10.0.0.2"):
    return Ether() / IP(src=src, dst=dst)


def sample_packets():
    return {
        "http": [
            _ip() / TCP(sport=40000, dport=80) / Raw(b"GET /img/x.jpg HTTP/1.1\r\n\r\n"),
            _ip("10.0.0.2", "10.0.0.1")
            / TCP(sport=80, dport=40000)
            / Raw(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 900),
            _ip() / TCP(sport=40001, dport=5555) / Raw(b"HTTP/1.1 304 Not Modified\r\n\r\n"),
        ],  # by content
        "dns": [_ip() / UDP(sport=33333, dport=53) / DNS(rd=1, qd=DNSQR(qname="a73.g.cdnlab.net"))],
        "icp": [_ip() / UDP(sport=3130, dport=3130) / ICP(opcode=1, reqnum=7, url=b"http://o/x")] * 2,
        "mcast": [_ip(dst="239.1.1.1") / UDP(sport=40000, dport=7401) / CDNMcast(type=7) / McastHeartbeat()],
        "arp": [Ether() / ARP()],
        "other-udp": [_ip() / UDP(sport=1, dport=9999) / Raw(b"zz")],
        "other-tcp": [_ip() / TCP(sport=2, dport=22) / Raw(b"SSH-2.0-x")],
    }


def test_classify_each_protocol():
    for proto, pkts in sample_packets().items():
        for p in pkts:
            assert classify(Ether(bytes(p))) == proto, (proto, p.summary())
    assert classify(Ether(bytes(_ip() / TCP(sport=40000, dport=8081))), http_ports={8081}) == "http"


def test_count_pcap_per_protocol_and_wire_length(tmp_path):
    groups = sample_packets()
    pkts = [p for ps in groups.values() for p in ps]
    big = _ip() / TCP(sport=80, dport=40000) / Raw(b"y" * 100)
    big.wirelen = 1514  # captured with a short snap length: the wire length counts
    path = tmp_path / "link.pcap"
    wrpcap(str(path), [*pkts, big])
    c = count_pcap(path)
    assert c["packets"] == len(pkts) + 1
    assert c["bytes"] == sum(len(p) for p in pkts) + 1514
    for proto, ps in groups.items():
        extra = 1 if proto == "http" else 0
        assert c["by_protocol"][proto]["packets"] == len(ps) + extra
    assert c["by_protocol"]["icp"]["bytes"] == sum(len(p) for p in groups["icp"])
    assert sum(v["bytes"] for v in c["by_protocol"].values()) == c["bytes"]
    assert totals({"a": c, "b": c})["icp"]["packets"] == 4


def test_missing_empty_and_truncated_pcaps(tmp_path):
    assert count_pcap(tmp_path / "none.pcap") == {"packets": 0, "bytes": 0, "by_protocol": {}}
    path = tmp_path / "t.pcap"
    pkt = _ip() / UDP(dport=53) / DNS()
    wrpcap(str(path), [pkt] * 3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(pkt) - 8])  # the last record's header cut short (killed hard)
    assert count_pcap(path)["packets"] == 2
    (tmp_path / "e.pcap").write_bytes(b"")
    assert count_pcap(tmp_path / "e.pcap")["packets"] == 0


def test_capture_needs_interfaces(tmp_path):
    with pytest.raises(ValueError):
        Capture({}, tmp_path)


class NetnsNode:
    """A stand-in for a Mininet host: ``popen`` runs the command inside network namespace ``ns``."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def popen(self, cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], **kw)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not shutil.which("tcpdump") or not shutil.which("ip"):
        pytest.skip("needs root, ip and tcpdump to capture in a network namespace")
    ns = f"cdnh7-cap-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield NetnsNode(ns)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_live_capture_in_a_namespace(netns, tmp_path):
    icp = IcpMessage(Op.QUERY, 1, "http://o/x").encode()
    sender = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range(3): s.sendto({icp!r}, ('127.0.0.1', 3130))\n"
        "for _ in range(2): s.sendto(b'hello', ('127.0.0.1', 9999))\n"
    )
    cap = Capture({"ns-lo": (netns, "lo")}, tmp_path / "pcap", bpf="udp")
    cap.start()
    try:
        assert cap.pids["ns-lo"] > 0
        netns.popen([sys.executable, "-c", sender]).wait(30)
    finally:
        counts = cap.stop()
    assert cap.procs == {}  # every tcpdump we started has exited
    c = counts["ns-lo"]
    assert c["by_protocol"]["icp"]["packets"] == 3
    assert c["by_protocol"]["other-udp"]["packets"] == 2
    assert c["by_protocol"]["icp"]["bytes"] == 3 * (14 + 20 + 8 + len(icp))
    assert (tmp_path / "pcap" / "ns-lo.pcap").exists()


def test_bad_interface_is_a_clear_error(netns, tmp_path):
    cap = Capture({"nope": (netns, "no-such-if0")}, tmp_path)
    with pytest.raises(CaptureError, match="nope"):
        cap.start()
    assert cap.procs == {}
