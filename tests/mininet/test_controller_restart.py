"""Controller restart with traffic flowing (needs root): SIGKILL the controller, start a new one.

The switches are in ``fail_mode=secure``: OVS keeps the installed flows while no controller is connected,
so forwarding goes on. The new controller installs its rules under a new cookie generation (overwriting
the identical ones in place), then deletes what is left of the old generation: no flush window. The test
holds a TCP connection open across the restart, sends a UDP datagram every 10 ms between two hosts and
prints the largest gap in delivery; it asserts the gap stays under a generous bound (behaviour, not speed).

Network: the triangle of controller/examples.py renamed ``hr1..3`` / ``hrh1..5`` (explicit dpids).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from minibuild import Lab, dump_flows, dump_group_ids, ovs_connected

from controller.examples import renamed, triangle
from controller.flows import COOKIE_NS, COOKIE_NS_MASK, cookie_generation
from testbed.util import free_port, wait_until

pytestmark = pytest.mark.mininet
DPID_BASE = 0x4852_0000
PERIOD_S = 0.01
GAP_BOUND_S = 1.0

UDP_SENDER = r"""
import socket, sys, time
dst, port, period, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
for i in range(n):
    try:
        s.sendto(str(i).encode(), (dst, port))
    except OSError:
        pass  # e.g. no ARP answer yet: keep the schedule
    time.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
"""

UDP_RECEIVER = r"""
import socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
with open(out, "a", buffering=1) as f:
    while True:
        data = s.recv(64)
        f.write(f"{data.decode()} {time.monotonic():.6f}\n")
"""

ECHO_SERVER = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(1)
c, _ = srv.accept()
while True:
    d = c.recv(1024)
    if not d:
        break
    c.sendall(d)
"""

# one TCP connection for the whole test: each stdin line is sent and its echo printed (or the error)
ECHO_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
for line in sys.stdin:
    try:
        c.sendall(line.encode())
        got = b""
        while not got.endswith(b"\n"):
            d = c.recv(1024)
            if not d:
                raise ConnectionError("closed")
            got += d
        print("echo", got.decode().strip(), flush=True)
    except OSError as e:
        print("error", type(e).__name__, flush=True)
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, emulation) -> Iterator[Lab]:
    lab = Lab(renamed(triangle(), "hr", DPID_BASE), tmp_path_factory.mktemp("restart"), "hr", "--no-lldp",
              datapath=emulation.datapath)
    try:
        yield lab.start()
    finally:
        lab.close()


def _received(path: Path) -> list[tuple[int, float]]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), float(parts[1])))
    return out


def _normalised(bridge: str) -> list[str]:
    """Flows without cookies and with group ids blanked: the forwarding state, whoever installed it."""
    return sorted(
        re.sub(r"group:\d+", "group:G", re.sub(r"cookie=0x[0-9a-f]+,? ?", "", ln))
        for ln in dump_flows(bridge)
    )


def _our_cookies(bridge: str) -> set[int]:
    cookies = {int(m, 16) for ln in dump_flows(bridge) for m in re.findall(r"cookie=(0x[0-9a-f]+)", ln)}
    return {c for c in cookies if c & COOKIE_NS_MASK == COOKIE_NS}


