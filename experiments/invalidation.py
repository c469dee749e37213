"""The stale-content window after an origin update: TTL expiry alone vs multicast invalidation.

The seeds' CDN overview names "origin-edge communication" (updates, invalidation) as a use of multicast
inside a CDN; the lecture's cache-consistency part says a cached copy is served until its TTL runs out.
Here every client of the topology probes one catalog object through its edge (IP anycast, one fetch every
``probe_interval_ms``) and records the ETag served (``Sample.extra["etag"]``, the version); ``update_at_s``
after the probes start the origin publishes a new version (``POST /_origin/update/<path>``, time recorded
just before the request). Two runs, each on a freshly built network:

* ``ttl_only``: plain HTTP caching. The object's ``Cache-Control: max-age`` is ``ttl_s`` (set at the
  origin for the object's class); the first probe fills each edge's cache, so each edge serves the old
  version for the rest of its copy's lifetime: stale window ~ ``ttl_s - update_at_s`` (RFC 9111 §4.2);
* ``multicast``: ``CdnOptions(multicast=True, mcast_on_update="purge")``: the update also multicasts an
  INVALIDATE on the origin's ingest group (NACK-repaired, RFC 5740 style, over the controller's static
  tree); each edge purges its copy on receipt and the next probe fetches the new version: stale window
  ~ one origin-to-edge delay plus the probe interval.

Per edge the stale window is the time from the update to the receipt of the last response carrying the
old version (0 when none came after the update). ``invalidation_latency_ms`` is the INVALIDATE's
send-to-apply time at each edge from the edges' ingest stats (``applied``: origin's send time, edge's
apply time; one kernel clock in the emulation). ``old_after_applied`` counts probes *started* after the
edge applied the purge that still got the old version (must be 0).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from experiments.common import catalog_paths, run_drivers, save_samples
from experiments.framework import ExperimentParams, Run, md_table, plt, read_csv, read_results, write_report
from testbed.net import fidelity
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import CdnOptions, CdnServices, start_services
from testbed.net.spec import Role
from testbed.util import wait_until


class Params(ExperimentParams):
    """``specs/invalidation.yaml`` params."""

    ttl_s: int = Field(gt=0)
    update_at_s: int = Field(ge=0)
    tail_s: int = Field(ge=0)
    probe_interval_ms: int = Field(gt=0)
    probe_timeout_s: int = Field(gt=0)
    object_class: Literal["html", "image", "js", "css", "video"]
    heartbeat_interval: float = Field(gt=0)


PHASES = ("ttl_only", "multicast")
_VERSION = re.compile(r"-v(\d+)\"?$")


def version_of(etag: str | None) -> int | None:
    """The catalog's ETags end in ``-v<N>"``: the object's version, else None."""
    m = _VERSION.search(etag or "")
    return int(m.group(1)) if m else None


@contextmanager
def _emulate(r: Run, phase: str, opts: CdnOptions) -> Iterator[tuple[CdnNet, CdnServices]]:
    """Build the topology for one phase (its own run directory), start the services, tear down after."""
    if r.topology is None:
        raise ValueError("the invalidation experiment needs a topology")
    topo = r.load_topology()
    bopts = BuildOptions(
        run_dir=r.out / f"run-{phase}", **{k: v for k, v in r.build.items() if v is not None}
    )
    task = r.step(f"invalidation: building {topo.name} ({phase})", total=2)
    pressure = fidelity.cpu_pressure()
    with CdnNet(topo, bopts) as cn:
        task.advance()
        r.meta.update(link_mode=cn.link_mode, controller_mode=cn.controller_mode, datapath=cn.datapath)
        svc = start_services(cn, opts)
        task.advance()
        yield cn, svc
        r.check_emulation(cn, pressure)


def _options(p: dict[str, Any], phase: str) -> CdnOptions:
    cc = {str(p["object_class"]): f"public, max-age={int(p['ttl_s'])}"}
    return CdnOptions(
        roles=("origin", "edge"),
        origin_cache_control=cc,
        multicast=phase == "multicast",
        mcast_on_update="purge",
        heartbeat_interval=float(p["heartbeat_interval"]),
    )


def _run_phase(r: Run, phase: str) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Probe, update, probe on: (samples, update record, edge/origin stats)."""
    p = r.params
    ttl, update_at, tail = float(p["ttl_s"]), float(p["update_at_s"]), float(p["tail_s"])
    duration = (ttl if phase == "ttl_only" else update_at) + tail
    with _emulate(r, phase, _options(p, phase)) as (cn, svc):
        assert svc.origin is not None
        clients = [h.name for h in cn.topo.hosts_with(Role.client)]
        paths = catalog_paths(cn, svc, classes=(str(p["object_class"]),))
        if not paths:
            raise RuntimeError(f"the origin's catalog has no {p['object_class']} object")
        path = paths[0]
        if phase == "multicast":
            wait_until(
                lambda: all(
                    (svc.service_stats(e).get("ingest") or {}).get("running")
                    for e in svc.edges
                ),
                20,
                0.2,
                what="every edge's ingest receiver running",
            )
        vip = cn.topo.anycast[0].vip
        start_at = time.time() + 1.0
        cfg = {
            "start_at": start_at,
            "target": {"vip": vip},
            "probes": [
                {
                    "via": "anycast",
                    "path": path,
                    "interval_ms": float(p["probe_interval_ms"]),
                    "duration_s": duration,
                    "timeout_s": float(p["probe_timeout_s"]),
                }
            ],
        }
        upd: dict[str, Any] = {"path": path}
        origin_ip = cn.ip(svc.origin)

        def update_later() -> None:
            time.sleep(max(0.0, start_at + update_at - time.time()))
            t0 = time.time()
            try:
                upd["response"] = svc.control(svc.origin, f"http://{origin_ip}/_origin/update{path}", "POST")
            except RuntimeError as e:
                upd["error"] = str(e)
            upd.update(t_update=t0, t_done=time.time())

        th = threading.Thread(target=update_later, name="origin-update", daemon=True)
        th.start()
        task = r.step(f"invalidation: {phase} probes ({duration:.0f} s)", total=1)
        rows = run_drivers(cn, {c: cfg for c in clients}, timeout=duration + 30)
        th.join(30)
        task.done()
        r.rows_figure(phase, rows)
        if "response" not in upd:
            raise RuntimeError(f"{phase}: the origin update failed: {upd.get('error', 'no answer')}")
        stats = {
            "edges": {e: svc.service_stats(e) for e in svc.edges},
            "origin": svc.service_stats(svc.origin),
        }
    for row in rows:
        row["phase"] = phase
        row["version"] = version_of(row.get("etag"))
        row["t_rel"] = round(float(row["t"]) - upd["t_update"], 4)
    return rows, upd, stats


