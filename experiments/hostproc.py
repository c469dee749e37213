"""Processes in emulated hosts that can be waited for and stopped (stand-ins until ``CdnNet.popen`` is fixed).

``CdnNet.popen`` starts processes with ``start_new_session=True`` through Mininet's ``Host.popen``, which
prefixes ``mnexec -da <pid>``. ``mnexec -d`` forks when its caller already leads a process group (which
``start_new_session`` makes it), so the returned ``Popen`` is an ``mnexec`` parent that exits at once:
``wait()`` returns immediately (``experiments.common.run_drivers`` then reads no samples) and the real
process is orphaned (``CdnNet.stop`` does not stop it). Without ``start_new_session`` mnexec calls
``setsid`` itself and execs in place, so the PID is the process's own.

:func:`popen_in` starts a process that way and tracks it exactly as ``CdnNet.popen`` does (``cn.procs``,
the run state), so ``CdnNet.stop`` terminates it; :class:`TrackedServices` starts the CDN's services with
it (and gives the HTTP readiness probe more time, for topologies with long round trips);
:func:`run_drivers` is ``experiments.common.run_drivers`` on top of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.net.build import CdnNet
from testbed.net.cdn import HTTP_PORT, CdnServices


def popen_in(
    cn: CdnNet, host: str, cmd: list[str], role: str, log_name: str | None = None
) -> subprocess.Popen:
    """Start ``cmd`` inside ``host`` with its output in the run directory; tracked for ``CdnNet.stop``."""
    assert cn.state is not None and cn.run_dir is not None
    log_path = cn.run_dir / (log_name or f"{host}-{role}.out")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        p = cn.host(host).popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    cn.state.add_pid(p.pid, f"{role} on {host}")
    cn.procs[f"{host}:{role}"] = p
    return p


class TrackedServices(CdnServices):
    """:class:`CdnServices` whose processes are started with :func:`popen_in` (so they stop with the net).

    ``http_probe_timeout_s``: curl's time limit in the HTTP readiness checks (``CdnServices`` uses 1 s,
    less than the two round trips an HTTP check takes across a 2 s round-trip path).
    """

    http_probe_timeout_s = 1

    def _start(self, host: str, module: str, cfg: dict[str, Any], role: str) -> None:
        p = self._write(f"{host}-{role}", cfg)
        popen_in(
            self.cn,
            host,
            [sys.executable, "-m", module, "--config", str(p)],
            role,
            log_name=f"logs/{host}-{role}.out",
        )

    def _http_ready(self, host: str, ip: str, path: str) -> bool:
        out = self.cn.host(host).cmd(
            f"curl -s -o /dev/null -m {self.http_probe_timeout_s} -w '%{{http_code}}' http://{ip}:{HTTP_PORT}{path}"
        )
        return out.strip().endswith(("200", "302"))


def run_drivers(cn: CdnNet, configs: Mapping[str, dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Run ``testbed.measure.driver`` in each client host at once; wait for all; return every sample."""
    assert cn.run_dir is not None
    ddir = cn.run_dir / "drivers"
    ddir.mkdir(parents=True, exist_ok=True)
    start_at = time.time() + 1.0  # line the clients up
    procs: list[tuple[str, subprocess.Popen, Path]] = []
    for client, cfg in configs.items():
        out = ddir / f"{client}-{time.monotonic_ns()}.jsonl"
        full = {"client": client, "out": str(out), "start_at": start_at, **cfg}
        p = ddir / f"{client}.json"
        p.write_text(json.dumps(full))
        proc = popen_in(
            cn,
            client,
            [sys.executable, "-m", "testbed.measure.driver", "--config", str(p)],
            role="driver",
            log_name=f"drivers/{client}.out",
        )
        procs.append((client, proc, out))
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    late: list[str] = []
    for client, proc, out in procs:
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            late.append(client)
        finally:
            cn.procs.pop(f"{client}:driver", None)
            if cn.state is not None:
                cn.state.forget_pid(proc.pid)
        if out.exists():
            rows += [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    if late:
        raise TimeoutError(f"drivers on {late} did not finish within {timeout:.0f}s")
    return rows
