"""``CdnServices.steering_args``: the options that send a player or probe on a client through each
selection method, shared by the CLI's ``fetch``/``play`` and the video experiment; None where the CDN has
no such service."""

from __future__ import annotations

from pathlib import Path

from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import CdnServices
from testbed.net.spec import Role, load_topology


def _svc(tmp_path: Path, topo_name: str = "mini", drop: Role | None = None) -> CdnServices:
    topo = load_topology(topo_name)
    if drop is not None:
        topo = topo.model_copy(update={"hosts": [h for h in topo.hosts if h.role is not drop]})
    return CdnServices(CdnNet(topo, BuildOptions(run_dir=tmp_path)))


def test_each_method_names_its_own_service(tmp_path: Path) -> None:
    svc = _svc(tmp_path)
    cn = svc.cn
    client = next(h.name for h in cn.topo.hosts_with(Role.client))
    assert svc.steering_args(client, "anycast") == ["--vip", cn.topo.anycast[0].vip]
    assert svc.steering_args(client, "dns") == ["--resolver", cn.ip(svc.resolver_for(client))]
    assert svc.steering_args(client, "redirect") == ["--redirector", cn.ip(svc.redirectors[0])]
    assert svc.steering_args(client, "carrier-pigeon") is None


def test_a_method_without_its_service_gives_none(tmp_path: Path) -> None:
    svc = _svc(tmp_path, drop=Role.redirector)
    client = next(h.name for h in svc.cn.topo.hosts_with(Role.client))
    assert svc.redirectors == [] and svc.steering_args(client, "redirect") is None
    assert svc.steering_args(client, "anycast") is not None
