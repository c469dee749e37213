"""Deadlines of :func:`testbed.util.wait_until`, their scale for slow machines (``CDNLAB_TIMEOUT_SCALE``), and ports from :func:`testbed.util.free_port`."""

from __future__ import annotations

import time

import pytest

from testbed.util import DeadlineExceeded, timeout_scale, wait_until


def test_a_deadline_is_stretched_by_the_scale_and_named_in_the_error(monkeypatch):
    monkeypatch.setenv("CDNLAB_TIMEOUT_SCALE", "3")
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"thing not reached within 0\.3s"):
        wait_until(lambda: False, 0.1, what="thing")
    assert 0.28 <= time.monotonic() - t0 < 2


def test_without_the_variable_deadlines_are_as_written(monkeypatch):
    monkeypatch.delenv("CDNLAB_TIMEOUT_SCALE", raising=False)
    assert timeout_scale() == 1.0
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        wait_until(lambda: False, 0.1)
    assert time.monotonic() - t0 < 0.3


@pytest.mark.parametrize("bad", ["fast", "0.5", "0", "1000"])
def test_a_bad_scale_is_refused_naming_the_variable(monkeypatch, bad):
    monkeypatch.setenv("CDNLAB_TIMEOUT_SCALE", bad)
    with pytest.raises(ValueError, match="CDNLAB_TIMEOUT_SCALE must be a number within 1..100"):
        wait_until(lambda: True, 1)


def test_free_ports_are_below_the_ephemeral_range_and_bindable():
    """Outgoing connections take their source ports from the ephemeral range: a port chosen below it
    cannot be taken by one between free_port() and the server's bind."""
    import socket

    from testbed.util import ephemeral_range, free_port

    lo, _ = ephemeral_range()
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        ports = {free_port(kind) for _ in range(20)}
        assert len(ports) > 15  # random, not one port handed to everyone
        for port in ports:
            assert 10000 <= port < lo
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))


def test_stop_waiting_ends_the_wait_at_once_other_errors_mean_not_yet(monkeypatch):
    from testbed.util import StopWaiting

    monkeypatch.delenv("CDNLAB_TIMEOUT_SCALE", raising=False)
    calls = []

    def gone() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not up yet")  # still coming up: keep polling
        raise StopWaiting("the process exited (status 2)")

    t0 = time.monotonic()
    with pytest.raises(StopWaiting, match="exited"):
        wait_until(gone, 30, interval=0.01)
    assert len(calls) == 3 and time.monotonic() - t0 < 5  # not the 30 s deadline


def test_stop_process_terms_then_kills_and_reaps():
    import signal
    import subprocess
    import sys

    from testbed.util import stop_process

    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_process(polite, timeout=10) == -signal.SIGTERM
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True)\n"
                                 "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    assert stop_process(stubborn, timeout=0.3) == -signal.SIGKILL
    stubborn.stdout.close()
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert stop_process(done, first=None) == 0  # already gone: nothing sent
