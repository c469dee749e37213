"""Checking the servers of a run across several (testbed.net.servers, ``cdnlab doctor --servers``), against a
real OpenSSH server of the test's own on loopback (tests/support/sshd.py)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from sshd import SSHD, Sshd

from testbed.net import servers

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.cluster


@pytest.fixture
def sshd(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("a cluster server is reached as root: run the tests as root")
    if not SSHD.exists():
        pytest.fail(f"{SSHD} is missing: `sudo make setup` installs openssh-server")
    server = Sshd(tmp_path).start()
    monkeypatch.setenv("CDNLAB_SSH_CONFIG", str(server.config))
    try:
        yield server
    finally:
        server.stop()


def _doctor(*args: str) -> tuple[int, dict, str]:
    run = subprocess.run([sys.executable, "-m", "testbed.cli", "doctor", "--json", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    return run.returncode, json.loads(run.stdout.strip().splitlines()[-1]), run.stdout


def test_a_server_reached_over_ssh_reports_what_it_has(sshd) -> None:
    f = servers.probe("lab2")
    assert f.reached, f.error
    local = servers.probe("localhost")
    # the "second server" is this machine through sshd: the same facts, by another road
    assert (f.hostname, f.kernel, f.root) == (platform.node(), platform.release(), True)
    assert (f.mininet, f.ovs_version, f.netem, f.kernel_ovs) == (
        local.mininet, local.ovs_version, local.netem, local.kernel_ovs)
    assert f.mininet  # Debian's package, seen by the server's system Python
    assert f.cdnlab is True  # this checkout and its Python, at the same path there
    # one clock: the offset is within what the round trip leaves unknown
    assert f.clock_offset_ms is not None and abs(f.clock_offset_ms) <= f.clock_error_ms + 0.5
    assert f.via[0] == "ssh" and "BatchMode=yes" in f.via and f.via[-1] == "root@lab2"
    assert servers.fix_for(f) == ""
    assert servers.disagreements(local, [f]) == {"mininet": [], "links": [], "clock": []}


def test_a_server_that_refuses_the_key_or_has_no_name_is_explained(sshd) -> None:
    f = servers.probe("stranger")  # sshd knows no such key
    assert not f.reached and "Permission denied" in f.error
    assert "ssh-copy-id root@stranger" in servers.fix_for(f)
    g = servers.probe("nohost.invalid")
    assert not g.reached and "nohost.invalid" in g.error and "/etc/hosts" in servers.fix_for(g)


def test_doctor_checks_each_server_and_whether_they_agree(sshd) -> None:
    rc, summary, out = _doctor("--servers", "lab2,stranger")
    assert summary["servers"]["lab2"]["reached"] is True and summary["servers"]["stranger"]["reached"] is False
    assert summary["servers"]["lab2"]["link_mode"] == summary["link_mode"]
    assert "server stranger" in summary["missing"] and "ssh-copy-id root@stranger" in summary["missing"]["server stranger"]
    assert "server lab2" not in summary["missing"] and "servers mininet" not in summary["missing"]
    assert rc == 1 and not summary["ok"]  # an unreachable server makes the cluster not ready
    assert "[XX ] server stranger" in out and "[ok ] server lab2" in out


def test_a_server_without_cdnlab_at_the_same_path_is_told_where_to_put_it() -> None:
    f = servers.ServerFacts(server="lab3", reached=True, root=True, mininet="2.3.0", ovs_running=True, cdnlab=False)
    assert f"put this version of cdnlab at {servers.REPO_ROOT} on lab3" in servers.fix_for(f)


def test_servers_that_differ_are_told_apart() -> None:
    base = dict(reached=True, mininet="2.3.0", root=True, ovs_running=True, clock_offset_ms=0.1, clock_error_ms=0.2)
    local = servers.ServerFacts("localhost", **base)
    far = servers.ServerFacts("lab2", **{**base, "mininet": "2.3.1", "netem": True, "clock_offset_ms": 40.0})
    differ = servers.disagreements(local, [far])
    assert differ["mininet"] == ["lab2 has Mininet 2.3.1, this machine 2.3.0"]
    assert differ["links"] == ["link emulation differs: localhost relay, lab2 netem"]
    assert differ["clock"] == ["lab2's clock is +40.0 ms off this machine's"]
    assert servers.fix_for(servers.ServerFacts("lab3", **{**base, "mininet": None, "ovs_running": False})) == (
        "install Mininet on lab3: apt install mininet; start Open vSwitch on lab3: "
        "/usr/share/openvswitch/scripts/ovs-ctl start")


def test_doctor_refuses_a_bad_server_list() -> None:
    run = subprocess.run([sys.executable, "-m", "testbed.cli", "doctor", "--servers", "a,,b"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--servers 'a,,b'" in run.stderr
