"""The keeper of a run's record on another server (testbed.net.remote_record), run here as ``localhost``
(the same program, without ssh): it records, refuses bad requests naming them and keeps serving, and removes
what it recorded when its input ends, also when the front end that started it is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.net.remote_record import RemoteRecord, RemoteRecordError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces and routes)")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("CDNLAB_STATE_DIR", str(d))
    return d


def _in_new_netns() -> subprocess.Popen:
    """A process in a network namespace of its own (as an emulated host's shell is)."""
    p = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{p.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
        assert time.monotonic() < deadline, "unshare made no namespace"
        time.sleep(0.01)
    return p


def _gone(p: subprocess.Popen, timeout: float = 15.0) -> bool:
    try:
        p.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


@root_only
def test_the_keeper_records_refuses_bad_requests_and_removes_what_it_recorded(state_dir: Path) -> None:
    host = _in_new_netns()
    rec = RemoteRecord("localhost", "unit")
    try:
        assert rec.run_id and (state_dir / f"{rec.run_id}.json").exists()
        with pytest.raises(RemoteRecordError, match="unknown request fields: nonsense"):
            rec.request(nonsense=1)
        with pytest.raises(RemoteRecordError, match="no such process"):
            rec.request(hosts=[2**22 + 12345])
        with pytest.raises(RemoteRecordError, match="sysctl 'kernel.panic' is not one a run sets"):
            rec.request(sysctls={"kernel.panic": 1})
        rec.request(hosts=[host.pid])  # the keeper still serves after refusing
        rec.request(bridges=["cdnlab-no-such-br"])
        text = (state_dir / f"{rec.run_id}.json").read_text()
        assert "cdnlab-no-such-br" in text and str(host.pid) in text
        assert host.poll() is None
    finally:
        rec.close()
    assert _gone(host), "the keeper left a process of a recorded namespace running"
    assert not list(state_dir.glob("*.json"))


@root_only
def test_a_guard_overlapping_the_servers_own_network_is_refused_naming_it(state_dir: Path) -> None:
    from testbed.net.containment import machine_networks

    own = next((m for m in machine_networks() if not m.network.is_loopback), None)
    if own is None:
        pytest.skip("this machine has no network but loopback")
    rec = RemoteRecord("localhost", "unit")
    try:
        with pytest.raises(RemoteRecordError, match=f"overlaps {own.network}"):
            rec.request(guard=[str(own.network)], topology="clash")
    finally:
        rec.close()
    assert not list(state_dir.glob("*.json"))


FRONT_END = """
import subprocess, sys, time
from testbed.net.remote_record import RemoteRecord
rec = RemoteRecord("localhost", "unit")
rec.request(hosts=[int(sys.argv[1])])
print("RECORDED", flush=True)
time.sleep(300)
"""


@root_only
def test_sigkill_of_the_front_end_ends_the_keeper_and_what_it_recorded(state_dir: Path) -> None:
    host = _in_new_netns()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    front = subprocess.Popen([sys.executable, "-c", FRONT_END, str(host.pid)], env=env, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert front.stdout is not None and front.stdout.readline().strip() == "RECORDED"
        assert len(list(state_dir.glob("*.json"))) == 1
        front.send_signal(signal.SIGKILL)
        front.wait(10)
        assert _gone(host), "the keeper did not end the recorded namespace's processes after SIGKILL"
        deadline = time.monotonic() + 10
        while list(state_dir.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not list(state_dir.glob("*.json"))
    finally:
        for p in (front, host):
            if p.poll() is None:
                p.kill()
                p.wait()
