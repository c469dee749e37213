"""A second server on this machine, for the cluster tests: its own network, mount, UTS and PID namespaces, its
own ``sshd`` and its own Open vSwitch daemons and database, joined to this machine by a veth pair standing in
for the LAN between two lab machines. (Its own PID namespace also keeps what runs there, ``mn -c`` of Mininet
Cluster Edition's clean-up included, from touching this machine's processes; when its first process, the
sshd, ends, the kernel ends everything else there.)

The server's network namespace is named (``ip netns``: ``cdnlab-srv-<id>``); its mount namespace has a tmpfs
on ``/run`` (so ``/run/openvswitch`` and ``/run/sshd`` are its own) and its own ``/etc/openvswitch``,
``/var/log/openvswitch`` and ``/etc/shadow`` (directories of the test's), so ``ovs-vsctl`` run there over SSH talks to the
server's own database; its host name is ``cdnlab-server2``. The LAN is a /30 that clashes with no network
of this machine (:func:`free_lan`; 172.31.254.0/30 where free): this machine has its first address, the
server the second. :meth:`SecondServer.stop` stops
the server's Open vSwitch (``ovs-ctl stop`` in its namespaces) and its sshd, then removes the veth pair and
the namespace: exactly what :meth:`start` made.
"""

from __future__ import annotations

import ipaddress
import secrets
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from sshd import SSHD

from testbed.net.containment import USUAL_MACHINE_NETWORKS, machine_networks
from testbed.util import stop_process, tcp_open

#: blocks the LAN may take, the first that overlaps no network of this machine (nor the usual VM and
#: container networks, nor the shipped topologies' 10.0-99)
LAN_CANDIDATES = ("172.31.254.0/30", "172.31.253.0/30", "10.254.254.0/30")


def free_lan() -> tuple[str, str]:
    """(this machine's address, the server's) on a /30 that clashes with nothing on this machine."""
    taken = [m.network for m in machine_networks()] + [ipaddress.IPv4Network(n) for n in USUAL_MACHINE_NETWORKS]
    for block in map(ipaddress.IPv4Network, LAN_CANDIDATES):
        if not any(block.overlaps(t) for t in taken):
            a, b = list(block.hosts())
            return str(a), str(b)
    raise RuntimeError(f"every LAN block the second server may use is taken here: {', '.join(LAN_CANDIDATES)}")
HOSTNAME = "cdnlab-server2"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


def _run(*argv: str, timeout: float = 60) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
    return r.stdout