def test_restart_keeps_forwarding_and_resyncs(lab: Lab) -> None:
    bridges = [s.name for s in lab.view.switches]
    rx = lab.tmp / "udp.txt"
    rx.write_text("")
    port, tcp_port = free_port(), free_port()
    h1, h3 = lab.net.get("hrh1"), lab.net.get("hrh3")
    lab.popen("hrh3", [sys.executable, "-c", UDP_RECEIVER, str(port), str(rx)])
    lab.popen("hrh3", [sys.executable, "-c", ECHO_SERVER, str(tcp_port)])
    wait_until(lambda: f":{tcp_port}" in h3.cmd("ss -ltn"), 5, what="echo server listening")
    client = lab.popen(
        "hrh1",
        [sys.executable, "-c", ECHO_CLIENT, h3.IP(), str(tcp_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def echo(word: str) -> str:
        client.stdin.write(word + "\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    assert echo("before") == "echo before"
    n = int(60 / PERIOD_S)  # bounded: 60 s at most, killed at the end of the test
    lab.popen("hrh1", [sys.executable, "-c", UDP_SENDER, h3.IP(), str(port), str(PERIOD_S), str(n)])
    wait_until(lambda: len(_received(rx)) >= 50, 10, what="UDP datagrams flowing")
    tables_before = {b: _normalised(b) for b in bridges}
    cookies_before = set().union(*(_our_cookies(b) for b in bridges))
    groups_before = {b: dump_group_ids(b) for b in bridges}

    # --- the controller dies without any cleanup
    t_kill = time.monotonic()
    lab.ctl.kill()
    wait_until(
        lambda: not any(ovs_connected(b) for b in bridges), 10, what="switches see the controller gone"
    )
    wait_until(
        lambda: len([1 for _, t in _received(rx) if t > time.monotonic() - 0.3]) >= 20,
        5,
        what="datagrams delivered while the controller is down",
    )
    assert echo("during") == "echo during"
    # (a host already in the ARP cache: ARP requests are answered by the controller, which is gone)
    assert " 0% packet loss" in h1.cmd(f"ping -c1 -W1 {h3.IP()}")
    assert {b: _normalised(b) for b in bridges} == tables_before  # fail_mode=secure: nothing flushed
    t_down = time.monotonic() - t_kill
    # leftovers the new controller must clean: a rule of an older generation and a group outside its
    # range; a rule outside our cookie namespace must stay
    stale, foreign = COOKIE_NS | 0x77 << 24, 0x1234
    ofctl = ["ovs-ofctl", "-O", "OpenFlow13"]
    for cookie, ip in ((stale, "10.9.9.9"), (foreign, "10.9.9.8")):
        subprocess.run(
            [*ofctl, "add-flow", "hr1", f"cookie={cookie:#x},table=0,priority=1,ip,nw_dst={ip},actions=drop"],
            check=True,
        )
    subprocess.run([*ofctl, "add-group", "hr1", "group_id=5,type=all,bucket=output:1"], check=True)

    # --- a new controller with the same view
    lab.ctl.start()
    wait_until(lab.all_synced, 20, what="new controller connected and resynced")
    t_back = time.monotonic()
    wait_until(lambda: any(t > t_back + 0.3 for _, t in _received(rx)), 5, what="datagrams after resync")
    assert echo("after") == "echo after"

    rec = [(s, t) for s, t in _received(rx) if t >= t_kill - 0.5]
    gaps = [b[1] - a[1] for a, b in zip(rec, rec[1:], strict=False)]
    seqs = [s for s, _ in rec]
    lost = (max(seqs) - min(seqs) + 1) - len(set(seqs))
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    print(
        f"\nrestart: controller down {t_down * 1000:.0f} ms before restart, back and resynced "
        f"{(t_back - t_kill) * 1000:.0f} ms after the kill; UDP every {PERIOD_S * 1000:.0f} ms: "
        f"largest delivery gap {max(gaps) * 1000:.1f} ms (starting {(rec[worst][1] - t_kill) * 1000:.0f} ms "
        f"after the kill), {lost} of {len(set(seqs)) + lost} datagrams lost"
    )
    assert max(gaps) < GAP_BOUND_S

    assert not [ln for ln in dump_flows("hr1") if f"cookie={stale:#x}" in ln]
    assert [ln for ln in dump_flows("hr1") if f"cookie={foreign:#x}" in ln]
    assert 5 not in dump_group_ids("hr1")
    subprocess.run([*ofctl, "del-flows", "hr1", f"cookie={foreign:#x}/-1"], check=True)
    # same forwarding state, now under the new generation only; the old generation's groups are gone
    assert {b: _normalised(b) for b in bridges} == tables_before
    cookies_after = set().union(*(_our_cookies(b) for b in bridges))
    assert cookies_after and not cookies_after & cookies_before
    for b in bridges:
        gens = {cookie_generation(c) for c in _our_cookies(b)}
        assert len(gens) == 1, (b, gens)
        assert len(dump_group_ids(b)) == len(groups_before[b])
        assert not set(dump_group_ids(b)) & set(groups_before[b])
