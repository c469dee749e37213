"""Experiment ``selection``: anycast vs DNS vs HTTP redirect on one topology and workload.

What to expect (lecture slide 12): anycast is transparent and costs nothing extra, and sends each client
to the edge its ingress switch routes the VIP to; DNS adds a lookup at the local resolver (cheap while the
answer is cached) and maps by the *resolver's* location; the redirect costs an extra exchange with the
redirector (on a fresh connection a handshake plus the request: two round trips), which may be far away,
but sees the client itself.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from experiments.common import (
    catalog_paths,
    emulate,
    nearest_edges,
    pct,
    run_drivers,
    save_samples,
)
from experiments.framework import ExperimentParams, Run, md_table, plt, read_csv, read_results, write_report
from testbed.measure.workload import zipf_workload
from testbed.net.launch import CdnOptions
from testbed.net.spec import Role


class Params(ExperimentParams):
    """``specs/selection.yaml`` params."""

    methods: list[Literal["anycast", "dns", "redirect"]] = Field(min_length=1)
    objects: int = Field(gt=0)
    alpha: float = Field(gt=0)
    rate_per_client: float = Field(gt=0)
    duration_s: int = Field(gt=0)
    dns_ttl: int = Field(ge=0)
    warm: bool


PHASES = ["dns_ms", "connect_ms", "redirect_ms", "ttfb_ms"]


def _target(cn, svc, client: str) -> dict[str, Any]:
    vip = cn.topo.anycast[0].vip if cn.topo.anycast else None
    return {"vip": vip, "resolver": cn.ip(svc.resolver_for(client)) if svc.resolvers else None,
            "redirector": cn.ip(svc.redirectors[0]) if svc.redirectors else None}


def _warm(cn, svc, paths: list[str]) -> None:
    """Fetch every object once from every edge, from a client of the edge's region."""
    clients = [h.name for h in cn.topo.hosts_with(Role.client)]
    configs = {}
    for e in svc.edges:
        region = cn.topo.host(e).region
        c = next((c for c in clients if cn.topo.host(c).region == region and c not in configs), None)
        c = c or next(c for c in clients if c not in configs)
        configs[c] = {"target": {"vip": cn.ip(e)},
                      "schedule": [{"at": i * 0.01, "via": "anycast", "path": p} for i, p in enumerate(paths)]}
    run_drivers(cn, configs, timeout=120)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [x for x in rows if not x.get("error")]
    res: dict[str, Any] = {
        "requests": len(rows), "errors": len(rows) - len(ok),
        "ttfb_ms_p50": pct((x["ttfb_ms"] for x in ok), 50), "ttfb_ms_p95": pct((x["ttfb_ms"] for x in ok), 95),
        "total_ms_p50": pct((x["total_ms"] for x in ok), 50), "total_ms_p95": pct((x["total_ms"] for x in ok), 95),
        "optimal_edge_fraction": (sum(1 for x in ok if x["served_nearest"]) / len(ok)) if ok else 0.0,
    }
    for ph in PHASES:
        res[f"{ph[:-3]}_ms_p50"] = pct((x[ph] for x in ok), 50)
    return res


def run(r: Run) -> dict[str, Any]:
    p = r.params
    cdn = CdnOptions(dns_ttl=int(p["dns_ttl"]),
                     catalog={"objects": max(200, int(p["objects"]) * 4), "seed": r.seed, "size_mu": 8.5})
    all_rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {"methods": {}, "origin_offload": {}}
    with emulate(r, cdn) as (cn, svc):
        assert svc is not None
        paths = catalog_paths(cn, svc)[: int(p["objects"])]
        if not paths:
            raise RuntimeError("the origin's catalog has no cachable objects")
        if p.get("warm", True):
            task = r.step(f"selection: warming every edge with {len(paths)} objects", total=1)
            _warm(cn, svc, paths)
            task.done()
        clients = [h.name for h in cn.topo.hosts_with(Role.client)]
        nearest = {c: nearest_edges(cn, c, svc.edges) for c in clients}  # equally near edges tie
        region = {c: cn.topo.host(c).region or "all" for c in clients}
        task = r.step("methods", total=len(p["methods"]))
        for m in p["methods"]:
            reqs = zipf_workload(clients, paths, alpha=float(p["alpha"]), rate_per_s=float(p["rate_per_client"]),
                                 duration_s=float(p["duration_s"]), seed=r.seed)
            origin_before = svc.service_stats(svc.origin)
            configs = {c: {"target": _target(cn, svc, c),
                           "schedule": [{"at": q.at, "via": m, "path": q.path} for q in reqs if q.client == c]}
                       for c in clients}
            rows = run_drivers(cn, configs, timeout=float(p["duration_s"]) + 60)
            origin_after = svc.service_stats(svc.origin)
            for x in rows:
                near = nearest[x["client"]]
                x.update(method=m, region=region[x["client"]], nearest=near[0],
                         served_nearest=x.get("served_by") in near)
            all_rows += rows
            s = summarize(rows)
            s["regions"] = {g: summarize([x for x in rows if x["region"] == g]) for g in sorted(set(region.values()))}
            s["edge_load"] = dict(Counter(x["served_by"] for x in rows if not x.get("error")))
            # the origin counts content requests only (its stats reads are not counted): exact
            s["origin_requests"] = _origin_requests(origin_after) - _origin_requests(origin_before)
            results["methods"][m] = s
            results["origin_offload"][m] = 1 - s["origin_requests"] / s["requests"] if s["requests"] else None
            r.figure(f"{m}: total p50 ms", s["total_ms_p50"])
            r.figure(f"{m}: nearest edge", f"{100 * s['optimal_edge_fraction']:.0f} %")
            task.advance()
    save_samples(r, "samples", all_rows)
    results["summary"] = _summary_table(results)
    return results


