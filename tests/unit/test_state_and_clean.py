"""Run records and `cdnlab clean`: kill exactly what was recorded, never a recycled PID."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testbed.net.cleanup import clean_all, clean_state
from testbed.net.state import RunState, TrackedPid, all_states, owner_alive, proc_start_time, same_process


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CDNLAB_STATE_DIR", str(tmp_path))
    return tmp_path


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_record_is_persisted_and_reloaded(state_dir) -> None:
    st = RunState.new("unit")
    st.add_bridge("zz1")
    st.add_interface("zz1-eth1")
    st.add_sysctl("net.core.rmem_default", "212992")
    [loaded] = all_states()
    assert loaded.run_id == st.run_id and loaded.bridges == ["zz1"] and loaded.interfaces == ["zz1-eth1"]
    assert loaded.sysctls == {"net.core.rmem_default": "212992"}
    assert owner_alive(loaded)  # this test process made it


def test_clean_kills_recorded_processes_and_removes_the_record(state_dir) -> None:
    p = _sleeper()
    st = RunState.new("unit")
    st.add_pid(p.pid, "test sleeper")
    removed = clean_state(st)
    assert p.wait(5) is not None
    assert any("test sleeper" in r for r in removed)
    assert all_states() == []


def test_a_recycled_pid_is_never_killed(state_dir) -> None:
    p = _sleeper()
    try:
        t = TrackedPid(p.pid, (proc_start_time(p.pid) or 0) + 12345, "someone else")  # start time differs
        assert not same_process(t)
        st = RunState.new("unit")
        st.pids.append(t)
        st.save()
        clean_state(st)
        assert p.poll() is None, "a process that is not the recorded one was killed"
    finally:
        p.kill()
        p.wait()


def test_clean_all_leaves_live_runs_alone_unless_forced(state_dir) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        st = RunState.new("live")
        st.owner_pid, st.owner_start = other.pid, proc_start_time(other.pid)
        st.save()
        clean_all(quiet=True)
        assert [s.run_id for s in all_states()] == [st.run_id]
        if os.geteuid() == 0:  # sysctl/bridge restore paths need root; the record removal does not
            clean_all(force=True, quiet=True)
            assert all_states() == []
    finally:
        other.kill()
        other.wait()
