"""One emulated network across several servers, built by Mininet Cluster Edition (``mininet.examples.cluster``).

cdnlab uses Mininet's own distributed engine (``MininetCluster``, ``RemoteHost``, ``RemoteOVSSwitch``,
``RemoteLink`` with SSH tunnels) and changes only how it reaches the servers, each change a subclass:

* **SSH as cdnlab calls it** (:mod:`testbed.net.servers`): ``BatchMode``, the ssh_config of
  ``CDNLAB_SSH_CONFIG`` when set, as root. Mininet Cluster Edition wraps every command in ``sudo`` (``sudo -E
  -u USER ssh ...`` here, ``sudo -E CMD`` there); cdnlab runs as root on every server, so where the user is
  root already the commands run as they are (Debian's root has no ``sudo`` to call).
* **No clean-up of a whole server.** Mininet's own (``ClusterCleanup``) runs ``mn -c`` on every server, which
  removes every Mininet network and bridge there; cdnlab removes what it made (:meth:`CdnCluster.stop`).
* **No files in ``~/.ssh``.** ``MininetCluster`` makes ``~/.ssh/mn`` for shared connections; cdnlab does not
  share connections and leaves the user's SSH set-up alone.

A link between servers is an SSH Ethernet tunnel (``ssh -o Tunnel=Ethernet -w 9:9``, a tap device at each
end, renamed to the link's interface), as ``RemoteSSHLink`` makes it; the server's sshd needs
``PermitTunnel yes``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from subprocess import PIPE, STDOUT, Popen
from typing import Any

from testbed.net import servers as server_access

with warnings.catch_warnings():  # Mininet 2.3's cluster module imports distutils (deprecated in Python 3.11)
    warnings.simplefilter("ignore", DeprecationWarning)
    from mininet.examples import cluster as mn_cluster

from mininet.log import debug
from mininet.net import Mininet
from mininet.util import decode


def ssh_base(tty: bool = True) -> list[str]:
    """The ssh command cdnlab's remote nodes use (Mininet's: ``-q``, ``BatchMode``, ``-tt`` for a shell)."""
    config = os.environ.get("CDNLAB_SSH_CONFIG")
    return ["ssh", "-q", *(["-F", config] if config else []), *server_access.SSH_OPTIONS, *(["-tt"] if tty else [])]


class RootRemoteMixin(mn_cluster.RemoteMixin):
    """Mininet's remote node, reached as cdnlab reaches servers (module docstring)."""

    def __init__(self, name: str, server: str = "localhost", user: str | None = None, serverIP: str | None = None,
                 **kwargs: Any) -> None:
        user = user or "root"
        super().__init__(name, server=server, user=user, serverIP=serverIP, **kwargs)
        mn_cluster.ClusterCleanup.serveruser.clear()  # never `mn -c` on a server (module docstring)

    @property
    def sshcmd(self) -> list[str]:
        """cdnlab's ssh to this node's server (Mininet's would start with ``sudo -E -u USER``)."""
        return [*ssh_base(), self.dest] if getattr(self, "isRemote", False) else []

    @sshcmd.setter
    def sshcmd(self, _mininets: list[str]) -> None:
        pass  # RemoteMixin.__init__ sets its own, before the node's shell starts: the property above wins

    def _popen(self, cmd: Any, sudo: bool = True, tt: bool = True, **params: Any) -> Popen:
        if isinstance(cmd, str):
            cmd = cmd.split()
        if self.isRemote:
            cmd = (self.sshcmd if tt else [c for c in self.sshcmd if c != "-tt"]) + list(cmd)
        params.update(preexec_fn=self._ignoreSignal)
        debug("_popen", cmd, "\n")
        return Popen(cmd, **params)  # noqa: S603 - Node._popen's own call, without its sudo wrapping

    def rpopen(self, *cmd: Any, **opts: Any) -> Popen:
        params = {"stdin": PIPE, "stdout": PIPE, "stderr": STDOUT, "sudo": True}
        params.update(opts)
        return self._popen(*cmd, **params)


class ClusterHost(RootRemoteMixin, mn_cluster.RemoteHost):
    """A host that may run on another server."""


class ClusterSwitch(RootRemoteMixin, mn_cluster.RemoteOVSSwitch):
    """An Open vSwitch bridge that may run on another server."""


class ClusterLink(mn_cluster.RemoteLink):
    """A link; between servers, an SSH Ethernet tunnel made with cdnlab's ssh (module docstring)."""

    def makeTunnel(self, node1: Any, node2: Any, intfname1: str, intfname2: str, addr1: str | None = None,
                   addr2: str | None = None) -> Popen:
        assert node1.server != node2.server
        if node2.server == "localhost":
            return self.makeTunnel(node2, node1, intfname2, intfname1, addr2, addr1)
        for node in (node1, node2):
            result = node.rcmd("ip tuntap add dev tap9 mode tap user root")
            if result:
                raise RuntimeError(f"cannot make tap9 on {node.server} for {node}: {result.strip()}")
        cmd = [*ssh_base(tty=False), "-n", "-o", "Tunnel=Ethernet", "-w", "9:9", node2.dest, "echo @"]
        self.cmd = cmd
        tunnel = node1.rpopen(cmd, sudo=False)
        ch = decode(tunnel.stdout.read(1))
        if ch != "@":
            rest = decode(tunnel.stdout.read())
            raise RuntimeError(f"no SSH tunnel from {node1.server} to {node2.server} for {node1}-{node2} "
                               f"({' '.join(cmd)}): {(ch + rest).strip()}")
        for node in (node1, node2):
            self.moveIntf("tap9", node)
        for node, intf, addr in ((node1, intfname1, addr1), (node2, intfname2, addr2)):
            result = node.cmd("ip link set tap9 name", intf, *(("address", addr) if addr else ()))
            if result:
                raise RuntimeError(f"cannot rename tap9 to {intf} on {node}: {result.strip()}")
        return tunnel


class CdnCluster(mn_cluster.MininetCluster):
    """``MininetCluster`` with cdnlab's nodes and links, no ``~/.ssh/mn`` and no ``sudo`` precheck."""

    def __init__(self, *args: Any, servers: Sequence[str] = ("localhost",), **kwargs: Any) -> None:
        params: dict[str, Any] = {"host": ClusterHost, "switch": ClusterSwitch, "link": ClusterLink}
        params.update(kwargs)
        self.servers = [s or "localhost" for s in servers]
        self.serverIP = params.pop("serverIP", None) or {
            s: mn_cluster.RemoteMixin.findServerIP(s) for s in self.servers}
        unknown = [s for s, ip in self.serverIP.items() if not ip]
        if unknown:
            raise RuntimeError(f"no address for server {', '.join(unknown)}: name it in /etc/hosts or give its address")
        self.user = "root"
        self.connections: dict = {}
        self.placement = params.pop("placement", mn_cluster.SwitchBinPlacer)
        self.precheck()
        Mininet.__init__(self, *args, **params)

    def precheck(self) -> None:
        """Every server answers over SSH (testbed.net.servers), or stop naming the ones that do not."""
        missing = []
        for s in self.servers:
            if s == "localhost":
                continue
            f = server_access.probe(self.serverIP[s], rounds=0)
            if not f.reached:
                missing.append(f"{s}: {f.error} ({server_access.fix_for(f)})")
        if missing:
            raise RuntimeError("servers not reached: " + "; ".join(missing))


__all__ = ["CdnCluster", "ClusterHost", "ClusterLink", "ClusterSwitch", "ssh_base"]
