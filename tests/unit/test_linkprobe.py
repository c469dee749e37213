"""The link probe on loopback (real sender and receiver processes) and its figures from synthetic records."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from testbed.measure import linkprobe
from testbed.util import free_port, wait_until

PROBE = [sys.executable, "-m", "testbed.measure.linkprobe"]


def test_sender_and_receiver_processes_count_every_datagram_on_loopback(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    ready, r_out, s_out = tmp_path / "ready", tmp_path / "r.json", tmp_path / "s.json"
    rx = subprocess.Popen([*PROBE, "recv", "--port", str(port), "--out", str(r_out), "--ready", str(ready),
                           "--idle", "0.5"])
    try:
        wait_until(ready.exists, 10, what="receiver bound")
        subprocess.run([*PROBE, "send", "--dst", "127.0.0.1", "--port", str(port), "--count", "300",
                        "--pps", "3000", "--size", "200", "--out", str(s_out)], check=True, timeout=30)
        assert rx.wait(15) == 0
    finally:
        if rx.poll() is None:
            rx.kill()
    sent, got = json.loads(s_out.read_text()), json.loads(r_out.read_text())
    assert sent["sent"] == 300 and sent["send_errors"] == 0
    assert got["received"] == 300 and sorted(got["seqs"]) == list(range(300))
    assert linkprobe.loss_pct(sent, got) == 0.0
    assert 0.09 <= (sent["last_ns"] - sent["first_ns"]) / 1e9 <= 1.0  # paced: 299 gaps of 1/3000 s


def test_a_bad_request_is_refused_with_the_reason(tmp_path):
    r = subprocess.run([*PROBE, "send", "--dst", "127.0.0.1", "--port", "9", "--count", "1", "--pps", "10",
                        "--size", "4", "--out", str(tmp_path / "s.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "--size must be at least 16" in r.stderr
    assert not (tmp_path / "s.json").exists()


def test_loss_counts_missing_sequence_numbers_once():
    sent = {"sent": 100, "send_errors": 0}
    got = {"seqs": [*range(90), 5, 6], "t_ns": []}  # 10 lost, two duplicates
    assert linkprobe.loss_pct(sent, got) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="nothing was sent"):
        linkprobe.loss_pct({"sent": 0}, got)


def test_queue_is_what_arrived_after_the_last_probe_reached_it():
    """Frames every 10 ms; the last probe was sent at 1.0 s and reaches the queue 0.02 s later: the 7
    frames delivered after 1.02 s were waiting in the queue."""
    t = [int((0.5 + 0.01 * i) * 1e9) for i in range(60)]  # 0.50 .. 1.09 s
    sent = {"sent": 100, "last_ns": int(1.0e9)}
    assert linkprobe.queue_pkts(sent, {"t_ns": t, "seqs": []}, 20.0) == sum(1 for x in t if x > 1.02e9) == 7


def test_delivered_rate_counts_frames_not_payload():
    size = 1000
    gap = linkprobe.frame_bytes(size) * 8 / 1e6  # one frame at 1 Mbit/s, in seconds
    t = [int(i * gap * 1e9) for i in range(100)]
    assert linkprobe.delivered_mbit({"t_ns": t}, size) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="too few"):
        linkprobe.delivered_mbit({"t_ns": t[:10]}, size)
