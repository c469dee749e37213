"""Facts about this machine that decide how cdnlab emulates: OVS datapath, netem, sysctls, offloads.

Open vSwitch's kernel datapath is used where the ``openvswitch`` module exists; otherwise the userspace
(netdev) datapath, which needs TX offloads off on every veth (else TCP stalls on bad checksums/GSO frames)
and larger default socket buffers (its per-port raw sockets drop under load otherwise).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

# socket-buffer defaults raised while a userspace-datapath network runs (restored on stop / clean)
USERSPACE_SYSCTLS = {
    "net.core.rmem_max": 16 * 1024 * 1024,
    "net.core.wmem_max": 16 * 1024 * 1024,
    "net.core.rmem_default": 4 * 1024 * 1024,
    "net.core.wmem_default": 4 * 1024 * 1024,
}
OFFLOADS_OFF = ("tx", "off", "tso", "off", "gso", "off", "gro", "off")


def run(cmd: list[str], check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def ovs_running() -> bool:
    if not shutil.which("ovs-vsctl"):
        return False
    try:
        return run(["ovs-vsctl", "--timeout=5", "show"], timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def emulation_missing() -> str | None:
    """What this machine lacks to build an emulated network (root, Mininet, Open vSwitch installed and
    running), with the fix; None when nothing is missing. The Mininet test tier, the graders' network stage
    and the commands that build a network all ask this one question."""
    if os.geteuid() != 0:
        return "needs root (sudo)"
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "Mininet is not importable (run `sudo make setup`, or use the Vagrant VM)"
    if not shutil.which("ovs-vsctl"):
        return "Open vSwitch is not installed (run `sudo make setup`)"
    if not ovs_running():
        return "Open vSwitch is not running (run `sudo make setup`, or `/usr/share/openvswitch/scripts/ovs-ctl start`)"
    return None


@functools.cache
def kernel_ovs_available() -> bool:
    """True when the openvswitch kernel module is loaded or loadable."""
    if Path("/sys/module/openvswitch").exists():
        return True
    if shutil.which("modprobe") and os.geteuid() == 0:
        try:
            return run(["modprobe", "openvswitch"], timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False
    return False


def ovs_datapath(preference: str = "auto") -> str:
    """'kernel' or 'user'. ``preference`` may force one; forcing 'kernel' where absent is an error."""
    if preference == "user":
        return "user"
    if kernel_ovs_available():
        return "kernel"
    if preference == "kernel":
        raise RuntimeError("the openvswitch kernel module is not available here; use --datapath user")
    return "user"


def read_sysctl(name: str) -> str:
    return Path("/proc/sys/" + name.replace(".", "/")).read_text().strip()


def write_sysctl(name: str, value: str | int) -> None:
    Path("/proc/sys/" + name.replace(".", "/")).write_text(str(value))


def offloads_off_command(intfs: list[str]) -> str:
    """A shell command turning TX offloads off on every interface of ``intfs`` (errors ignored)."""
    return "; ".join(f"ethtool -K {i} {' '.join(OFFLOADS_OFF)} >/dev/null 2>&1" for i in intfs) or "true"


def offloads_off_network(net) -> None:
    """TX offloads off on every interface of a built Mininet network, before any traffic: OVS's userspace
    datapath and the relays copy frames verbatim, so a TSO/GSO super-frame or a missing checksum would
    reach the wire as is. One command per host and one for all the switches' interfaces."""
    offloads_off([i.name for s in net.switches for i in s.intfList()
                  if i.name != "lo" and not getattr(s, "isRemote", False)])
    for s in net.switches:  # a switch on another server of a cluster: that server's root namespace
        if getattr(s, "isRemote", False):
            offloads_off([i.name for i in s.intfList() if i.name != "lo"], node=s)
    for h in net.hosts:
        offloads_off([i.name for i in h.intfList() if i.name != "lo"], node=h)


def offloads_off(intf: str | list[str], node=None) -> None:
    """Turn TX offloads off on one interface or a list of them, with one shell (in ``node``'s namespace
    when given, else the root namespace)."""
    intfs = [intf] if isinstance(intf, str) else list(intf)
    if not intfs:
        return
    if node is not None:
        node.cmd(offloads_off_command(intfs))
    else:
        subprocess.run(["sh", "-c", offloads_off_command(intfs)], capture_output=True, timeout=120)
