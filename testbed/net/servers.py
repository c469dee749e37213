"""The servers of a run that spans several (Mininet Cluster Edition): reaching each one and asking what it has.

cdnlab reaches a server as Mininet Cluster Edition does: over SSH, non-interactively (``BatchMode``: a
key, never a password prompt), as root (``root@SERVER`` unless the name says ``user@``). ``localhost`` is
this machine, asked without SSH. ``CDNLAB_SSH_CONFIG`` names an ssh_config(5) file used instead of
``~/.ssh/config`` (the tests' own sshd on loopback).

:func:`probe` runs one small Python program on the server (``python3 -c``, in the root namespace of that
server: it sends nothing to any emulated network) that prints what the server has (Mininet, Open vSwitch,
the kernel's netem and openvswitch modules) and then answers time requests, from which the clock offset is
taken NTP's way (RFC 5905, section 8: offset = remote - midpoint of the request's round trip, from the
round with the shortest round trip; its half round trip bounds the error).
"""

from __future__ import annotations

import json
import os
import select
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.util import stop_process

#: how cdnlab calls ssh: never prompt (a key or nothing), give up on a dead server soon
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5")
#: time requests per probe (the one with the shortest round trip gives the offset)
CLOCK_ROUNDS = 8
LOCAL_NAMES = ("localhost", "127.0.0.1")

#: what the server runs: its facts as one JSON line, then its clock's time for every line it reads
FACTS_PROGRAM = r"""
import json, os, platform, subprocess, sys, time
def run(*argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return r.returncode, r.stdout.strip()
    except Exception as e:
        return -1, str(e)
def module(name):
    return os.path.isdir("/sys/module/" + name) or run("modprobe", "-n", "-q", name)[0] == 0
facts = {"hostname": platform.node(), "kernel": platform.release(), "root": os.geteuid() == 0,
         "python": platform.python_version()}
try:
    from mininet.net import VERSION
    facts["mininet"] = VERSION
except Exception:
    facts["mininet"] = None
rc, out = run("ovs-vsctl", "--version")
facts["ovs_version"] = out.splitlines()[0].split()[-1] if rc == 0 and out else None
facts["ovs_running"] = run("ovs-vsctl", "--timeout=3", "show")[0] == 0
facts["netem"] = module("sch_netem")
facts["kernel_ovs"] = module("openvswitch")
if len(sys.argv) > 2:  # cdnlab where the first server has it: its Python and its checkout
    facts["cdnlab"] = os.access(sys.argv[1], os.X_OK) and os.path.isfile(os.path.join(sys.argv[2], "testbed", "net", "relay.py"))
print(json.dumps(facts), flush=True)
for _ in sys.stdin:
    print(repr(time.time()), flush=True)
"""


@dataclass
class ServerFacts:
    """What one server has, as :func:`probe` found it (``reached`` False: ``error`` says why)."""

    server: str
    reached: bool
    error: str = ""
    hostname: str | None = None
    kernel: str | None = None
    root: bool = False
    python: str | None = None
    mininet: str | None = None
    ovs_version: str | None = None
    ovs_running: bool = False
    netem: bool = False
    kernel_ovs: bool = False
    #: cdnlab at this machine's path there (its Python and checkout): a run starts its programs by that path
    cdnlab: bool | None = None
    #: the server's clock minus this machine's (ms), and the most it may be off by (half the round trip)
    clock_offset_ms: float | None = None
    clock_error_ms: float | None = None
    via: list[str] = field(default_factory=list)

    @property
    def link_mode(self) -> str:
        """The link emulation a run would use there (testbed.net.links: netem where the kernel has it)."""
        return "netem" if self.netem else "relay"

    @property
    def datapath(self) -> str:
        return "kernel" if self.kernel_ovs else "user"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "link_mode": self.link_mode if self.reached else None,
                "datapath": self.datapath if self.reached else None}


def destination(server: str) -> str:
    """``root@SERVER`` unless the name has its own user."""
    return server if "@" in server else f"root@{server}"


def ssh_argv() -> list[str]:
    """``ssh`` as cdnlab calls it: :data:`SSH_OPTIONS`, and the ssh_config of ``CDNLAB_SSH_CONFIG`` when set."""
    config = os.environ.get("CDNLAB_SSH_CONFIG")
    return ["ssh", *(["-F", config] if config else []), *SSH_OPTIONS]


def command(server: str, argv: Sequence[str]) -> list[str]:
    """The command that runs ``argv`` on ``server`` (directly for ``localhost``)."""
    if server in LOCAL_NAMES:
        return list(argv)
    return [*ssh_argv(), destination(server), shlex.join(argv)]


def _python(server: str) -> str:
    """The Python the facts are asked with: ``/usr/bin/python3``, since Debian's mininet is visible to it
    only. On this machine, if it has none, the Python running cdnlab (whose facts then say what is missing)."""
    if server in LOCAL_NAMES and not Path("/usr/bin/python3").exists():
        return sys.executable
    return "/usr/bin/python3"


#: this checkout of cdnlab (every server of a run needs it at the same path: docs/cluster.md)
REPO_ROOT = Path(__file__).resolve().parents[2]


def module_argv(module: str, *args: str, prefix: Sequence[str] = ()) -> list[str]:
    """``python -m module args`` of this checkout with this Python, as another server runs it (the same paths
    there), after ``prefix`` (e.g. ``mnexec -n``)."""
    return ["env", f"PYTHONPATH={REPO_ROOT}", *prefix, sys.executable, "-m", module, *args]


def readline(proc: subprocess.Popen, deadline: float) -> str | None:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if ready:
            line = proc.stdout.readline()
            return line if line else None
        if proc.poll() is not None:
            return None
    return None


