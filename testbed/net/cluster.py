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

import functools
import shlex
import subprocess
import warnings
from collections.abc import Sequence
from subprocess import Popen
from typing import Any

from testbed.net import servers as server_access
from testbed.net.links import RelayLink

with warnings.catch_warnings():  # Mininet 2.3's cluster module imports distutils (deprecated in Python 3.11)
    warnings.simplefilter("ignore", DeprecationWarning)
    from mininet.examples import cluster as mn_cluster

from mininet.log import debug
from mininet.net import Mininet
from mininet.util import decode


def ssh_base(tty: bool = True) -> list[str]:
    """The ssh command cdnlab's remote nodes use (Mininet's: ``-q``, ``BatchMode``, ``-tt`` for a shell)."""
    ssh, *options = server_access.ssh_argv()
    return [ssh, "-q", *options, *(["-tt"] if tty else [])]


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
        # a node on this machine starts processes as Mininet's Node does: its own process group would make
        # ``mnexec -d`` fork (setsid fails for a group leader), so the PID returned would not be the process
        debug("_popen", cmd, "\n")
        return Popen(cmd, **params)  # noqa: S603 - Node._popen's own call, without its sudo wrapping


class ClusterHost(RootRemoteMixin, mn_cluster.RemoteHost):
    """A host that may run on another server."""


class ClusterSwitch(RootRemoteMixin, mn_cluster.RemoteOVSSwitch):
    """An Open vSwitch bridge that may run on another server."""


def _rcmd_ok(node: Any, script: str) -> None:
    """Run ``script`` in the root namespace of ``node``'s server; raise with what it printed unless it
    succeeded. Judged by its exit status, not by silence as Mininet Cluster Edition does: a remote root's
    shell start-up may print (pyenv's "cannot rehash" on a read-only home)."""
    script = f"{script} && echo cdnlab-done"
    result = node.rcmd(["sh", "-c", shlex.quote(script) if node.isRemote else script])  # ssh joins its words
    if "cdnlab-done" not in result:
        raise RuntimeError(result.strip() or "failed, saying nothing")


class ClusterLink(mn_cluster.RemoteLink):
    """A link; between servers, an SSH Ethernet tunnel made with cdnlab's ssh (module docstring)."""

    @staticmethod
    def moveIntf(intf: Any, node: Any) -> bool:  # noqa: N802 - Mininet's name
        """Move a tunnel's interface from its server's root namespace into ``node``'s."""
        try:
            _rcmd_ok(node, f"ip link set {intf} netns {node.pid}")
        except RuntimeError as e:
            raise RuntimeError(f"cannot move {intf} into {node} on {node.server}: {e}") from None
        return True

    def makeTunnel(self, node1: Any, node2: Any, intfname1: str, intfname2: str, addr1: str | None = None,
                   addr2: str | None = None) -> Popen:
        assert node1.server != node2.server
        if node2.server == "localhost":
            return self.makeTunnel(node2, node1, intfname2, intfname1, addr2, addr1)
        made = []
        for node in (node1, node2):
            try:
                _rcmd_ok(node, "ip tuntap add dev tap9 mode tap user root")
            except RuntimeError as e:
                for other in made:  # the tap made on the first server would block the next tunnel there
                    other.rcmd(["ip", "link", "del", "tap9"])
                hint = " (no /dev/net/tun there: `modprobe tun` makes it)" if "No such file" in str(e) else ""
                raise RuntimeError(f"cannot make tap9 on {node.server} for {node}: {e}{hint}") from None
            made.append(node)
        cmd = [*ssh_base(tty=False), "-n", "-o", "Tunnel=Ethernet", "-w", "9:9", node2.dest, "echo @"]
        self.cmd = cmd
        tunnel = node1.rpopen(cmd, sudo=False)
        said = []  # what the remote shell printed before the "@" (start-up noise), or instead of it
        while (line := decode(tunnel.stdout.readline())) and line.strip() != "@":
            said.append(line)
        if not line:
            raise RuntimeError(f"no SSH tunnel from {node1.server} to {node2.server} for {node1}-{node2} "
                               f"({' '.join(cmd)}): {''.join(said).strip()}")
        for node in (node1, node2):
            self.moveIntf("tap9", node)
        for node, intf, addr in ((node1, intfname1, addr1), (node2, intfname2, addr2)):
            result = node.cmd("ip link set tap9 name", intf, *(("address", addr) if addr else ()),
                              "&& echo cdnlab-done")  # its exit status, not silence (_rcmd_ok)
            if "cdnlab-done" not in result:
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
        """Every server answers over SSH (testbed.net.servers), or stop naming the ones that do not; each one's
        facts (Mininet, Open vSwitch, netem) are kept in ``self.facts``."""
        missing = []
        self.facts: dict[str, server_access.ServerFacts] = {}
        for s in self.servers:
            if s == "localhost":
                continue
            f = server_access.probe(self.serverIP[s], rounds=0)
            if not f.reached:
                missing.append(f"{s}: {f.error} ({server_access.fix_for(f)})")
            self.facts[s] = f
        if missing:
            raise RuntimeError("servers not reached: " + "; ".join(missing))


