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


class _Node:
    """A node of Mininet Cluster Edition as far as a remote step sees it: its server's shell prints
    ``says`` at start-up, then runs the script (here: succeeds when ``ok``)."""

    def __init__(self, remote: bool, says: str = "", ok: bool = True) -> None:
        self.isRemote, self.says, self.ok, self.ran = remote, says, ok, []

    def rcmd(self, argv: list[str]) -> str:
        self.ran.append(argv)
        return self.says + ("cdnlab-done\n" if self.ok else "RTNETLINK answers: File exists\n")


def test_a_remote_step_is_judged_by_its_exit_status_not_by_silence() -> None:
    """A root shell whose start-up prints (pyenv's "cannot rehash" on a read-only home) does not fail a step
    that succeeded, as it did in Mininet's own code (any output was an error); a failed step raises with what
    it printed. Remotely the script reaches the far shell as one quoted word (ssh joins its words)."""
    from testbed.net.cluster import _rcmd_ok

    noisy = _Node(remote=True, says="pyenv: cannot rehash: /root/.pyenv/shims isn't writable\n")
    _rcmd_ok(noisy, "ip link set tap9 netns 198")
    assert noisy.ran == [["sh", "-c", "'ip link set tap9 netns 198 && echo cdnlab-done'"]]
    local = _Node(remote=False)
    _rcmd_ok(local, "ip tuntap add dev tap9 mode tap user root")
    assert local.ran == [["sh", "-c", "ip tuntap add dev tap9 mode tap user root && echo cdnlab-done"]]
    with pytest.raises(RuntimeError, match="File exists"):
        _rcmd_ok(_Node(remote=True, ok=False), "ip tuntap add dev tap9 mode tap user root")
