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
    assert isinstance(last["netem"], bool)
    assert r.returncode == (0 if last["ok"] else 1)
    if not last["ok"]:
        assert "fix:" in r.stdout  # every missing piece says how to fix it