def _applied(stats: dict[str, Any], inval_id: int | None) -> dict[str, dict[str, float]]:
    """Per edge: the INVALIDATE ``inval_id``'s origin send time and the edge's apply time."""
    out = {}
    for e, st in stats.get("edges", {}).items():
        for a in (st.get("ingest") or {}).get("applied", []):
            if inval_id is None or a.get("inval_id") == inval_id:
                out[e] = {"sent_at": float(a["sent_at"]), "applied_at": float(a["applied_at"])}
    return out


def analyse(
    rows: list[dict[str, Any]],
    t_update: float,
    new_version: int,
    ttl_s: float,
    applied: dict[str, dict[str, float]],
) -> dict[str, dict[str, Any]]:
    """Per edge (``served_by``): stale window, expected TTL window, probes, old versions after the purge."""
    by_edge: dict[str, list[dict[str, Any]]] = {}
    for x in rows:
        if not x.get("error") and x.get("served_by") and x.get("version") is not None:
            by_edge.setdefault(str(x["served_by"]), []).append(x)
    out = {}
    for edge, xs in sorted(by_edge.items()):

        def t_resp(x: dict[str, Any]) -> float:
            return float(x["t"]) + float(x["total_ms"]) / 1000

        old = [x for x in xs if int(x["version"]) < new_version]
        new = [x for x in xs if int(x["version"]) >= new_version]
        late = [t_resp(x) - t_update for x in old if t_resp(x) > t_update]
        fills = [t_resp(x) for x in old if x.get("x_cache") == "MISS"]
        expected = (min(fills) + ttl_s - t_update) * 1000 if fills else None
        ap = applied.get(edge)
        out[edge] = {
            "stale_window_ms": round(max(late) * 1000, 1) if late else 0.0,
            "saw_new_version": bool(new),
            "first_new_ms": round((min(float(x["t"]) for x in new) - t_update) * 1000, 1) if new else None,
            "expected_ttl_window_ms": round(expected, 1) if expected is not None else None,
            "probes": len(xs),
            "old_after_applied": sum(1 for x in old if ap and float(x["t"]) > ap["applied_at"]),
        }
    return out


