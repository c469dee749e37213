"""Pieces every emulated experiment uses: build + services, drive clients, read samples, statistics."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from experiments.framework import Run
from testbed.net import fidelity
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import CdnOptions, CdnServices, start_services
from testbed.net.spec import Role, Topology
from testbed.util import json_in


@contextmanager
def emulate(r: Run, cdn: CdnOptions | None = None, *, services: bool = True, anycast_mode: str = "destination",
            topo: Topology | None = None) -> Iterator[tuple[CdnNet, CdnServices | None]]:
    """Build the run's topology (or ``topo``, a variant of it the experiment made; logs and configs under
    ``<out>/run``), start the services, tear down after."""
    topo = topo if topo is not None else r.load_topology()
    n = r.meta.setdefault("builds", 0) + 1  # each network of a run gets its own directory of logs
    r.meta["builds"] = n
    opts = BuildOptions(run_dir=r.out / ("run" if n == 1 else f"run-{n}"), anycast_mode=anycast_mode,
                        **{k: v for k, v in r.build.items() if v is not None})
    task = r.step(f"building {topo.name} ({len(topo.hosts)} hosts)", total=2)
    pressure = fidelity.cpu_pressure()
    with CdnNet(topo, opts) as cn:
        task.advance()
        r.meta.update(link_mode=cn.link_mode, controller_mode=cn.controller_mode, datapath=cn.datapath)
        svc = start_services(cn, cdn) if services else None
        task.advance()
        yield cn, svc
        r.check_emulation(cn, pressure)  # did it keep up? (meta.emulation, and a warning atop the report)


def host_json(cn: CdnNet, host: str, url: str) -> Any:
    """GET a JSON document from inside ``host`` (e.g. an edge's /_cdn/stats)."""
    out = cn.host(host).cmd(f"curl -s -m 5 {url}")
    return json_in(out)


def catalog_paths(cn: CdnNet, svc: CdnServices, classes: Sequence[str] = ("image", "js", "css"),
                  max_bytes: int = 256 * 1024) -> list[str]:
    """Cachable object paths of the origin's catalog, in catalog order (rank 1 first)."""
    probe = next(h.name for h in cn.topo.hosts_with(Role.client))
    assert svc.origin
    cat = host_json(cn, probe, f"http://{cn.ip(svc.origin)}/_origin/catalog")
    objs = cat["objects"] if isinstance(cat, dict) else cat
    return [o["path"] for o in objs if o.get("class", o.get("kind")) in classes and o.get("size", 0) <= max_bytes]


def run_drivers(cn: CdnNet, configs: Mapping[str, dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Run ``testbed.measure.driver`` in each client host at once; return every sample (one dict each)."""
    assert cn.run_dir is not None
    ddir = cn.run_dir / "drivers"
    ddir.mkdir(parents=True, exist_ok=True)
    start_at = time.time() + 1.0  # line the clients up
    procs = []
    for client, cfg in configs.items():
        out = ddir / f"{client}-{time.monotonic_ns()}.jsonl"
        cfg = {"client": client, "out": str(out), "start_at": start_at, **cfg}
        p = ddir / f"{client}.json"
        p.write_text(json.dumps(cfg))
        proc = cn.popen(client, [sys.executable, "-m", "testbed.measure.driver", "--config", str(p)],
                        role="driver", log_name=f"drivers/{client}.out")
        procs.append((client, proc, out))
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    for client, proc, out in procs:
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"driver on {client} did not finish within {timeout:.0f}s") from None
        finally:
            cn.procs.pop(f"{client}:driver", None)
        if out.exists():
            rows += [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return rows


def pct(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    v = sorted(values)
    if not v:
        return None
    if len(v) == 1:
        return float(v[0])
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return float(v[lo] + (v[hi] - v[lo]) * (k - lo))


def median(values: Iterable[float]) -> float | None:
    v = list(values)
    return float(statistics.median(v)) if v else None


def nearest_edge(cn: CdnNet, client: str, edges: Sequence[str]) -> str:
    """The edge with the lowest configured path delay from ``client`` (ties: the first by name)."""
    return nearest_edges(cn, client, edges)[0]


def nearest_edges(cn: CdnNet, client: str, edges: Sequence[str]) -> list[str]:
    """Every edge at the lowest configured path delay from ``client`` (equally near ones tie), by name."""
    d = cn.topo.delays_from(client)
    best = min(d[e] for e in edges)
    return sorted(e for e in edges if d[e] <= best + 1e-9)


def save_samples(r: Run, name: str, rows: list[dict[str, Any]]) -> Path:
    cols = ["t", "at", "seq", "client", "region", "via", "phase", "path", "dns_ms", "connect_ms", "redirect_ms",
            "ttfb_ms", "total_ms", "status", "bytes", "edge_ip", "served_by", "nearest", "x_cache", "error"]
    present = [c for c in cols if any(c in row for row in rows)]
    extra = sorted({k for row in rows for k in row} - set(cols))
    return r.csv(name, rows, present + extra)


def out_path(out: Path, name: str) -> Path:
    return out / name