def is_local(server: str) -> bool:
    """Is ``server`` this machine (``localhost``, a loopback address, or an address of one of its interfaces)?"""
    if server in server_access.LOCAL_NAMES:
        return True
    ip = mn_cluster.RemoteMixin.findServerIP(server)
    if ip is None:
        return False
    if ip.startswith("127."):
        return True
    r = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10)
    return any(f" {ip}/" in line for line in r.stdout.splitlines())


def management_address(servers: Sequence[str]) -> str:
    """This machine's address towards the other servers (``ip route get``'s source for the first other
    server): where the controller listens for their switches, and nothing else."""
    others = [s for s in servers if not is_local(s)]
    if not others:
        return "127.0.0.1"
    ip = mn_cluster.RemoteMixin.findServerIP(others[0])
    r = subprocess.run(["ip", "-o", "route", "get", str(ip)], capture_output=True, text=True, timeout=10)
    words = r.stdout.split()
    if r.returncode != 0 or "src" not in words:
        raise RuntimeError(f"no route from this machine to server {others[0]} ({ip}): {r.stderr.strip()}")
    return words[words.index("src") + 1]


class _RelayEnd:
    """The far end of a tunnel that ends in a relay's network namespace (:class:`ClusterRelayLink`): on the
    server of ``beside`` (a node there), in the relay process's namespace."""

    def __init__(self, relay: Any, beside: Any) -> None:
        self.relay = relay
        self.beside = beside
        self.name = f"relay{relay.number}"
        self.server, self.serverIP, self.dest = beside.server, beside.serverIP, beside.dest
        self.isRemote = beside.isRemote  # noqa: N815 - Mininet Cluster Edition's name
        self.pid = relay.ns_pid

    def __str__(self) -> str:
        return f"{self.name} on {self.server}"

    def rcmd(self, *cmd: Any, **opts: Any) -> str:
        return self.beside.rcmd(*cmd, **opts)  # that server's root namespace

    def rpopen(self, *cmd: Any, **opts: Any) -> Popen:
        return self.beside.rpopen(*cmd, **opts)

    def cmd(self, *args: Any) -> str:
        r = self.relay.run_in_ns(" ".join(str(a) for a in args))
        return r.stdout + r.stderr


class ClusterRelayLink(RelayLink, ClusterLink):
    """A relayed link (delay, loss, rate, queue in the userspace relay) that may join two servers.

    On one server it is a :class:`~testbed.net.links.RelayLink` whose relay runs on that server. Between two,
    the relay runs on the second node's server, and the tunnel ends in it: node1 -- SSH Ethernet tunnel
    (tap, renamed ``cdnr<N>a`` in the relay's namespace) -- relay -- veth -- node2. The relay's delay line
    and rate limit thus shape the link at the tunnel's endpoint, in the same mode as every other link; the
    tunnel's own latency comes on top (docs/cluster.md, timing).
    """

    def makeIntfPair(self, intfname1, intfname2, addr1=None, addr2=None, node1=None, node2=None,  # noqa: N802
                     deleteIntfs=True):  # noqa: N803
        node1 = self.node1 if node1 is None else node1
        node2 = self.node2 if node2 is None else node2
        if node1.server == node2.server:
            return RelayLink.makeIntfPair(self, intfname1, intfname2, addr1, addr2, node1, node2, deleteIntfs)
        self.relay = relay = self.pool.place()
        self.tunnel = self.makeTunnel(node1, _RelayEnd(relay, node2), intfname1, self.ra, addr1, None)
        self._made.append((node1, intfname1))
        self._serve(["link set lo up", self._veth_into(node2, intfname2, addr2, self.rb)],
                    self._outer_offloads(node2, intfname2))
        return self.tunnel

    def delete(self) -> None:
        tunnel, self.tunnel = self.tunnel, None
        super().delete()
        if tunnel is not None:
            tunnel.terminate()
            try:
                tunnel.wait(10)
            except subprocess.TimeoutExpired:
                tunnel.kill()
                tunnel.wait()

    def stop(self) -> None:
        self.delete()


@functools.cache
def cluster_link_class(base: type) -> type:
    """``base`` (a link class of testbed.net.links) that may also join nodes on two servers: its shaping
    applied at the tunnel's endpoints, in the same mode as every other link."""
    return type(f"Cluster{base.__name__}", (base, ClusterLink), {})


__all__ = ["CdnCluster", "ClusterHost", "ClusterLink", "ClusterRelayLink", "ClusterSwitch", "cluster_link_class",
           "is_local",
           "management_address", "ssh_base"]