class SecondServer:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.id = secrets.token_hex(3)
        self.netns = f"cdnlab-srv-{self.id}"
        self.veth = (f"cdl{self.id}a", f"cdl{self.id}b")  # this machine's end, the server's
        self.config = tmp / "ssh_config"  # CDNLAB_SSH_CONFIG: `Host 192.0.2.2` with the test's key
        self.proc: subprocess.Popen | None = None  # the server's sshd (after the set-up shell execs it)
        self.made: list[str] = []
        self.lan = free_lan()  # (this machine's address, the server's)

    @property
    def address(self) -> str:
        return self.lan[1]

    def _keys(self) -> None:
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / name)], check=True,
                           timeout=30)
        shutil.copy(self.dir / "client_key.pub", self.dir / "authorized_keys")
        d = self.dir
        (d / "sshd_config").write_text(
            f"Port 22\nListenAddress {self.lan[1]}\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nUseDNS no\nPrintMotd no\nPermitTunnel yes\nPidFile none\n")
        self.config.write_text(
            f"Host {self.lan[1]} {HOSTNAME}\n  HostName {self.lan[1]}\n  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {d / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n")

    def start(self, timeout: float = 60.0) -> SecondServer:
        if not SSHD.exists():
            raise RuntimeError(f"{SSHD} is missing: `sudo make setup` installs openssh-server")
        d = self.dir
        self._keys()
        for sub in ("etc-ovs", "log-ovs"):
            (d / sub).mkdir()
        _run("ip", "netns", "add", self.netns)
        self.made.append("netns")
        _run("ip", "link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])
        self.made.append("veth")
        _run("ip", "link", "set", self.veth[1], "netns", self.netns)
        _run("ip", "addr", "add", f"{self.lan[0]}/30", "dev", self.veth[0])
        _run("ip", "link", "set", self.veth[0], "up")
        for cmd in (("ip", "addr", "add", f"{self.lan[1]}/30", "dev", self.veth[1]), ("ip", "link", "set", self.veth[1], "up"),
                    ("ip", "link", "set", "lo", "up")):
            _run("ip", "netns", "exec", self.netns, *cmd)
        setup = " && ".join([
            "mount -t tmpfs cdnlab-srv-run /run",
            "mkdir -p /run/openvswitch /run/sshd /run/netns",
            f"mount --bind {d / 'etc-ovs'} /etc/openvswitch",
            f"mount --bind {d / 'log-ovs'} /var/log/openvswitch",
            f"hostname {HOSTNAME}",
            # root's password locked ('!', as in the VM of `make test-vm`) makes an sshd without PAM refuse
            # even a key ("account is locked"): the server gets its own /etc/shadow with root's key login open
            f"sed 's/^root:!/root:*/' /etc/shadow > {d / 'shadow'}",
            f"chmod 600 {d / 'shadow'}",
            f"mount --bind {d / 'shadow'} /etc/shadow",
            f"({OVS_CTL} start --system-id=random > {d / 'ovs-start.log'} 2>&1)",
            f"exec {SSHD} -D -e -f {d / 'sshd_config'}",
        ])
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child",
             "--mount-proc", "--propagation", "private", "sh", "-c", setup],
            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))  # noqa: SIM115
        self.made.append("sshd")
        deadline = time.monotonic() + timeout
        while True:
            if self._sshd_listens() and self._ovs_answers():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the second server's set-up exited {self.proc.returncode}: "
                                   f"{(d / 'sshd.log').read_text()[-600:]} {self._read('ovs-start.log')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the second server did not come up in {timeout:g} s: "
                                   f"{(d / 'sshd.log').read_text()[-600:]} {self._read('ovs-start.log')}")
            time.sleep(0.2)

    def _read(self, name: str) -> str:
        p = self.dir / name
        return p.read_text()[-600:] if p.exists() else ""

    def in_server(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``argv`` in the server's namespaces (network, mount, UTS), as its sshd's sessions do."""
        assert self.proc is not None
        return subprocess.run(["nsenter", "-t", str(self.proc.pid), "-n", "-m", "-u", *argv], capture_output=True,
                              text=True, timeout=timeout)

    def _sshd_listens(self) -> bool:
        return tcp_open(self.lan[1], 22)  # from this machine, over the LAN, as a client connects

    def _in_its_namespaces(self) -> bool:
        """Whether the set-up shell has entered the server's namespaces yet (before, nsenter would enter
        this machine's)."""
        assert self.proc is not None
        try:
            return all(Path(f"/proc/{self.proc.pid}/ns/{ns}").readlink() != Path(f"/proc/self/ns/{ns}").readlink()
                       for ns in ("net", "mnt", "uts"))
        except OSError:
            return False

    def _ovs_answers(self) -> bool:
        return self._in_its_namespaces() and self.in_server("ovs-vsctl", "--timeout=2", "show").returncode == 0

    def stop(self) -> None:
        if "sshd" in self.made and self.proc is not None:
            if self.proc.poll() is None:
                self.in_server(OVS_CTL, "stop", timeout=60)  # the server's own daemons, by its own pidfiles
            stop_process(self.proc, timeout=10)
        if "veth" in self.made:
            subprocess.run(["ip", "link", "del", self.veth[0]], capture_output=True, timeout=30)
        if "netns" in self.made:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        self.made.clear()
