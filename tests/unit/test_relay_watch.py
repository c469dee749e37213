"""Seeing the relays of running networks from outside (``cdnlab doctor``): counter lines summed, and a
relay signalled only once it can take the signal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from testbed.net import relay_watch
from testbed.net.relay import COUNTERS_PREFIX
from testbed.util import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _line(link: int, tx: int, late: int = 0, qdrop: int = 0) -> str:
    d = {"tx": tx, "late_frames": late, "queue_drop": qdrop, "tx_error": 1, "socket_drops": 0, "lost": 2}
    return COUNTERS_PREFIX + json.dumps({"link": link, "a_to_b": d, "b_to_a": d, "final": False})


def test_counter_lines_of_every_link_are_summed_and_other_lines_ignored():
    lines = ["relay: SCHED_FIFO not available", _line(1, 100, late=1), _line(2, 50, qdrop=3), "garbage {"]
    t = relay_watch.totals([*lines, COUNTERS_PREFIX + "{not json"])
    assert t == {"links": 2, "tx": 300, "late_frames": 2, "queue_drop": 6, "tx_error": 4, "socket_drops": 0,
                 "lost": 8}
    assert relay_watch.keeping_up({**t, "tx": 300, "late_frames": 2})  # 0.7 %
    assert not relay_watch.keeping_up({**t, "late_frames": 5})  # 1.7 %
    assert not relay_watch.keeping_up({**t, "socket_drops": 1})
    assert "2 links, 300 frames sent, 2 late, 6 queue drops, 4 send errors" in relay_watch.describe(
        {"run_id": "mini-1", "procs": 1, "realtime": 0, **t})


def test_a_relay_is_signalled_only_once_it_catches_sigusr1(tmp_path):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log = (tmp_path / "relay.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.net.relay", "--control-fd", "0", "--rt-priority", "0"],
        stdin=theirs.fileno(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    theirs.close()
    try:
        assert relay_watch.catches_sigusr1(os.getpid()) is False  # pytest does not catch it
        wait_until(lambda: relay_watch.catches_sigusr1(proc.pid), 10, what="the relay's SIGUSR1 handler")
        assert relay_watch.relay_counters(proc.pid, timeout_s=0.5) == []  # no links: nothing logged
        assert proc.poll() is None  # and the signal did not kill it
        assert relay_watch.realtime(proc.pid) is False
    finally:
        ours.close()  # the relay exits when its control socket closes
        proc.wait(10)
        log.close()


def test_doctor_reads_netem_counters_of_a_running_network_on_both_link_ends(monkeypatch):
    """``netem_watch``: switch ports of the run's bridges (root namespace) and the hosts' namespaces."""
    from testbed.net import netem_watch
    from testbed.net.state import RunState, TrackedPid, proc_start_time

    me = os.getpid()
    st = RunState(run_id="mini-7", owner_pid=me, created=0.0, owner_start=proc_start_time(me), bridges=["s1"])
    st.pids = [TrackedPid(me, proc_start_time(me), "host c1"), TrackedPid(me, proc_start_time(me), "relay")]
    qdisc = ("qdisc netem 10: root refcnt 2 limit 10000 delay 5ms\n Sent 1200 bytes 12 pkt (dropped 1, overlimits 0)\n"
             "qdisc pfifo 20: parent 10:1 limit 100p\n Sent 1200 bytes 12 pkt (dropped 2, overlimits 0)\n")
    calls: list[list[str]] = []

    def fake_run(cmd: list[str]) -> str:
        calls.append(cmd)
        if cmd[:2] == ["ovs-vsctl", "--timeout=5"]:
            return "s1-eth1\ns1-eth2\n"
        return qdisc

    monkeypatch.setattr(netem_watch, "_run", fake_run)
    monkeypatch.setattr(netem_watch, "all_states", lambda: [st])
    monkeypatch.setattr(netem_watch, "owner_alive", lambda s: True)
    [r] = netem_watch.running_netem()
    assert r == {"run_id": "mini-7", "directions": 3, "frames": 36, "dropped": 3, "queue_drops": 6}
    assert ["nsenter", "-t", str(me), "-n", "tc", "-s", "qdisc", "show"] in calls  # the host's namespace
    assert not any("relay" in " ".join(c) for c in calls)
    assert "3 netem link directions, 36 frames" in netem_watch.describe(r)
