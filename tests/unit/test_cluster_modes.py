"""A run across servers emulates alike on every server: the kernel datapath and netem only where every
server has them, else what all have; an option insisting on what one lacks is refused naming it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from testbed.net.build import BuildOptions, CdnNet
from testbed.net.servers import ServerFacts
from testbed.net.spec import load_topology


def _net(**facts: ServerFacts) -> CdnNet:
    cn = CdnNet(load_topology("globe"), BuildOptions(servers=("localhost", *facts)))
    cn.net = SimpleNamespace(facts=facts)
    return cn


def test_what_one_server_lacks_no_server_uses_and_an_insisting_option_is_refused() -> None:
    full = ServerFacts(server="lab2", reached=True, netem=True, kernel_ovs=True)
    bare = ServerFacts(server="lab3", reached=True, netem=False, kernel_ovs=False)
    assert _net(lab2=full)._servers_without("netem", "netem", "--links", "auto") is False
    cn = _net(lab2=full, lab3=bare)
    assert cn._servers_without("netem", "netem", "--links", "auto") is True
    assert cn._servers_without("kernel_ovs", "openvswitch module", "--datapath", "auto") is True
    with pytest.raises(RuntimeError, match="--links netem: server lab3 has no netem"):
        cn._servers_without("netem", "netem", "--links", "netem")
    with pytest.raises(RuntimeError, match="--datapath kernel: server lab3 has no openvswitch module"):
        cn._servers_without("kernel_ovs", "openvswitch module", "--datapath", "kernel")
    assert cn.placement is not None and cn.server_of("s_na") in ("localhost", "lab2", "lab3")
