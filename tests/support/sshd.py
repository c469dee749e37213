"""An OpenSSH server of a test's own on loopback, standing in for a second server of a cluster.

It runs Debian's ``/usr/sbin/sshd`` in the foreground (``-D -e``) on 127.0.0.1 and a free port, with its own
host key, an authorized key made for the test and its own ``ssh_config`` naming it (``Host NAME``), so
``ssh -F CONFIG root@NAME`` reaches this machine as a cluster server would be reached. Nothing of the
machine's own SSH set-up is read or changed; :meth:`Sshd.stop` ends the one process it started and removes
``/run/sshd`` only if it made it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from testbed.util import free_port, stop_process, tcp_open

SSHD = Path("/usr/sbin/sshd")
PRIVSEP = Path("/run/sshd")  # sshd's privilege separation directory: it refuses to start without it


class Sshd:
    def __init__(self, tmp: Path, names: tuple[str, ...] = ("lab2",)) -> None:
        self.dir = tmp
        self.port = free_port()
        self.names = names
        self.config = tmp / "ssh_config"  # what CDNLAB_SSH_CONFIG points at
        self.proc: subprocess.Popen | None = None
        self.made_privsep = False

    def _keygen(self, path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)

    def start(self, timeout: float = 15.0) -> Sshd:
        d = self.dir
        self._keygen(d / "host_key")
        self._keygen(d / "client_key")
        self._keygen(d / "stranger_key")  # a key the server does not know
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nUseDNS no\nPrintMotd no\n")
        hosts = "".join(
            f"Host {name}\n  HostName 127.0.0.1\n  Port {self.port}\n  IdentityFile {d / key}\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {d / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
            for name, key in [(n, "client_key") for n in self.names] + [("stranger", "stranger_key")])
        self.config.write_text(hosts)
        if not PRIVSEP.exists():
            PRIVSEP.mkdir(mode=0o755)
            self.made_privsep = True
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))  # noqa: SIM115
        deadline = time.monotonic() + timeout
        while not tcp_open("127.0.0.1", self.port, timeout=0.2):
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {(d / 'sshd.log').read_text()[-800:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd not listening on 127.0.0.1:{self.port} after {timeout:g} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
        if self.made_privsep:
            shutil.rmtree(PRIVSEP, ignore_errors=True)
