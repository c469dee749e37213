"""Multicast tree repair after a link failure, on real userspace OVS switches (needs root).

The triangle of controller/examples.py renamed ``hr11..13`` / ``hrh11..15`` (explicit dpids). hrh11 (on
hr11) sends a numbered UDP datagram every 10 ms to 239.7.7.7; hrh12 and hrh13 joined with
IP_ADD_MEMBERSHIP (their kernels send the IGMP reports), hrh14 (the sender's switch) and hrh15 (a member's
switch) did not. The shortest-path tree is hr11 -> hr12 -> hr13; the link hr11-hr12 goes down (the tree is
rebuilt as hr11 -> hr13 -> hr12) and comes back. Members must keep receiving, each datagram at most once;
non-members must receive nothing.
"""

from __future__ import annotations

import socket
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from minibuild import Lab

from controller.examples import renamed, triangle
from testbed.util import free_port, wait_until

pytestmark = pytest.mark.mininet
DPID_BASE = 0x4852_0100
GROUP = "239.7.7.7"
MEMBERS, NON_MEMBERS, SENDER_HOST = ("hrh12", "hrh13"), ("hrh14", "hrh15"), "hrh11"

RECEIVER = r"""
import socket, struct, sys, time
group, port, me, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(me))
with open(out, "a", buffering=1) as f:
    while True:
        f.write(f"{s.recv(64).decode()} {time.monotonic():.6f}\n")
"""

SENDER = r"""
import socket, sys, time
group, port, me, period, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(me))
t0 = time.monotonic()
for i in range(n):
    s.sendto(str(i).encode(), (group, port))
    time.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, emulation) -> Iterator[Lab]:
    lab = Lab(renamed(triangle(), "hr", DPID_BASE, number_offset=10), tmp_path_factory.mktemp("mcast-repair"),
              "hr", "--no-lldp", datapath=emulation.datapath)
    try:
        yield lab.start()
    finally:
        lab.close()


def _seqs(path: Path) -> list[int]:
    return [int(ln.split()[0]) for ln in path.read_text().splitlines() if ln.strip()]


def _largest_gap_ms(path: Path) -> float:
    ts = [float(ln.split()[1]) for ln in path.read_text().splitlines() if ln.strip()]
    return max((b - a for a, b in zip(ts, ts[1:], strict=False)), default=0.0) * 1000


def test_tree_repair_after_link_failure(lab: Lab) -> None:
    port = free_port(socket.SOCK_DGRAM)
    outs = {h: lab.tmp / f"{h}.txt" for h in MEMBERS + NON_MEMBERS}
    for p in outs.values():
        p.write_text("")
    for h in MEMBERS:
        lab.popen(h, [sys.executable, "-c", RECEIVER, GROUP, str(port), lab.net.get(h).IP(), str(outs[h])])
    errs = {}
    for h in NON_MEMBERS:
        errs[h] = lab.tmp / f"{h}.tcpdump.err"
        lab.popen(
            h,
            ["tcpdump", "-l", "-n", "-i", f"{h}-eth0", "udp", "and", "dst", GROUP],
            stdout=open(outs[h], "w"),  # noqa: SIM115 - closed with the process
            stderr=open(errs[h], "w"),  # noqa: SIM115
        )
    wait_until(lambda: all("listening on" in errs[h].read_text() for h in NON_MEMBERS), 10, what="tcpdump")

    def tree() -> dict:
        return next(
            (
                t
                for t in lab.ctl.rest("/multicast")["trees"]
                if t["group"] == GROUP and t["source"] == SENDER_HOST
            ),
            {},
        )

    wait_until(lambda: tree().get("members") == sorted(MEMBERS), 10, what="IGMP joins seen, tree built")
    v = lab.view
    to12 = next(lk.a_port for lk in v.links if (lk.a, lk.b) == ("hr11", "hr12"))
    to13 = next(lk.b_port for lk in v.links if (lk.a, lk.b) == ("hr13", "hr11"))
    assert tree()["switches"]["hr11"]["out_ports"] == [to12]  # hr11 -> hr12 -> hr13

    s = lab.net.get(SENDER_HOST)
    period, n = 0.01, 3000  # bounded: 30 s at most
    sender = lab.popen(
        SENDER_HOST, [sys.executable, "-c", SENDER, GROUP, str(port), s.IP(), str(period), str(n)]
    )

    def all_past(seq: int) -> bool:
        return all(any(x > seq for x in _seqs(outs[h])) for h in MEMBERS)

    wait_until(lambda: all_past(30), 10, what="members receiving")
    marks = {}
    try:
        lab.net.configLinkStatus("hr11", "hr12", "down")
        wait_until(lambda: tree()["switches"]["hr11"]["out_ports"] == [to13], 5, what="tree repaired")
        marks["down"] = max(max(_seqs(outs[h])) for h in MEMBERS)
        wait_until(lambda: all_past(marks["down"] + 50), 10, what="members receive over the repaired tree")
    finally:
        lab.net.configLinkStatus("hr11", "hr12", "up")
    wait_until(lambda: tree()["switches"]["hr11"]["out_ports"] == [to12], 5, what="tree back on hr11-hr12")
    marks["up"] = max(max(_seqs(outs[h])) for h in MEMBERS)
    wait_until(lambda: all_past(marks["up"] + 50), 10, what="members receive over the restored tree")
    sender.kill()
    sender.wait()

    for h in MEMBERS:
        seqs = _seqs(outs[h])
        dups = {k: c for k, c in Counter(seqs).items() if c > 1}
        lost = set(range(min(seqs), max(seqs) + 1)) - set(seqs)
        print(
            f"\n{h}: {len(seqs)} datagrams, {len(lost)} lost across link down and up, {len(dups)} duplicated, "
            f"largest delivery gap {_largest_gap_ms(outs[h]):.1f} ms"
        )
        assert dups == {}, f"{h} received duplicates {sorted(dups)[:10]}"
    for h in NON_MEMBERS:
        assert outs[h].read_text().count(GROUP) == 0, f"non-member {h} received group traffic"