def run(r: Run) -> dict[str, Any]:
    ttl = float(r.params["ttl_s"])
    all_rows: list[dict[str, Any]] = []
    phases: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        rows, upd, stats = _run_phase(r, phase)
        all_rows += rows
        resp = upd["response"]
        inval_id = (resp.get("multicast") or {}).get("inval_id")
        applied = _applied(stats, inval_id) if phase == "multicast" else {}
        per = analyse(rows, upd["t_update"], int(resp["version"]), ttl, applied)
        for e, a in applied.items():
            if e in per:
                per[e]["invalidation_latency_ms"] = round((a["applied_at"] - a["sent_at"]) * 1000, 2)
                per[e]["update_to_applied_ms"] = round((a["applied_at"] - upd["t_update"]) * 1000, 2)
        phases[phase] = {
            "path": upd["path"],
            "t_update": upd["t_update"],
            "update_request_ms": round((upd["t_done"] - upd["t_update"]) * 1000, 1),
            "new_version": resp["version"],
            "inval_id": inval_id,
            "edges": per,
            "applied": applied,
        }
        r.json(f"stats-{phase}", stats)
    save_samples(r, "probes", all_rows)
    return results_from(phases, ttl, float(r.params["update_at_s"]))


def results_from(phases: dict[str, dict[str, Any]], ttl: float, update_at: float) -> dict[str, Any]:
    edges = sorted({e for ph in phases.values() for e in ph["edges"]})

    def win(phase: str, e: str) -> float | None:
        return phases[phase]["edges"].get(e, {}).get("stale_window_ms")

    per_edge = {}
    for e in edges:
        mc = phases["multicast"]["edges"].get(e, {})
        per_edge[e] = {
            "ttl_only": win("ttl_only", e),
            "multicast": win("multicast", e),
            "expected_ttl_window_ms": phases["ttl_only"]["edges"].get(e, {}).get("expected_ttl_window_ms"),
            "invalidation_latency_ms": mc.get("invalidation_latency_ms"),
            "update_to_applied_ms": mc.get("update_to_applied_ms"),
            "old_after_applied": mc.get("old_after_applied"),
            "saw_new_version": {ph: phases[ph]["edges"].get(e, {}).get("saw_new_version") for ph in PHASES},
        }
    stale = {
        ph: max((v for v in (win(ph, e) for e in edges) if v is not None), default=None) for ph in PHASES
    }
    lat = {e: per_edge[e]["invalidation_latency_ms"] for e in edges}
    out = {
        "ttl_s": ttl,
        "update_at_s": update_at,
        "stale_window_ms": stale,
        "per_edge": per_edge,
        "invalidation_latency_ms": lat,
        "old_after_applied": sum(int(v["old_after_applied"] or 0) for v in per_edge.values()),
        "all_saw_new_version": all(all(v["saw_new_version"].values()) for v in per_edge.values()),
        "phases": phases,
    }
    out["summary"] = _summary(out)
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _summary(res: dict[str, Any]) -> str:
    lines = [f"object max-age {res['ttl_s']:g} s, update {res['update_at_s']:g} s after the first fetch"]
    lines.append(
        f"{'edge':<8}{'TTL only ms':>13}{'expected ms':>13}{'multicast ms':>14}{'inval latency ms':>18}"
    )
    for e, v in res["per_edge"].items():
        lines.append(
            f"{e:<8}{_fmt(v['ttl_only']):>13}{_fmt(v['expected_ttl_window_ms']):>13}{_fmt(v['multicast']):>14}"
            f"{_fmt(v['invalidation_latency_ms']):>18}"
        )
    s = res["stale_window_ms"]
    lines.append(
        f"max stale window: TTL only {_fmt(s['ttl_only'])} ms, multicast {_fmt(s['multicast'])} ms; "
        f"old versions after the purge applied: {res['old_after_applied']}"
    )
    return "\n".join(lines)


