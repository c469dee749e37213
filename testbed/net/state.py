"""What a cdnlab run created, recorded so that ``cdnlab clean`` removes exactly that — also after SIGKILL.

Each run writes ``/run/cdnlab/<run-id>.json`` (override with ``CDNLAB_STATE_DIR``) listing the processes
it started (PID plus kernel start time, so a recycled PID is never killed), the OVS bridges, root-namespace
interfaces, named network namespaces, root-namespace guard routes and (on the other servers of a run
across several) the network namespaces of its hosts it made. The file is rewritten atomically at every addition and
removed after a clean stop. ``cdnlab clean`` only touches what a record lists. Link relays live in
unnamed namespaces owned by their process (their veths are named ``cdnr<N>a/b``), so they vanish with it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path


def state_dir() -> Path:
    return Path(os.environ.get("CDNLAB_STATE_DIR", "/run/cdnlab"))


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces or parentheses: split after the last ')'
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[19])


@dataclass
class TrackedPid:
    pid: int
    start: int | None
    role: str


@dataclass
class RunState:
    """The record of one run. Create with :meth:`new`; every ``add_*`` persists immediately."""

    run_id: str
    owner_pid: int
    created: float
    owner_start: int | None = None
    pids: list[TrackedPid] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)  # name -> value to restore
    # root-namespace guard routes (testbed.net.containment.GuardRoute fields: dst, metric)
    routes: list[dict] = field(default_factory=list)
    #: network namespaces (their inode numbers) every process of which this run started: the emulated hosts
    #: on another server of a run across several, whose services the front end reached only through ssh
    namespaces: list[int] = field(default_factory=list)
    path: Path | None = None

    @classmethod
    def new(cls, label: str = "run") -> RunState:
        pid = os.getpid()
        st = cls(run_id=f"{label}-{uuid.uuid4().hex[:8]}", owner_pid=pid, created=time.time())
        st.owner_start = proc_start_time(pid)
        d = state_dir()
        d.mkdir(parents=True, exist_ok=True)
        st.path = d / f"{st.run_id}.json"
        st.save()
        return st

    # -- recording -------------------------------------------------------------------------------
    def add_pid(self, pid: int, role: str) -> None:
        self.add_pids([(pid, role)])

    def add_pids(self, pids: list[tuple[int, str]]) -> None:
        """Record several processes (PID, role) with one write."""
        self.pids += [TrackedPid(pid, proc_start_time(pid), role) for pid, role in pids]
        self.save()

    def add_bridge(self, name: str) -> None:
        self.add_bridges([name])

    def add_bridges(self, names: list[str]) -> None:
        """Record several OVS bridges with one write."""
        new = [n for n in names if n not in self.bridges]
        if new:
            self.bridges += new
            self.save()

    def add_interface(self, name: str) -> None:
        self.add_interfaces([name])

    def add_interfaces(self, names: list[str]) -> None:
        """Record several interfaces with one write."""
        new = [n for n in names if n not in self.interfaces]
        if new:
            self.interfaces += new
            self.save()

    def add_netns(self, name: str) -> None:
        if name not in self.netns:
            self.netns.append(name)
            self.save()

    def add_sysctl(self, name: str, old_value: str) -> None:
        """Record a sysctl's value before cdnlab changed it (the first recorded value wins)."""
        self.sysctls.setdefault(name, old_value)
        self.save()

    def add_routes(self, routes: list[dict]) -> None:
        self.routes += [r for r in routes if r not in self.routes]
        self.save()

    def add_namespaces(self, inodes: list[int]) -> None:
        self.namespaces += [i for i in inodes if i not in self.namespaces]
        self.save()

    def forget_pid(self, pid: int) -> None:
        self.pids = [p for p in self.pids if p.pid != pid]
        self.save()

    # -- persistence -----------------------------------------------------------------------------
    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("path")
        return d

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(self.path)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> RunState:
        d = json.loads(path.read_text())
        st = cls(
            run_id=d["run_id"],
            owner_pid=d["owner_pid"],
            created=d["created"],
            owner_start=d.get("owner_start"),
            pids=[TrackedPid(**p) for p in d.get("pids", [])],
            bridges=list(d.get("bridges", [])),
            interfaces=list(d.get("interfaces", [])),
            netns=list(d.get("netns", [])),
            sysctls=dict(d.get("sysctls", {})),
            routes=list(d.get("routes", [])),
            namespaces=[int(i) for i in d.get("namespaces", [])],
        )
        st.path = path
        return st


def all_states() -> list[RunState]:
    """Every recorded run on this machine (unreadable files are skipped)."""
    out = []
    d = state_dir()
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            try:
                out.append(RunState.load(p))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return out


def owner_alive(st: RunState) -> bool:
    """True while the process that made this run is still running."""
    return same_process(TrackedPid(st.owner_pid, st.owner_start, "owner"))


def same_process(t: TrackedPid) -> bool:
    """True if ``t`` still names the process we started (not a recycled PID)."""
    now = proc_start_time(t.pid)
    return now is not None and (t.start is None or now == t.start)
