"""The `cdnlab` dispatcher and `cdnlab doctor --json`."""

from __future__ import annotations

import json
import subprocess
import sys

from testbed.cli import COMMANDS, main


def test_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*COMMANDS, "bench"]:
        assert name in out


def test_unknown_command_and_benchmark(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert main(["bench", "no_such_bench"]) == 2
    assert "no benchmark named" in capsys.readouterr().err
    assert main(["bench", "--help"]) == 0
    listed = capsys.readouterr().out
    for b in ("links", "startup", "edge", "dns", "failover", "ingest"):
        assert b in listed


def test_every_command_module_imports() -> None:
    import importlib

    for mod, _ in COMMANDS.values():
        m = importlib.import_module(mod)
        assert callable(m.main), mod


def test_doctor_json_last_line() -> None:
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "doctor", "--json"], capture_output=True, text=True,
                       timeout=120)
    last = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("root", "ovs_running", "ovs_datapath", "netem", "ryu_version"):
        assert key in last
    assert last["ovs_datapath"] in ("kernel", "user")
    assert isinstance(last["netem"], bool) and isinstance(last["relay_realtime"], bool)
    assert r.returncode == (0 if last["ok"] else 1)
    if not last["ok"]:
        assert "fix:" in r.stdout  # every missing piece says how to fix it


def test_doctor_names_topologies_that_clash_with_this_machine(monkeypatch) -> None:
    """On a VirtualBox VM (NAT 10.0.2.0/24) mini's 10.0.0.0/24 is fine; a machine on 10.0.0.0/8 clashes
    with every shipped topology, and doctor gives each a --subnet that is free."""
    import ipaddress

    from testbed import doctor
    from testbed.net import containment

    vbox = [containment.MachineNetwork("eth0", ipaddress.IPv4Network("10.0.2.0/24"))]
    monkeypatch.setattr(containment, "machine_networks", lambda: vbox)
    assert doctor.address_clashes() == {}
    wide = [containment.MachineNetwork("eth0", ipaddress.IPv4Network("10.0.0.0/9"))]
    monkeypatch.setattr(containment, "machine_networks", lambda: wide)
    clashes = doctor.address_clashes()
    assert set(clashes) >= {"globe", "mini"}
    assert clashes["globe"] == "10.128.0.0/16" and clashes["mini"] == "10.128.0.0/24"