def probe(server: str, timeout: float = 20.0, rounds: int = CLOCK_ROUNDS) -> ServerFacts:
    """Reach ``server`` and ask what it has, and how far its clock is from this machine's."""
    argv = command(server, [_python(server), "-c", FACTS_PROGRAM, sys.executable, str(REPO_ROOT)])
    facts = ServerFacts(server=server, reached=False, via=argv[: argv.index(destination(server)) + 1]
                        if server not in LOCAL_NAMES else [])
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, bufsize=1)
    except OSError as e:
        facts.error = f"cannot run {argv[0]}: {e}"
        return facts
    try:
        line = readline(proc, deadline)
        if line is None:
            proc.kill()
            _, err = proc.communicate(timeout=5)
            last = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
            facts.error = last[-1] if last else (
                f"no answer within {timeout:g} s" if proc.returncode in (None, -9) else f"exit {proc.returncode}")
            return facts
        try:
            got = json.loads(line)
        except json.JSONDecodeError:
            facts.error = f"unexpected answer: {line.strip()[:200]!r}"
            return facts
        for k, v in got.items():
            if k in ServerFacts.__dataclass_fields__ and k not in ("server", "reached", "error", "via"):
                setattr(facts, k, v)
        facts.reached = True
        best: tuple[float, float] | None = None  # (round trip, offset) in s
        assert proc.stdin is not None
        for _ in range(rounds):
            t0 = time.time()
            proc.stdin.write("t\n")
            proc.stdin.flush()
            answer = readline(proc, deadline)
            t1 = time.time()
            if answer is None:
                break
            try:
                offset = float(answer) - (t0 + t1) / 2
            except ValueError:
                break
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, offset)
        if best is not None:
            facts.clock_offset_ms = round(best[1] * 1000, 3)
            facts.clock_error_ms = round(best[0] * 1000 / 2, 3)
        return facts
    finally:
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()  # the program's end of input: it stops
            except OSError:
                pass
        stop_process(proc, timeout=5, first=None)


#: a clock offset past this is worth fixing: a cross-server link is held to max(1 ms, 2 %) of its delay
CLOCK_LIMIT_MS = 1.0


def fix_for(f: ServerFacts) -> str:
    """What to do so ``f.server`` can take part in a run (empty: nothing)."""
    if not f.reached:
        err = f.error.lower()
        if "permission denied" in err or "publickey" in err:
            return (f"give this machine's root key to {destination(f.server)}: ssh-copy-id {destination(f.server)} "
                    "(passwordless SSH as root, as Mininet Cluster Edition expects; docs/cluster.md)")
        if "host key verification" in err:
            return f"accept {f.server}'s host key once: ssh {destination(f.server)} true"
        if "could not resolve" in err or "name or service not known" in err:
            return f"name {f.server} in /etc/hosts or DNS, or give its address in --servers"
        if "python3" in err and "not found" in err:
            return f"install Python 3 on {f.server}: apt install python3"
        return f"make `ssh {destination(f.server)} true` work without a password from this machine (docs/cluster.md)"
    fixes = []
    if not f.root:
        fixes.append(f"log in as root on {f.server} (the name {destination(f.server)})")
    if not f.mininet:
        fixes.append(f"install Mininet on {f.server}: apt install mininet")
    if not f.ovs_running:
        fixes.append(f"start Open vSwitch on {f.server}: /usr/share/openvswitch/scripts/ovs-ctl start")
    if f.cdnlab is False:
        fixes.append(f"put this version of cdnlab at {REPO_ROOT} on {f.server} and run `sudo make setup` there "
                     f"(a run starts its programs there with {sys.executable})")
    return "; ".join(fixes)


def disagreements(local: ServerFacts, others: Sequence[ServerFacts]) -> dict[str, list[str]]:
    """Where the reached servers differ from this machine in what a run needs alike, by kind: ``mininet``
    (the same version everywhere), ``links`` (one link emulation) and ``clock`` (offsets past
    :data:`CLOCK_LIMIT_MS`, beyond the measurement's own error)."""
    out: dict[str, list[str]] = {"mininet": [], "links": [], "clock": []}
    reached = [f for f in others if f.reached]
    for f in reached:
        if f.mininet and local.mininet and f.mininet != local.mininet:
            out["mininet"].append(f"{f.server} has Mininet {f.mininet}, this machine {local.mininet}")
    modes = {f.server: f.link_mode for f in [local, *reached]}
    if len(set(modes.values())) > 1:
        out["links"].append("link emulation differs: " + ", ".join(f"{s} {m}" for s, m in modes.items()))
    for f in reached:
        if f.clock_offset_ms is not None and abs(f.clock_offset_ms) > CLOCK_LIMIT_MS + (f.clock_error_ms or 0):
            out["clock"].append(f"{f.server}'s clock is {f.clock_offset_ms:+.1f} ms off this machine's")
    return out


def describe(f: ServerFacts) -> str:
    """One line: what ``f.server`` has."""
    if not f.reached:
        return f"{f.server}: not reached: {f.error}"
    clock = (f"clock {f.clock_offset_ms:+.2f} ms (±{f.clock_error_ms:.2f})" if f.clock_offset_ms is not None
             else "clock not measured")
    return (f"{f.server} ({f.hostname}, Linux {f.kernel}): Mininet {f.mininet or 'missing'}, Open vSwitch "
            f"{f.ovs_version or 'missing'} ({'running' if f.ovs_running else 'not running'}, {f.datapath} datapath), "
            f"links by {f.link_mode}, {clock}")