def _origin_requests(stats: dict[str, Any]) -> int:
    for k in ("requests", "requests_total", "served"):
        if isinstance(stats.get(k), int):
            return stats[k]
    return 0


def _summary_table(results: dict[str, Any]) -> str:
    lines = [f"{'method':<10}{'TTFB p50':>10}{'total p50':>11}{'total p95':>11}{'nearest':>9}{'errors':>8}"]
    for m, s in results["methods"].items():
        lines.append(f"{m:<10}{s['ttfb_ms_p50'] or 0:>8.1f}ms{s['total_ms_p50'] or 0:>9.1f}ms"
                     f"{s['total_ms_p95'] or 0:>9.1f}ms{100 * s['optimal_edge_fraction']:>8.0f}%{s['errors']:>8}")
    return "\n".join(lines)


def report(out: Path) -> None:
    res = read_results(out)
    rows = read_csv(out / "samples.csv")
    methods = list(res["methods"])
    regions = sorted({x["region"] for x in rows})
    pyplot = plt()
    # total time per region and method (median)
    fig, ax = pyplot.subplots(figsize=(8, 4))
    w = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        vals = [res["methods"][m]["regions"].get(g, {}).get("total_ms_p50") or 0 for g in regions]
        ax.bar([k + i * w for k in range(len(regions))], vals, w, label=m)
    ax.set_xticks([k + w * (len(methods) - 1) / 2 for k in range(len(regions))], regions)
    ax.set_ylabel("total time, median (ms)")
    ax.set_title("Fetch time by region and server-selection method")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "total_by_region.png", dpi=110)
    pyplot.close(fig)
    # breakdown
    fig, ax = pyplot.subplots(figsize=(6, 4))
    bottom = [0.0] * len(methods)
    for ph in PHASES:
        vals = [res["methods"][m].get(f"{ph[:-3]}_ms_p50") or 0 for m in methods]
        ax.bar(methods, vals, bottom=bottom, label=ph[:-3])
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("median per phase (ms)")
    ax.set_title("Where the time goes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "breakdown.png", dpi=110)
    pyplot.close(fig)
    table = md_table([{"method": m, **res["methods"][m], "offload": res["origin_offload"].get(m)} for m in methods],
                     ["method", "requests", "errors", "dns_ms_p50", "connect_ms_p50", "redirect_ms_p50",
                      "ttfb_ms_p50", "total_ms_p50", "total_ms_p95", "optimal_edge_fraction", "offload"],
                     ["method", "requests", "errors", "DNS p50", "connect p50", "redirect p50", "TTFB p50",
                      "total p50", "total p95", "nearest edge", "origin offload"])
    per_region = md_table(
        [{"region": g, "method": m, **res["methods"][m]["regions"].get(g, {})} for g in regions for m in methods],
        ["region", "method", "requests", "ttfb_ms_p50", "ttfb_ms_p95", "total_ms_p50", "total_ms_p95",
         "optimal_edge_fraction"],
        ["region", "method", "requests", "TTFB p50", "TTFB p95", "total p50", "total p95", "nearest edge"])
    load = md_table([{"method": m, **res["methods"][m]["edge_load"]} for m in methods],
                    ["method", *sorted({e for m in methods for e in res["methods"][m]["edge_load"]})])
    write_report(out, "Server selection: anycast vs DNS vs HTTP redirect", res, [
        ("Results (ms)", table + "\n\n![total by region](total_by_region.png)\n\n![breakdown](breakdown.png)"),
        ("Per region", per_region),
        ("Load per edge (requests served)", load),
        ("Reading it", (
            "* **anycast** (routing): no lookup and no extra round trip — the network delivers the VIP to "
            "the member the controller picked for the client's ingress switch.\n"
            "* **dns** (naming): a lookup at the local resolver first (a cache hit costs one short round "
            "trip; a miss walks the CNAME chain to the mapping DNS); the mapping sees the resolver, not the "
            "client.\n"
            "* **redirect** (application): an extra exchange with the redirector before the real request — "
            "on a fresh connection a handshake plus the request and its 302, two round trips: the *redirect* "
            "column, which grows with the client's distance to the redirector.")),
    ])