def report(out: Path) -> None:
    res = read_results(out)
    rows = read_csv(out / "probes.csv") if (out / "probes.csv").exists() else []
    pyplot = plt()
    edges = sorted(res["per_edge"])
    fig, axes = pyplot.subplots(len(PHASES), 1, figsize=(10, 2.2 + 1.1 * len(edges)), squeeze=False)
    for ax, phase in zip(axes[:, 0], PHASES, strict=True):
        ph = res["phases"].get(phase, {})
        new_v = ph.get("new_version", 1)
        for i, e in enumerate(edges):
            pts = [
                x for x in rows if x.get("phase") == phase and x.get("served_by") == e and x.get("version")
            ]
            for label, color, is_new in (
                ("old version", "tab:red", False),
                ("new version", "tab:green", True),
            ):
                ts = [float(x["t_rel"]) for x in pts if (int(x["version"]) >= new_v) == is_new]
                ax.scatter(ts, [i] * len(ts), s=6, color=color, label=label if i == 0 else None)
            w = res["per_edge"][e].get(phase)
            if w is not None:
                ax.annotate(
                    f"stale {w:.0f} ms", (w / 1000, i), xytext=(4, 6), textcoords="offset points", fontsize=7
                )
            a = ph.get("applied", {}).get(e)
            if a:
                ax.plot([a["applied_at"] - ph["t_update"]], [i], marker="|", color="k", ms=14)
            exp = res["per_edge"][e].get("expected_ttl_window_ms")
            if phase == "ttl_only" and exp is not None:
                ax.plot([exp / 1000], [i], marker="|", color="tab:blue", ms=14)
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.set_yticks(range(len(edges)), edges)
        ax.set_ylim(-0.7, len(edges) - 0.3)
        title = {
            "ttl_only": f"TTL only (max-age {res['ttl_s']:g} s; blue tick: expected expiry)",
            "multicast": "multicast invalidation (black tick: purge applied)",
        }[phase]
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time since the origin update (s)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "invalidation.png", dpi=120)
    pyplot.close(fig)
    table = md_table(
        [{"edge": e, **v} for e, v in res["per_edge"].items()],
        [
            "edge",
            "ttl_only",
            "expected_ttl_window_ms",
            "multicast",
            "invalidation_latency_ms",
            "old_after_applied",
        ],
        [
            "edge",
            "stale window, TTL only (ms)",
            "expected (remaining TTL, ms)",
            "stale window, multicast (ms)",
            "INVALIDATE send->apply (ms)",
            "old version after purge",
        ],
    )
    s = res["stale_window_ms"]
    notes = (
        f"Max stale window over edges: **{_fmt(s['ttl_only'])} ms** with TTL expiry only, "
        f"**{_fmt(s['multicast'])} ms** with multicast invalidation. The TTL-only window is the rest of the "
        "copy's max-age after the update (the edge cached it at the first probe); the multicast window is "
        "the INVALIDATE's one-way trip plus up to one probe interval until the next probe shows the new "
        "version. Windows are measured from just before the update request (which includes starting curl "
        "in the origin's host: see `update_request_ms` in results.json); the expected TTL window is exact only "
        "to the origin's Date header, which has one-second resolution (RFC 9111 §4.2.3 apparent age). "
        "Every edge saw the new version in both runs: "
        f"{res.get('all_saw_new_version')}; probes started after an edge applied the purge that still got "
        f"the old version: {res.get('old_after_applied')}."
    )
    write_report(
        out,
        "Stale content after an update: TTL vs multicast invalidation",
        res,
        [("Result", table), ("Timeline", "![versions seen per edge](invalidation.png)"), ("Notes", notes)],
    )
