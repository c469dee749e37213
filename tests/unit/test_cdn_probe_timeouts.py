"""The plan gives each mapping service the path RTT from its own host to every edge (``probe_rtt_ms``), so
its health checker does not mark a far edge down for being far (issue #11)."""

from __future__ import annotations

from pathlib import Path

from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import CdnServices
from testbed.net.spec import Role, load_topology
from testbed.services.dns import DnsConfig
from testbed.services.health import HealthChecker, HealthConfig
from testbed.services.mapping import EdgeSpec
from testbed.services.redirector import RedirectorConfig


def test_each_prober_gets_its_own_path_rtt_to_every_edge(tmp_path: Path) -> None:
    svc = CdnServices(CdnNet(load_topology("globe"), BuildOptions(run_dir=tmp_path)))
    rows = svc.rtt_rows()
    probers = [(h, RedirectorConfig) for h in svc.redirectors]
    probers += [(h.name, DnsConfig) for h in svc.cn.topo.hosts_with(Role.dns)]
    assert probers
    for host, model in probers:
        cfg = svc.config(host)
        assert isinstance(cfg, model)
        edges = {e.name: e for e in cfg.mapping.edges}
        assert set(edges) == set(svc.edges)
        assert {n: e.probe_rtt_ms for n, e in edges.items()} == {e: rows[host][e] for e in svc.edges}
    # on globe the far edges are far: their probes get more time than the base timeout
    host = probers[0][0]
    spread = sorted(rows[host][e] for e in svc.edges)
    assert spread[-1] > 100 > spread[0], spread
    hc = HealthChecker([EdgeSpec.model_validate(e) for e in svc.edge_specs(host)], HealthConfig(**svc.health()))
    timeouts = sorted(hc.timeout_for(e) for e in hc.edges)
    assert timeouts[0] < timeouts[-1] and timeouts[-1] >= svc.health()["timeout"] + 0.2
