"""``cdnlab bench soak --minutes N --json``: the whole CDN under load and failures for N minutes.

On ``--topo`` (default ``globe``) every client host runs the workload driver with a Zipf(``--alpha``)
workload over the origin's cachable objects through all three steering methods at once (anycast, DNS and
redirect; Poisson arrivals, ``--rate`` requests a second per client and method). The run is cut into
minutes: each minute every client runs a fresh driver with that minute's schedule (generated per minute,
seed + minute), so neither the drivers nor this front end hold more than a minute of requests; only
counts, the failure windows and a few example errors are kept.

Failures (``failure_plan``): in every minute one edge, in turn, is killed (SIGKILL of its service,
``svc.fail(edge, "process")``) at ``--kill-at`` seconds and recovered (``svc.recover``: restarted and
answering) ``--edge-down`` seconds later; once, in minute ``N // 2``, the origin is killed at
``--origin-at`` seconds and recovered after ``--origin-down`` (10) seconds. Each failure window is stamped
with wall-clock times: from just before the kill to the moment the recovered service answers.

Errors (``classify``): a request failed when the driver reports an error or its final status is not 200.
A failed request is *explained* by a window when both hold:

* time: the request's interval ``[t, t + total]`` meets ``[window start, window end + grace(method)]``;
* place: one of the request's addresses (the address it failed at, the edge address it fetched from) is
  one the window accounts for: for an edge, the edge's own address and the anycast VIP; for the origin,
  every edge address and the VIP (edges answer 502 on a miss while the origin is down).

``grace`` (``grace_by_method``) comes from the run's settings: the request timeout plus, for DNS, the
mapping DNS's detection (health fall x interval + timeout) and the A record's TTL (resolvers keep
answering with the dead edge until it runs out); for redirect, the redirector's detection; for anycast,
the controller's liveness probes (threshold x interval + timeout). ``errors_outside_failover`` counts the
failed requests no window explains. Any such error fails the run (exit 1), as do a workload that could
not run (a driver failing or writing fewer samples than scheduled) and a service that dies outside a
failure window.

Resources (``growth``): every service process (one per host with a CDN role: origin, edges, mapping DNS,
resolvers with their ``unbound`` child, redirector), the Ryu controller (``controller``) and each userspace
link relay process (``relay-<i>``, with the relay link mode) is sampled from ``/proc`` in the root namespace:
``VmRSS`` and the entries of ``/proc/<pid>/fd``, summed over the process and its descendants. Samples
are taken every ``--sample-s`` seconds and, *quiet*, at each minute's end once its drivers have finished
(no request in flight). Growth is per process lifetime: a restarted edge is a new process, measured from
its own first minute. The baseline of a lifetime is its first quiet sample at least a minute after the
process was first seen (for the processes started with the network: the end of the first minute); growth
is its last quiet sample against that baseline. A lifetime with no quiet sample after its baseline (a
service killed before the end of its second minute or restarted in the last two, every lifetime of a
one-minute run) is not measured; a service's
figure is the largest over its measured lifetimes (``null`` when none was). ``rss_growth_pct`` and
``fds_growth`` are per service (host name), ``rss_growth_pct_max`` and ``fds_growth_max`` their maxima.
``cache_bytes_max`` is the most any edge's store held at any sample (``/_cdn/stats`` with the run's
token), next to ``cache_capacity_bytes`` (``--cache-mb``, small enough that the edges evict).

Targets (issue #16): ``errors_outside_failover`` = 0, ``rss_growth_pct`` <= 5 for every service,
``fds_growth`` <= 10, cache bytes never above capacity (the ``targets`` block; ``--strict`` makes a missed
resource target exit 1 too, a store above capacity always does). ``--quick`` is a two-minute run with
30-second "minutes" for tests. Needs root. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.netview import ProbeView
from testbed.measure.proctree import children, descendants, vm_rss_kb
from testbed.measure.workload import zipf_workload
from testbed.net.build import ANYCAST_PROBE_INTERVAL_MS, ANYCAST_PROBE_TIMEOUT_MS, BuildOptions, CdnNet
from testbed.net.launch import SERVICE_MODULES, CdnOptions, CdnServices, start_services
from testbed.net.spec import Role, Topology, load_topology
from testbed.services.catalog import Catalog, CatalogConfig
from testbed.util import timeout_scale

METHODS = ("anycast", "dns", "redirect")
TARGET_RSS_GROWTH_PCT = 5.0
TARGET_FDS_GROWTH = 10
EXAMPLES = 10  # unexplained errors kept as examples


# -- the failure plan (pure) -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Planned:
    """A failure to inject: ``host`` (of ``kind`` edge or origin) down from ``at`` for ``down`` seconds of
    minute ``minute``."""

    minute: int
    at: float
    down: float
    kind: str
    host: str


def failure_plan(
    minutes: int,
    edges: Sequence[str],
    origin: str | None,
    *,
    minute_s: float,
    kill_at: float,
    edge_down: float,
    origin_at: float,
    origin_down: float,
) -> list[Planned]:
    """One edge a minute, in turn, and the origin once (in minute ``minutes // 2``), never overlapping.

    ValueError when a failure does not fit in its minute or the origin's outage would overlap the edge's
    (a window must end, restart included, before the next begins; 3 s are left for a restart)."""
    if minutes < 1 or not edges:
        raise ValueError("a soak needs at least one minute and one edge")
    if kill_at < 0 or kill_at + edge_down + 3 > minute_s:
        raise ValueError(
            f"the edge outage ({kill_at:g} s + {edge_down:g} s) does not fit a {minute_s:g} s minute"
        )
    if origin is not None:
        if origin_at < kill_at + edge_down + 3:
            raise ValueError(
                f"the origin outage at {origin_at:g} s would overlap the edge outage "
                f"({kill_at:g} s + {edge_down:g} s and the restart)"
            )
        if origin_at + origin_down + 3 > minute_s:
            raise ValueError(
                f"the origin outage ({origin_at:g} s + {origin_down:g} s) does not fit a "
                f"{minute_s:g} s minute"
            )
    plan = [Planned(m, kill_at, edge_down, "edge", edges[m % len(edges)]) for m in range(minutes)]
    if origin is not None:
        plan.append(Planned(minutes // 2, origin_at, origin_down, "origin", origin))
    return sorted(plan, key=lambda p: (p.minute, p.at))


# -- error classification (pure) -------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A failure as it happened: ``host`` down from ``start`` to ``end`` (wall clock, s); ``addrs`` are the
    addresses whose failures it accounts for (empty: any)."""

    kind: str
    host: str
    start: float
    end: float
    addrs: frozenset[str] = frozenset()


def grace_by_method(
    *,
    request_timeout_s: float,
    dns_ttl: float,
    health_interval: float,
    health_timeout: float,
    health_fall: int,
    probe_interval_ms: float,
    probe_timeout_ms: float,
    probe_threshold: int,
) -> dict[str, float]:
    """How long after a window's end a method may still fail because of it (s), from the run's settings."""
    detect = health_fall * health_interval + min(health_timeout, health_interval)
    anycast = (probe_threshold * probe_interval_ms + probe_timeout_ms) / 1000
    return {
        "anycast": round(request_timeout_s + anycast, 3),
        "dns": round(request_timeout_s + detect + dns_ttl, 3),
        "redirect": round(request_timeout_s + detect, 3),
    }


def failed(row: Mapping[str, Any]) -> bool:
    """A request failed: the driver reports an error, or the final status is not 200."""
    return bool(row.get("error")) or row.get("status") != 200


def row_addrs(row: Mapping[str, Any]) -> set[str]:
    """The addresses a request involved: where it failed (``error_addr`` without the port) and the edge it
    fetched from (``edge_ip``)."""
    out = {str(row.get("edge_ip") or "")}
    addr = str(row.get("error_addr") or "")
    out.add(addr.rpartition(":")[0] if ":" in addr else addr)
    return out - {""}


def explaining(row: Mapping[str, Any], windows: Sequence[Window], grace: Mapping[str, float]) -> int | None:
    """Index of the first window that explains a failed request (None: none does)."""
    t0 = float(row["t"])
    t1 = t0 + float(row.get("total_ms") or 0.0) / 1000
    g = grace.get(str(row.get("via")), max(grace.values(), default=0.0))
    addrs = row_addrs(row)
    for i, w in enumerate(windows):
        if t1 >= w.start and t0 <= w.end + g and (not w.addrs or addrs & w.addrs):
            return i
    return None


@dataclass
class Tally:
    """Requests and errors so far: per method, per window, and a few unexplained examples."""

    requests: int = 0
    errors: int = 0
    explained: int = 0
    outside: int = 0
    by_method: dict[str, dict[str, int]] = field(default_factory=dict)
    by_window: dict[int, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)


def classify(
    rows: Iterable[Mapping[str, Any]],
    windows: Sequence[Window],
    grace: Mapping[str, float],
    tally: Tally | None = None,
) -> Tally:
    """Count ``rows`` into ``tally`` (a new one by default): each failed request is explained by a window or
    counted in ``outside``."""
    tally = tally if tally is not None else Tally()
    for row in rows:
        m = tally.by_method.setdefault(
            str(row.get("via")), {"requests": 0, "errors": 0, "explained": 0, "outside": 0}
        )
        tally.requests += 1
        m["requests"] += 1
        if not failed(row):
            continue
        tally.errors += 1
        m["errors"] += 1
        i = explaining(row, windows, grace)
        if i is None:
            tally.outside += 1
            m["outside"] += 1
            if len(tally.examples) < EXAMPLES:
                tally.examples.append(
                    {
                        k: row.get(k)
                        for k in (
                            "t",
                            "client",
                            "via",
                            "path",
                            "status",
                            "error",
                            "error_phase",
                            "error_addr",
                            "edge_ip",
                            "served_by",
                            "total_ms",
                        )
                    }
                )
        else:
            tally.explained += 1
            m["explained"] += 1
            tally.by_window[i] = tally.by_window.get(i, 0) + 1
    return tally


# -- resource growth (pure) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcSample:
    """One sample of a service's process tree: resident KiB and open fds; ``quiet``: no request in flight."""

    host: str
    pid: int
    t: float
    rss_kb: int
    fds: int
    quiet: bool
    procs: int = 1  # processes in the tree (a resolver's includes its unbound)


def growth(samples: Iterable[ProcSample], minute_s: float) -> dict[str, Any]:
    """Growth per service over each process lifetime (see the module docstring): ``rss_growth_pct`` and
    ``fds_growth`` (host -> the largest over its measured lifetimes, None if none was measured) and
    ``lifetimes`` (every lifetime, measured or not)."""
    by_proc: dict[tuple[str, int], list[ProcSample]] = {}
    for s in samples:
        by_proc.setdefault((s.host, s.pid), []).append(s)
    rss: dict[str, float | None] = {}
    fds: dict[str, int | None] = {}
    lifetimes: list[dict[str, Any]] = []
    for (host, pid), ss in sorted(by_proc.items(), key=lambda kv: (kv[0][0], kv[1][0].t)):
        ss.sort(key=lambda s: s.t)
        born = ss[0].t
        quiet = [s for s in ss if s.quiet]
        base = next((s for s in quiet if s.t >= born + minute_s - 1e-6), None)
        last = quiet[-1] if quiet else None
        life: dict[str, Any] = {
            "host": host,
            "pid": pid,
            "processes": ss[-1].procs,
            "first_seen": round(born, 3),
            "measured": False,
        }
        rss.setdefault(host, None)
        fds.setdefault(host, None)
        if base is not None and last is not None and last.t > base.t:
            pct = 100.0 * (last.rss_kb - base.rss_kb) / base.rss_kb if base.rss_kb else 0.0
            dfd = last.fds - base.fds
            after = [s for s in ss if s.t >= base.t]
            life.update(
                measured=True,
                from_t=round(base.t, 3),
                to_t=round(last.t, 3),
                rss_kb=[base.rss_kb, last.rss_kb],
                fds=[base.fds, last.fds],
                rss_growth_pct=round(pct, 2),
                fds_growth=dfd,
                rss_peak_kb=max(s.rss_kb for s in after),
                fds_peak=max(s.fds for s in after),
            )
            prev_r, prev_f = rss[host], fds[host]
            rss[host] = round(pct, 2) if prev_r is None else max(prev_r, round(pct, 2))
            fds[host] = dfd if prev_f is None else max(prev_f, dfd)
        lifetimes.append(life)
    return {"rss_growth_pct": rss, "fds_growth": fds, "lifetimes": lifetimes}


def targets(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The targets block: each target's value, its bound and whether it is met (None: not measured)."""
    rss = [v for v in result["rss_growth_pct"].values() if v is not None]
    fds = [v for v in result["fds_growth"].values() if v is not None]
    cache, cap = result["cache_bytes_max"], result["cache_capacity_bytes"]
    return {
        "errors_outside_failover": {
            "value": result["errors_outside_failover"],
            "target": "== 0",
            "met": result["errors_outside_failover"] == 0,
        },
        "rss_growth_pct": {
            "value": max(rss) if rss else None,
            "target": f"<= {TARGET_RSS_GROWTH_PCT:g} every service",
            "met": (max(rss) <= TARGET_RSS_GROWTH_PCT) if rss else None,
        },
        "fds_growth": {
            "value": max(fds) if fds else None,
            "target": f"<= {TARGET_FDS_GROWTH} every service",
            "met": (max(fds) <= TARGET_FDS_GROWTH) if fds else None,
        },
        "cache_bytes_max": {
            "value": cache,
            "target": f"<= {cap} (capacity)",
            "met": None if cache is None else cache <= cap,
        },
    }


# -- sampling /proc (root namespace; reads only) ---------------------------------------------------------
def tree_usage(pid: int, kids: Mapping[int, list[int]]) -> tuple[int, int, int] | None:
    """(VmRSS in KiB, open fds, processes) of ``pid`` and its descendants; None when ``pid`` is gone."""
    rss, fds, n_procs = 0, 0, 0
    for p in descendants([pid], dict(kids)):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            n = len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            if p == pid:
                return None
            continue
        fds += n
        n_procs += 1
        rss += vm_rss_kb(status)
    return rss, fds, n_procs


# -- the run ---------------------------------------------------------------------------------------------
class SoakFailure(RuntimeError):
    """The soak could not run as planned (workload, services): an error of the benchmark, never a figure."""


@dataclass
class Driver:
    client: str
    proc: Any
    out: Path
    scheduled: int


class Soak:
    """One soak on a running CDN: the minute loop, failures, sampling, classification."""

    def __init__(
        self,
        cn: CdnNet,
        svc: CdnServices,
        args: argparse.Namespace,
        paths: list[str],
        plan: list[Planned],
        grace: dict[str, float],
        work: Path,
    ) -> None:
        self.cn, self.svc, self.args, self.paths, self.plan, self.grace = cn, svc, args, paths, plan, grace
        self.work = work
        topo = cn.topo
        self.clients = [h.name for h in topo.hosts_with(Role.client)]
        self.vip = str(topo.anycast[0].vip)
        self.services = [
            h.name
            for h in topo.hosts
            if h.role.value in SERVICE_MODULES and svc.service_process(h.name) is not None
        ]
        self.windows: list[Window] = []
        self.tally = Tally()
        self.samples: list[ProcSample] = []
        self.cache_max: dict[str, int] = {}
        self.cache_capacity = svc.opts.edge_capacity_bytes
        self.down: set[str] = set()  # hosts inside a failure window now

    # sampling
    def sample(self, quiet: bool) -> None:
        """Every service's process tree from /proc (and a died service fails the run); edges' cache bytes."""
        kids = children()
        now = time.time()
        for h in self.services:
            p = self.svc.service_process(h)
            if p is None:
                if h in self.down:
                    continue
                raise SoakFailure(
                    f"the service on {h} died outside a failure window; its log: "
                    f"{self.cn.run_dir}/logs/{h}-{self.cn.topo.host(h).role.value}.out"
                )
            use = tree_usage(p.pid, kids)
            if use is not None:
                self.samples.append(ProcSample(h, p.pid, now, use[0], use[1], quiet, use[2]))
        for name, pid in self.infrastructure():  # the controller and the link relays grow too, or not
            use = tree_usage(pid, kids)
            if use is not None:
                self.samples.append(ProcSample(name, pid, now, use[0], use[1], quiet, use[2]))
        for e in self.svc.edges:
            if e in self.down or self.svc.service_process(e) is None:
                continue
            try:
                store = self.svc.service_stats(e)["store"]
            except (RuntimeError, KeyError) as exc:
                raise SoakFailure(f"edge {e} answered no stats: {exc}") from None
            self.cache_max[e] = max(self.cache_max.get(e, 0), int(store["bytes_used"]))
            self.cache_capacity = int(store["capacity_bytes"])

    def infrastructure(self) -> list[tuple[str, int]]:
        """(name, pid) of the emulation's own long-lived processes: the Ryu controller (``controller``) and
        each userspace link relay (``relay-<i>``), while they run."""
        out: list[tuple[str, int]] = []
        ctl = self.cn.controller_proc
        if ctl is not None and ctl.poll() is None:
            out.append(("controller", ctl.pid))
        pool = self.cn.relay_pool
        for i, rp in enumerate(pool.procs if pool is not None else []):
            proc = getattr(rp, "proc", None)
            if proc is not None and proc.poll() is None:
                out.append((f"relay-{i}", proc.pid))
        return out

    # failures
    def fail(self, p: Planned) -> float:
        """Take ``p.host`` down; the window starts just before the kill."""
        start = time.time()
        self.down.add(p.host)
        self.svc.fail(p.host, "process")
        return start

    def recover(self, p: Planned, start: float) -> None:
        """Bring ``p.host`` back (restarted and answering) and record its window."""
        ip = self.cn.ip(p.host)
        addrs = {ip, self.vip} if p.kind == "edge" else {*(self.cn.ip(e) for e in self.svc.edges), self.vip}
        t_restart = time.time()
        try:
            self.svc.recover(p.host, "process")
        except Exception as e:  # noqa: BLE001 - a service that does not come back ends the run
            raise SoakFailure(f"{p.kind} {p.host} did not come back after its outage: {e}") from None
        end = time.time()
        self.down.discard(p.host)
        self.windows.append(Window(p.kind, p.host, start, end, frozenset(addrs)))
        print(
            f"  {p.kind} {p.host}: down {end - start:.1f} s (killed at +{p.at:g} s; answering "
            f"{end - t_restart:.1f} s after its restart)",
            flush=True,
        )
        self.sample(quiet=False)  # the new process is first seen now

    # drivers
    def schedules(self, minute: int) -> dict[str, list[dict[str, Any]]]:
        a = self.args
        out: dict[str, list[dict[str, Any]]] = {c: [] for c in self.clients}
        for i, via in enumerate(METHODS):
            for q in zipf_workload(
                self.clients,
                self.paths,
                alpha=a.alpha,
                rate_per_s=a.rate,
                duration_s=a.minute_s,
                seed=a.seed + 7919 * minute + i,
            ):
                out[q.client].append({"at": round(q.at, 4), "via": via, "path": q.path})
        for items in out.values():
            items.sort(key=lambda x: x["at"])
        return out

    def target(self, client: str) -> dict[str, Any]:
        return {
            "vip": self.vip,
            "resolver": self.cn.ip(self.svc.resolver_for(client)),
            "redirector": self.cn.ip(self.svc.redirectors[0]),
        }

    def start_drivers(self, minute: int, start_at: float) -> list[Driver]:
        ddir = self.work / "drivers"
        ddir.mkdir(parents=True, exist_ok=True)
        drivers = []
        for client, items in self.schedules(minute).items():
            out = ddir / f"{client}-m{minute:03d}.jsonl"
            cfg = {
                "client": client,
                "out": str(out),
                "start_at": start_at,
                "target": self.target(client),
                "schedule": items,
                "timeout_s": self.args.timeout,
            }
            cfg_path = ddir / f"{client}.json"
            cfg_path.write_text(json.dumps(cfg))
            proc = self.cn.popen(
                client,
                [sys.executable, "-m", "testbed.measure.driver", "--config", str(cfg_path)],
                role="driver",
                log_name=f"logs/{client}-driver.out",
            )
            drivers.append(Driver(client, proc, out, len(items)))
        return drivers

    def finish_driver(self, d: Driver) -> list[dict[str, Any]]:
        self.cn.procs.pop(f"{d.client}:driver", None)
        if self.cn.state is not None:
            self.cn.state.forget_pid(d.proc.pid)
        if d.proc.returncode != 0:
            raise SoakFailure(
                f"the driver on {d.client} exited with status {d.proc.returncode}; see "
                f"{self.cn.run_dir}/logs/{d.client}-driver.out"
            )
        rows = (
            [json.loads(ln) for ln in d.out.read_text().splitlines() if ln.strip()] if d.out.exists() else []
        )
        if len(rows) != d.scheduled:
            raise SoakFailure(
                f"the driver on {d.client} recorded {len(rows)} of {d.scheduled} scheduled requests"
            )
        if not self.args.keep:
            d.out.unlink()
        return rows

    def minute(self, m: int) -> None:
        a = self.args
        start_at = time.time() + 1.5  # every driver starts at once, failures count from here
        drivers = self.start_drivers(m, start_at)
        if m == 0:
            time.sleep(max(0.0, start_at - time.time()))
            self.sample(quiet=True)  # every service's first sample, before any load
        failures = [p for p in self.plan if p.minute == m]
        recoveries: list[tuple[float, Planned, float]] = []  # (when, what, window start)
        deadline = start_at + a.minute_s + a.timeout + 30
        next_sample = start_at + a.sample_s
        running = list(drivers)
        rows_by: dict[str, list[dict[str, Any]]] = {}
        try:
            while running or failures or recoveries:
                now = time.time()
                if failures and now >= start_at + failures[0].at:
                    p = failures.pop(0)
                    t = self.fail(p)
                    recoveries.append((t + p.down, p, t))
                elif recoveries and now >= recoveries[0][0]:
                    _, p, t = recoveries.pop(0)
                    self.recover(p, t)
                elif now >= next_sample:
                    self.sample(quiet=False)
                    next_sample += a.sample_s
                for d in [d for d in running if d.proc.poll() is not None]:
                    running.remove(d)
                    rows_by[d.client] = self.finish_driver(d)
                if running and time.time() > deadline:
                    raise SoakFailure(
                        f"drivers on {', '.join(d.client for d in running)} still running "
                        f"{deadline - start_at:.0f} s after minute {m + 1} began"
                    )
                time.sleep(0.05)
        finally:
            for d in running:
                d.proc.kill()
                d.proc.wait()
                self.cn.procs.pop(f"{d.client}:driver", None)
        before = (self.tally.requests, self.tally.errors, self.tally.outside)
        for rows in rows_by.values():
            classify(rows, self.windows, self.grace, self.tally)
        self.sample(quiet=True)  # the minute's end: every request answered, none in flight
        req, err, out = (
            x - y
            for x, y in zip((self.tally.requests, self.tally.errors, self.tally.outside), before, strict=True)
        )
        print(
            f"minute {m + 1}/{a.minutes}: {req} requests, {err} errors, {out} outside failure windows; "
            f"cache max {max(self.cache_max.values(), default=0) / 2**20:.2f} of "
            f"{self.cache_capacity / 2**20:.2f} MiB",
            flush=True,
        )

    def run(self) -> None:
        for m in range(self.args.minutes):
            self.minute(m)

    def result(self) -> dict[str, Any]:
        g = growth(self.samples, self.args.minute_s)
        rss = g["rss_growth_pct"]
        fds = g["fds_growth"]
        t = self.tally
        windows = [
            {
                "kind": w.kind,
                "host": w.host,
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "seconds": round(w.end - w.start, 2),
                "errors_explained": t.by_window.get(i, 0),
            }
            for i, w in enumerate(self.windows)
        ]
        res: dict[str, Any] = {
            "requests": t.requests,
            "errors": t.errors,
            "errors_explained": t.explained,
            "errors_outside_failover": t.outside,
            "errors_by_method": t.by_method,
            "failure_windows": windows,
            "grace_s": self.grace,
            "rss_growth_pct": rss,
            "rss_growth_pct_max": max((v for v in rss.values() if v is not None), default=None),
            "fds_growth": fds,
            "fds_growth_max": max((v for v in fds.values() if v is not None), default=None),
            "cache_bytes_max": max(self.cache_max.values(), default=None),
            "cache_capacity_bytes": self.cache_capacity,
            "cache_bytes_max_by_edge": dict(sorted(self.cache_max.items())),
            "lifetimes": g["lifetimes"],
            "samples": len(self.samples),
            "unexplained_examples": t.examples,
        }
        return res


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="cdnlab bench soak", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    ap.add_argument("--minutes", type=int, default=None, help="minutes of load and failures (default 30)")
    ap.add_argument("--topo", default="globe", help="topology name or YAML file (default globe)")
    ap.add_argument("--links", default="auto", choices=["auto", "netem", "relay"], help="link emulation")
    ap.add_argument("--datapath", default="auto", choices=["auto", "kernel", "user"], help="OVS datapath")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a short run for tests: 2 minutes of 30 s (unless --minutes/--minute-s say otherwise)",
    )
    ap.add_argument("--minute-s", type=float, default=None, help="length of a minute in seconds (default 60)")
    ap.add_argument(
        "--rate", type=float, default=1.0, help="requests a second per client and method (default 1)"
    )
    ap.add_argument(
        "--alpha", type=float, default=0.8, help="Zipf exponent of object popularity (default 0.8)"
    )
    ap.add_argument(
        "--objects", type=int, default=1000, help="objects in the origin's catalog (default 1000)"
    )
    ap.add_argument(
        "--cache-mb", type=float, default=2.0, help="each edge's cache capacity in MiB (default 2)"
    )
    ap.add_argument(
        "--timeout", type=float, default=5.0, help="request timeout of the drivers, s (default 5)"
    )
    ap.add_argument(
        "--sample-s", type=float, default=10.0, help="seconds between resource samples (default 10)"
    )
    ap.add_argument("--kill-at", type=float, default=None, help="second of each minute an edge is killed")
    ap.add_argument("--edge-down", type=float, default=None, help="seconds an edge stays down")
    ap.add_argument("--origin-at", type=float, default=None, help="second of its minute the origin is killed")
    ap.add_argument(
        "--origin-down", type=float, default=10.0, help="seconds the origin stays down (default 10)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--strict", action="store_true", help="a missed RSS or fd target exits 1 too")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (logs, driver samples)")
    a = ap.parse_args(argv)
    a.minutes = a.minutes if a.minutes is not None else (2 if a.quick else 30)
    a.minute_s = a.minute_s if a.minute_s is not None else (30.0 if a.quick else 60.0)
    # defaults scale with the minute: in a 60 s minute the edge is killed at 5 s for 15 s, the origin at 40 s
    a.kill_at = a.kill_at if a.kill_at is not None else a.minute_s / 12
    a.edge_down = a.edge_down if a.edge_down is not None else a.minute_s / 4
    a.origin_at = a.origin_at if a.origin_at is not None else a.minute_s * 5 / 6 - a.origin_down
    if (
        a.minutes < 1
        or a.minute_s <= 0
        or a.rate <= 0
        or a.timeout <= 0
        or a.sample_s <= 0
        or a.cache_mb <= 0
    ):
        ap.error("--minutes must be >= 1; --minute-s, --rate, --timeout, --sample-s and --cache-mb > 0")
    return a


def _check_topology(topo: Topology) -> None:
    missing = [
        what
        for what, ok in (
            ("an anycast VIP", bool(topo.anycast)),
            ("an origin", bool(topo.hosts_with(Role.origin))),
            ("edges", bool(topo.hosts_with(Role.edge))),
            ("clients", bool(topo.hosts_with(Role.client))),
            ("resolvers", bool(topo.hosts_with(Role.resolver))),
            ("a redirector", bool(topo.hosts_with(Role.redirector))),
        )
        if not ok
    ]
    if missing:
        raise ValueError(
            f"topology {topo.name} lacks {', '.join(missing)}: the soak drives anycast, DNS and "
            f"redirect at once"
        )


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if os.geteuid() != 0:
        print("cdnlab bench soak: needs root (Mininet)", file=sys.stderr)
        return 2
    try:
        topo = load_topology(a.topo)
        _check_topology(topo)
        edges = [h.name for h in topo.hosts_with(Role.edge)]
        origin = topo.hosts_with(Role.origin)[0].name
        plan = failure_plan(
            a.minutes,
            edges,
            origin,
            minute_s=a.minute_s,
            kill_at=a.kill_at,
            edge_down=a.edge_down,
            origin_at=a.origin_at,
            origin_down=a.origin_down,
        )
    except ValueError as e:
        print(f"cdnlab bench soak: {e}", file=sys.stderr)
        return 2
    catalog = {
        "objects": a.objects,
        "seed": a.seed,
        "size_mu": 8.5,
        "class_weights": {"html": 0.1, "image": 0.5, "js": 0.2, "css": 0.2},
    }
    paths = [o.path for o in Catalog(CatalogConfig(**catalog)).objects if o.size <= 256 * 1024]
    opts = CdnOptions(catalog=catalog, edge_capacity_bytes=int(a.cache_mb * 2**20))
    scale = timeout_scale()
    grace = grace_by_method(
        request_timeout_s=a.timeout,
        dns_ttl=opts.dns_ttl,
        health_interval=opts.health_interval,
        health_timeout=opts.health_timeout,
        health_fall=opts.health_fall,
        probe_interval_ms=ANYCAST_PROBE_INTERVAL_MS * scale,
        probe_timeout_ms=ANYCAST_PROBE_TIMEOUT_MS * scale,
        probe_threshold=ProbeView().threshold,
    )
    from mininet.log import setLogLevel

    setLogLevel("warning")
    work = Path(tempfile.mkdtemp(prefix="cdnlab-soak-"))
    print(
        f"soak on {topo.name}: {a.minutes} x {a.minute_s:g} s, {len(topo.hosts_with(Role.client))} clients x "
        f"{len(METHODS)} methods at {a.rate:g}/s, Zipf({a.alpha:g}) over {len(paths)} objects, edge caches "
        f"{a.cache_mb:g} MiB; an edge down {a.edge_down:g} s every minute, the origin {a.origin_down:g} s in "
        f"minute {a.minutes // 2 + 1}; grace after a window: "
        + ", ".join(f"{k} {v:g} s" for k, v in grace.items()),
        flush=True,
    )
    t_start = time.monotonic()
    res: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    failure: str | None = None
    cn = CdnNet(topo, BuildOptions(run_dir=work, links=a.links, datapath=a.datapath))
    try:
        cn.start()
        if cn.controller_mode != "ryu":
            raise SoakFailure("the soak needs the Ryu controller (anycast); run `sudo make setup`")
        svc = start_services(cn, opts)
        meta["build_seconds"] = round(time.monotonic() - t_start, 1)
        meta.update(link_mode=cn.link_mode, datapath=cn.datapath)
        print(
            f"built and started in {meta['build_seconds']} s (links {cn.link_mode}, datapath {cn.datapath})",
            flush=True,
        )
        soak = Soak(cn, svc, a, paths, plan, grace, work)
        t_load = time.monotonic()
        try:
            soak.run()
        finally:
            meta["load_seconds"] = round(time.monotonic() - t_load, 1)
        res = soak.result()
    except (SoakFailure, TimeoutError, RuntimeError) as e:
        failure = f"{type(e).__name__}: {e}" if not isinstance(e, SoakFailure) else str(e)
    finally:
        t_down = time.monotonic()
        cn.stop()
        meta["teardown_seconds"] = round(time.monotonic() - t_down, 1)
        meta["wall_seconds"] = round(time.monotonic() - t_start, 1)
    if failure is not None:
        print(f"cdnlab bench soak: FAILED: {failure} (logs kept in {work})", file=sys.stderr)
        return 1
    out = {
        "topo": topo.name,
        "minutes": a.minutes,
        "minute_s": a.minute_s,
        "rate_per_client_method": a.rate,
        **res,
        **meta,
    }
    out["targets"] = targets(out)
    out["targets_met"] = all(v["met"] is not False for v in out["targets"].values())
    _print_figures(out)
    if not a.keep and out["errors_outside_failover"] == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs kept in {work}")
    print(json.dumps(out))
    tg = out["targets"]
    if tg["errors_outside_failover"]["met"] is False:
        print(
            f"cdnlab bench soak: FAILED: {out['errors_outside_failover']} requests failed outside every failure "
            f"window (examples above and in unexplained_examples)",
            file=sys.stderr,
        )
        return 1
    if tg["cache_bytes_max"]["met"] is False:
        print("cdnlab bench soak: FAILED: an edge's cache held more than its capacity", file=sys.stderr)
        return 1
    if a.strict and not out["targets_met"]:
        print("cdnlab bench soak: a resource target was missed (--strict)", file=sys.stderr)
        return 1
    return 0


def _print_figures(out: Mapping[str, Any]) -> None:
    print(
        f"{out['requests']} requests in {out['minutes']} x {out['minute_s']:g} s: {out['errors']} errors, "
        f"{out['errors_explained']} explained by {len(out['failure_windows'])} failure windows, "
        f"{out['errors_outside_failover']} outside"
    )
    for via, m in sorted(out["errors_by_method"].items()):
        print(f"  {via:<9} {m['requests']:>7} requests {m['errors']:>6} errors ({m['outside']} outside)")
    for ex in out["unexplained_examples"]:
        print(f"  unexplained: {json.dumps(ex)}")
    print(f"{'service':<10}{'rss growth %':>14}{'fd growth':>11}")
    for h in sorted(out["rss_growth_pct"]):
        r, f = out["rss_growth_pct"][h], out["fds_growth"][h]
        print(f"{h:<10}{'-' if r is None else f'{r:+.2f}':>14}{'-' if f is None else f'{f:+d}':>11}")
    cap = out["cache_capacity_bytes"]
    cmax = out["cache_bytes_max"]
    print(
        f"cache bytes max {cmax} of capacity {cap}"
        + (f" ({100 * cmax / cap:.1f} %)" if cmax is not None else "")
    )
    for name, t in out["targets"].items():
        state = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        print(f"target {name} {t['target']}: {t['value']} -> {state}")
    print(
        f"build {out.get('build_seconds')} s, load {out.get('load_seconds')} s, teardown "
        f"{out.get('teardown_seconds')} s, wall {out.get('wall_seconds')} s"
    )


if __name__ == "__main__":
    sys.exit(main())
