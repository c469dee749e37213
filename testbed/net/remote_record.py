"""A run's record on each other server of a run across several (Mininet Cluster Edition; docs/cluster.md).

``cdnlab clean`` removes exactly what a run made, from the run's record (:mod:`testbed.net.state`); a run
across servers makes bridges, interfaces, hosts and guard routes on every server, so every server keeps
its own record. On each other server a *keeper* writes it::

    ssh root@SERVER env PYTHONPATH=REPO PYTHON -m testbed.net.remote_record --label RUN

The keeper owns that server's record (its owner is the keeper) and reads one JSON request a line on its
standard input, answering each with one line, ``{"ok": true}`` or ``{"ok": false, "error": "..."}``:

* ``{"guard": ["10.2.0.0/16", ...]}``: the topology's blocks, refused if one overlaps a network of that
  server; else ``unreachable`` routes for them in its root namespace while the run is up, so nothing there
  sends emulated traffic out of its uplink (:mod:`testbed.net.containment`);
* ``{"bridges": [...]}``, ``{"interfaces": [...]}``: what the run made in its root namespace;
* ``{"hosts": [PID, ...]}``: the shells of the run's hosts there; every process in their network
  namespaces is the run's (the services the front end started over ssh among them);
* ``{"shells": [PID, ...]}``: the shells of its switches there (in the root namespace);
* ``{"sysctls": {NAME: VALUE}}``: the userspace datapath's socket buffers, raised where lower (and restored).

When its standard input closes it undoes the record (:func:`testbed.net.cleanup.clean_state`) and exits.
That happens when the front end stops the run, and also when the front end dies, SIGKILL included: the
ssh client then reads the end of its input and closes the session. A keeper that was killed itself leaves
its record, which ``cdnlab clean --servers A,B`` (``cdnlab clean`` on each server) removes.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any


class RemoteRecordError(RuntimeError):
    """A keeper could not be started, or refused or did not answer a request."""


# -- the keeper (runs on the other server) ---------------------------------------------------------------
def _handle(state: Any, req: dict[str, Any]) -> None:
    from testbed.net.cleanup import netns_inode
    from testbed.net.containment import add_guard_routes, machine_networks, overlap_errors

    if "guard" in req:
        nets = [ipaddress.IPv4Network(n) for n in req["guard"]]
        errors = overlap_errors(req.get("topology", "the topology"), nets, machine_networks())
        if errors:
            raise ValueError("; ".join(errors))
        routes = add_guard_routes(nets)
        state.add_routes([{"dst": r.dst, "metric": r.metric} for r in routes])
    if "bridges" in req:
        state.add_bridges([str(b) for b in req["bridges"]])
    if "interfaces" in req:
        state.add_interfaces([str(i) for i in req["interfaces"]])
    if "hosts" in req:
        inodes = [netns_inode(int(p)) for p in req["hosts"]]
        if None in inodes:
            raise ValueError(f"no such process: {[p for p, i in zip(req['hosts'], inodes, strict=True) if i is None]}")
        own = netns_inode(os.getpid())
        state.add_namespaces([i for i in inodes if i is not None and i != own])
        state.add_pids([(int(p), "host shell") for p in req["hosts"]])
    if "sysctls" in req:
        from testbed.net import host_env

        for name, value in dict(req["sysctls"]).items():
            if name not in host_env.USERSPACE_SYSCTLS:
                raise ValueError(f"sysctl {name!r} is not one a run sets ({', '.join(host_env.USERSPACE_SYSCTLS)})")
            old = host_env.read_sysctl(name)
            if int(old) < int(value):
                state.add_sysctl(name, old)
                host_env.write_sysctl(name, int(value))
    if "shells" in req:
        state.add_pids([(int(p), "switch shell") for p in req["shells"]])
    unknown = set(req) - {"guard", "topology", "bridges", "interfaces", "hosts", "shells", "sysctls"}
    if unknown:
        raise ValueError(f"unknown request fields: {', '.join(sorted(unknown))}")


def keep(label: str) -> int:
    """The keeper's loop (module docstring)."""
    from testbed.net.cleanup import clean_state
    from testbed.net.state import RunState

    state = RunState.new(label)
    print(json.dumps({"ok": True, "run_id": state.run_id, "pid": os.getpid()}), flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("a request is a JSON object")
                _handle(state, req)
                answer: dict[str, Any] = {"ok": True}
            except (ValueError, TypeError, KeyError, RuntimeError, OSError, subprocess.SubprocessError) as e:
                answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps(answer), flush=True)
    finally:
        clean_state(state, quiet=True)
    return 0


# -- the front end's side -----------------------------------------------------------------------------------
class RemoteRecord:
    """The keeper of one run's record on ``server`` (module docstring)."""

    timeout = 30.0

    def __init__(self, server: str, label: str) -> None:
        from testbed.net.servers import command, module_argv

        self.server = server
        argv = module_argv("testbed.net.remote_record", "--label", label)
        self.proc: subprocess.Popen | None = subprocess.Popen(
            command(server, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)
        first = self._answer()
        self.run_id = first.get("run_id")

    def _answer(self) -> dict[str, Any]:
        from testbed.net.servers import readline

        assert self.proc is not None
        line = readline(self.proc, time.monotonic() + self.timeout)
        if line is None:
            err = ""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read().strip()
            raise RemoteRecordError(f"the run's record on {self.server}: no answer from its keeper"
                                    + (f": {err[-600:]}" if err else ""))
        try:
            answer = json.loads(line)
        except ValueError:
            raise RemoteRecordError(f"the run's record on {self.server}: its keeper said {line.strip()[:300]!r}"
                                    ) from None
        if not answer.get("ok"):
            raise RemoteRecordError(f"on {self.server}: {answer.get('error')}")
        return answer

    def request(self, **req: Any) -> None:
        """Record ``req`` (module docstring); RemoteRecordError naming the server if refused."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise RemoteRecordError(f"the run's record on {self.server}: {e}") from e
        self._answer()

    def close(self, timeout: float = 60.0) -> None:
        """End the run on that server: the keeper removes everything recorded, then exits."""
        p = self.proc
        if p is None:
            return
        self.proc = None
        try:
            if p.stdin is not None:
                p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def clean_servers(servers: Sequence[str], force: bool = False) -> dict[str, tuple[int, str]]:
    """``cdnlab clean`` on each server (this machine's own names are skipped): {server: (status, output)}."""
    from testbed.net.servers import LOCAL_NAMES, command, module_argv

    out = {}
    for server in servers:
        if server in LOCAL_NAMES:
            continue
        argv = module_argv("testbed.net.cleanup", *(["--force"] if force else []))
        try:
            r = subprocess.run(command(server, argv), capture_output=True, text=True, timeout=120)
            out[server] = (r.returncode, (r.stdout + r.stderr).strip())
        except subprocess.TimeoutExpired:
            out[server] = (1, f"no answer within 120 s ({shlex.join(command(server, argv))})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.net.remote_record", description=__doc__.split("\n")[0])
    ap.add_argument("--label", default="run", help="the run record's name prefix")
    args = ap.parse_args(argv)
    return keep(args.label)


if __name__ == "__main__":
    raise SystemExit(main())
