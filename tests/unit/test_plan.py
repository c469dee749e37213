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
        assert isinstance(s.config, config_model(s.role))  # typed: its service's own model
        # what the service reads back from the file it is given is the same config
        assert config_model(s.role).model_validate_json(s.config.model_dump_json()) == s.config
        assert str(s.config.log_file).startswith(str(run))
    ips = [h["ip"] for h in plan.summary()["hosts"]]
    assert len(ips) == len(set(ips))


@pytest.mark.parametrize(
    "opts",
    [
        CdnOptions(multicast=True),
        CdnOptions(cooperation="icp"),
        CdnOptions(cooperation="cluster", eviction="testbed.services.eviction:LFU"),
        CdnOptions(cooperation="parent", parent="e1", resolver_extra=["cache-min-ttl: 10"]),
        CdnOptions(limits={"edge": {"max_connections": 64}}, origin_cache_control={"image": "max-age=60"}),
    ],
    ids=["multicast", "icp", "cluster", "parent", "limits"],
)
def test_every_config_is_its_services_model_and_survives_its_file(opts, tmp_path):
    """The launcher writes each typed config as JSON and the service validates it again: nothing may change
    on the way (a default, a nested section, a key)."""
    plan = make_plan(load_topology("mini"), cdn=opts, run_dir=tmp_path / "run")
    for s in plan.services:
        model = config_model(s.role)
        assert isinstance(s.config, model)
        assert model.model_validate_json(s.config.model_dump_json()) == s.config
    written = plan.write(tmp_path / "out")
    edge = json.loads(next(p for p in written if p.name == "e1-edge.json").read_text())
    summary = json.loads(next(p for p in written if p.name == "plan.json").read_text())
    assert summary["multicast"] == {"ingest": {"group": "239.1.1.1", "port": 7400, "session_id": 1},
                                    "control": {"group": "239.10.0.2", "port": 7401, "session_id": 2}}
    assert plan.mcast.key not in json.dumps(summary)  # the key is in the (private) configs only
    if opts.multicast:  # every config's multicast section is the plan's one copy
        assert edge["ingest"]["key"] == edge["control"]["key"] == plan.mcast.key
        assert (edge["ingest"]["group"]["group"], edge["ingest"]["group"]["port"]) == ("239.1.1.1", 7400)
        assert (edge["control"]["group"]["group"], edge["control"]["session_id"]) == ("239.10.0.2", 2)


def test_the_callers_options_are_left_as_they_were(tmp_path):
    opts = BuildOptions(anycast_mode="affinity")
    plan = make_plan(load_topology("mini"), opts, run_dir=tmp_path / "run")
    assert opts.run_dir is None and opts.anycast_mode == "affinity"
    assert all(str(s.config.log_file).startswith(str(tmp_path / "run")) for s in plan.services)


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


def test_the_cooperation_sections_name_the_peers_by_their_planned_addresses(tmp_path):
    """One function shapes them (testbed.services.edge.config.cooperation_fields) for the emulated CDN and the
    loopback hierarchy experiment: here with the plan's addresses and RFC 2186's port."""
    def edge(opts, name="e1"):
        plan = make_plan(load_topology("globe"), cdn=opts, run_dir=tmp_path / "run")
        ips = {h["name"]: h["ip"] for h in plan.summary()["hosts"]}
        return next(s.config for s in plan.services if s.host == name), ips, plan

    cfg, ips, plan = edge(CdnOptions(cooperation="icp"), "e_eu")
    edges = [s.host for s in plan.services if s.role == "edge"]
    assert cfg.icp_port == 3130 and cfg.icp_host == "0.0.0.0"
    assert {(s.name, s.icp_host, s.icp_port) for s in cfg.siblings} == {(e, ips[e], 3130) for e in edges if e != "e_eu"}
    cfg, ips, plan = edge(CdnOptions(cooperation="cluster"), "e_eu")
    regions = {h.name: h.region for h in load_topology("globe").hosts}
    assert [m.name for m in cfg.cluster][0] == "e_eu"  # itself first, then the edges of its own region
    assert {m.name for m in cfg.cluster} == {e for e in edges if regions[e] == regions["e_eu"]}
    assert all(m.url == f"http://{ips[m.name]}:80" for m in cfg.cluster)
    cfg, ips, _ = edge(CdnOptions(cooperation="parent", parent="e_na"), "e_eu")
    assert cfg.parent_url == f"http://{ips['e_na']}:80"
    assert edge(CdnOptions(cooperation="parent", parent="e_na"), "e_na")[0].parent_url is None
    with pytest.raises(ValueError, match="unknown cooperation 'mesh'"):
        edge(CdnOptions(cooperation="mesh"))
