"""One answer to "can this machine build an emulated network?" (testbed.net.host_env.emulation_missing),
asked by the builder before it makes anything, the graders' network stage and the Mininet test tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed import grade_network
from testbed.net import host_env
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.spec import load_topology


def test_without_open_vswitch_running_the_builder_says_so_and_makes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the builder refuses non-root first")
    monkeypatch.setattr(host_env, "ovs_running", lambda: False)
    cn = CdnNet(load_topology("mini"), BuildOptions(run_dir=tmp_path / "run"))
    with pytest.raises(RuntimeError, match=r"cannot build the network: Open vSwitch is not running .*make setup"):
        cn.start()
    assert cn.state is None and not (tmp_path / "run").exists()  # no run record, no run directory
    assert "Open vSwitch is not running" in (grade_network.unavailable() or "")


def test_each_missing_piece_is_named_with_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert host_env.emulation_missing() == "needs root (sudo)"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(host_env.shutil, "which", lambda _name: None)
    assert "Open vSwitch is not installed" in (host_env.emulation_missing() or "")
