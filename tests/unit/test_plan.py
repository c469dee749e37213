"""#14 items 1-2: the plan (addresses, ports, the controller's view, every service config) without root or
Mininet, and ``cdnlab plan TOPO --out DIR``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from contract.config import ConfigError
from contract.netview import NetView
from testbed.net.build import BuildOptions, port_numbers
from testbed.net.launch import SERVICE_MODULES, CdnOptions, config_model
from testbed.net.spec import load_topology
from testbed.plan import make_plan

ROOT = Path(__file__).resolve().parents[2]


def test_port_numbers_follow_mininets_order():
    """Hosts' access links first, then switch links, in file order; hosts count from 0, switches from 1."""
    ports = port_numbers(load_topology("mini"))
    # mini: origin e1 c1 dns1 res1 redir on s1, e2 c2 on s2, then s1-s2
    assert ports[("origin", "s1")] == 0 and ports[("s1", "origin")] == 1
    assert ports[("s1", "e1")] == 2 and ports[("s2", "e2")] == 1 and ports[("s2", "c2")] == 2
    assert ports[("s1", "redir")] == 6
    assert ports[("s1", "s2")] == 7 and ports[("s2", "s1")] == 3


@pytest.mark.parametrize("name", ["mini", "globe", "institutional"])
def test_the_plan_of_every_shipped_topology_is_complete_and_writes_nothing(name, tmp_path):
    topo = load_topology(name)
    run = tmp_path / "run"
    plan = make_plan(topo, run_dir=run)
    assert not run.exists()  # pure: nothing written, nothing built
    view = NetView.model_validate(plan.netview)  # the controller's own schema
    assert {h.name for h in view.hosts} == {h.name for h in topo.hosts}
    planned = {s.host for s in plan.services}
    assert planned == {h.name for h in topo.hosts if h.role.value in SERVICE_MODULES}
    for s in plan.services:
        config_model(s.role).model_validate(s.config)  # what the service itself will validate
        assert s.config["log_file"].startswith(str(run))
    ips = [h["ip"] for h in plan.summary()["hosts"]]
    assert len(ips) == len(set(ips))


def test_the_callers_options_are_left_as_they_were(tmp_path):
    opts = BuildOptions(anycast_mode="affinity")
    plan = make_plan(load_topology("mini"), opts, run_dir=tmp_path / "run")
    assert opts.run_dir is None and opts.anycast_mode == "affinity"
    assert all(s.config["log_file"].startswith(str(tmp_path / "run")) for s in plan.services)


def test_a_bad_generated_config_names_the_host_and_field(tmp_path):
    with pytest.raises(ConfigError, match=r"dns1 \(dns\).*health"):
        make_plan(load_topology("mini"), cdn=CdnOptions(health_interval=0), run_dir=tmp_path)


def _as_nobody() -> None:
    os.setgid(65534)
    os.setuid(65534)


@pytest.fixture
def open_dir():
    """A directory anyone may write (pytest's own is root's only), removed after the test."""
    d = Path(tempfile.mkdtemp(prefix="cdnlab-plan-test-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d)


def test_cdnlab_plan_writes_every_config_without_root(open_dir):
    out = open_dir / "plan"
    if os.geteuid() == 0:  # as a student without sudo: can an unprivileged user read this checkout at all?
        probe = subprocess.run([sys.executable, "-c", "import testbed.plan"], cwd=ROOT, capture_output=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=_as_nobody, timeout=60)
        if probe.returncode != 0:
            pytest.skip("this checkout or its virtualenv is not readable by an unprivileged user")
    run = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "plan", "globe", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        preexec_fn=_as_nobody if os.geteuid() == 0 else None,
    )
    assert run.returncode == 0, run.stderr
    assert "globe: what will run where" in run.stdout
    summary = json.loads((out / "plan.json").read_text())
    configs = sorted(p.name for p in (out / "configs").iterdir())
    assert configs == sorted(f"{s['host']}-{s['role']}.json" for s in summary["services"])
    assert len(configs) >= 10
    assert json.loads((out / "netview.json").read_text())["switches"]
    edge = json.loads((out / "configs" / next(c for c in configs if c.endswith("-edge.json"))).read_text())
    assert edge["admin_token"] and edge["origin_url"].startswith("http://10.")
    assert (out / "configs" / configs[0]).stat().st_mode & 0o077 == 0  # keys inside: owner only


def test_cdnlab_plan_refuses_a_bad_topology_naming_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nswitches: [{name: s1}]\nhosts: [{name: h1, role: nonsense, switch: s1}]\n")
    run = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "plan", str(bad), "--out", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "bad.yaml" in run.stderr and "role" in run.stderr
    assert not (tmp_path / "o").exists()
