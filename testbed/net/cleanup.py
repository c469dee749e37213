"""``cdnlab clean``: remove exactly what cdnlab created — also after the run was killed with SIGKILL.

It reads the run records in ``/run/cdnlab`` (see :mod:`testbed.net.state`): kills only the recorded
processes that are still the same processes (PID and start time match), deletes only the recorded OVS
bridges, interfaces, named namespaces and root-namespace guard routes, and restores the sysctls the run
changed. It never kills by name (no ``killall``/``pkill -f``/``mn -c``). Runs whose owner is still alive
are left alone unless ``--force`` is given. ``--servers A,B`` also runs it on each other server of a run
across several (their records: :mod:`testbed.net.remote_record`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time

from testbed.net import host_env
from testbed.net.containment import GuardRoute, remove_guard_routes
from testbed.net.state import RunState, all_states, owner_alive, same_process


def _kill_all(state: RunState, grace: float = 3.0) -> list[str]:
    done = []
    live = [t for t in state.pids if same_process(t)]
    for t in live:
        try:
            os.kill(t.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(same_process(t) for t in live):
        time.sleep(0.02)
    for t in live:
        if same_process(t):
            try:
                os.kill(t.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        done.append(f"process {t.pid} ({t.role})")
    return done


def netns_inode(pid: int | str) -> int | None:
    """The inode number of process ``pid``'s network namespace (None if it is gone)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _kill_namespaces(inodes: list[int], grace: float = 3.0) -> list[str]:
    """Stop every process in the network namespaces ``inodes`` (SIGTERM, SIGKILL after ``grace``)."""
    if not inodes:
        return []
    want = set(inodes)

    def inside() -> list[int]:
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
                and netns_inode(p) in want]

    found = inside()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in inside():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while inside() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not inside():
            break
    return [f"process {pid} (in a host's namespace)" for pid in found]


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def clean_state(state: RunState, quiet: bool = False) -> list[str]:
    """Undo one run; returns what was removed (for the report)."""
    removed = _kill_all(state)
    removed += _kill_namespaces(state.namespaces)
    if state.bridges and host_env.ovs_running():
        existing = set(host_env.run(["ovs-vsctl", "--timeout=10", "list-br"]).stdout.split())
        gone = [b for b in state.bridges if b in existing]
        if gone:
            cmd = ["ovs-vsctl", "--timeout=20"]
            for b in gone:
                cmd += ["--", "--if-exists", "del-br", b]
            host_env.run(cmd, timeout=60)
            removed += [f"bridge {b}" for b in gone]
    for intf in state.interfaces:
        if _link_exists(intf):
            host_env.run(["ip", "link", "del", intf])
            removed.append(f"interface {intf}")
    for ns in state.netns:
        if os.path.exists(f"/run/netns/{ns}"):
            host_env.run(["ip", "netns", "del", ns])
            removed.append(f"namespace {ns}")
    if state.routes:
        gone = remove_guard_routes([GuardRoute(**r) for r in state.routes])
        removed += [f"guard route unreachable {r.dst} metric {r.metric}" for r in gone]
    for name, value in state.sysctls.items():
        try:
            host_env.write_sysctl(name, value)
            removed.append(f"sysctl {name} restored to {value}")
        except OSError:
            pass
    state.remove()
    return removed


def clean_all(force: bool = False, quiet: bool = False) -> list[str]:
    removed: list[str] = []
    for st in all_states():
        if owner_alive(st) and st.owner_pid != os.getpid() and not force:
            if not quiet:
                print(f"cdnlab clean: run {st.run_id} is still running (pid {st.owner_pid}); --force to remove it")
            continue
        removed += clean_state(st, quiet=quiet)
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab clean", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--force", action="store_true", help="also remove runs whose owner is still alive")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--servers", metavar="A,B,...",
                    help="also clean these servers of a run across several (`cdnlab clean` on each, over SSH as "
                    "root): what a run left there when its front end and its keeper were killed")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("cdnlab clean: needs root (sudo cdnlab clean)")
        return 1
    try:
        removed = clean_all(args.force, args.quiet)
    except subprocess.TimeoutExpired as e:
        print(f"cdnlab clean: timed out: {e}")
        return 1
    if not args.quiet:
        print("\n".join(f"removed {r}" for r in removed) if removed else "cdnlab clean: nothing to remove")
    status = 0
    if args.servers is not None:
        from testbed.net.placement import parse_servers
        from testbed.net.remote_record import clean_servers

        try:
            names = parse_servers(args.servers)
        except ValueError as e:
            print(f"cdnlab clean: {e}")
            return 2
        for server, (rc, out) in clean_servers(names, args.force).items():
            for line in out.splitlines() or [""]:
                if line or rc:
                    print(f"{server}: {line}" if line else f"{server}: failed (exit {rc})")
            status = status or (1 if rc else 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
