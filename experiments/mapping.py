"""Resolver-based vs end-user (ECS) mapping, the shape of Akamai's end-user mapping result.

Chen, Sitaraman and Torres (SIGCOMM 2015) measured that clients whose DNS resolver is far from them
(public resolvers, centralised ISP resolvers) are mapped to distant servers when the mapping system sees
only the resolver (lecture slide 12: "request by resolver not client"), and that mapping on the client's
subnet carried by EDNS Client Subnet (RFC 7871) brings them close; clients behind a nearby resolver see
little change.

Topology ``mapping``: three regions in a line, each with an edge, a low-level mapping DNS, a resolver and
two clients: ``n_*`` uses the resolver of its own region, ``f_*`` a resolver in another region (the
client's ``params.resolver`` in the topology). Two cases, each on a freshly built network:

* ``resolver``: resolvers without ECS, mapping policy ``NetworkMap``: the nearest edge to the asking
  resolver, by the network map (:mod:`testbed.net.netmap`);
* ``ecs``: resolvers send the client's /24 (unbound ``subnetcache``), policy ``EcsAware`` over
  ``NetworkMap``: the nearest edge to the clients of that /24.

Every client fetches the same (pre-warmed) object ``fetches`` times by DNS; per fetch: the edge the DNS
answered, the mapping distance = configured RTT client -> that edge minus configured RTT client -> its
nearest edge (from the topology's delays), the RTT measured as the TCP connect time, and the TTFB.

The services are started by :class:`~testbed.net.launch.CdnServices`, which gives the mapping each region's /24s
instead of the per-host /32s :meth:`CdnServices.regions` lists: an ECS query carries the client's /24,
whose network address matches no host /32, so with /32s every ECS query would fall to the default region.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from experiments.common import emulate, median, nearest_edges, run_drivers, save_samples
from experiments.framework import ExperimentParams, Run, md_table, plt, read_csv, read_results, write_report
from testbed.net.launch import CUSTOMER_NAME, CdnOptions, CdnServices, resolver_of
from testbed.net.spec import Role, Topology
from testbed.services.catalog import Catalog, CatalogConfig


class Params(ExperimentParams):
    """``specs/mapping.yaml`` params."""

    fetches: int = Field(gt=0)
    interval_s: float = Field(ge=0)
    object_bytes: int = Field(gt=0)
    timeout_s: int = Field(gt=0)


CASES = {
    "resolver": {"ecs": False, "mapping_policy": "testbed.services.mapping:NetworkMap"},
    "ecs": {"ecs": True, "mapping_policy": "testbed.services.mapping:EcsAware",
            "ecs_inner": "testbed.services.mapping:NetworkMap"},
}
GROUPS = ("near_resolver", "far_resolver")
METRICS = ("mapping_distance_ms_p50", "rtt_ms_p50", "ttfb_ms_p50", "optimal_edge_fraction")


def client_group(topo: Topology, client: str) -> str:
    return (
        "near_resolver"
        if topo.host(resolver_of(topo, client)).region == topo.host(client).region
        else "far_resolver"
    )


def rtt_ms(topo: Topology, a: str, b: str) -> float:
    """Configured round-trip time between two hosts (twice the one-way path delay)."""
    return 2 * topo.path_delay_ms(a, b)


def mapping_distance_ms(topo: Topology, client: str, edge: str, edges: list[str]) -> float:
    return rtt_ms(topo, client, edge) - min(rtt_ms(topo, client, e) for e in edges)


def group_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r.get("edge")]
    return {
        "fetches": len(rows),
        "ok": len(ok),
        "mapping_distance_ms_p50": median(r["mapping_distance_ms"] for r in ok),
        "rtt_ms_p50": median(float(r["connect_ms"]) for r in ok),
        "ttfb_ms_p50": median(float(r["ttfb_ms"]) for r in ok),
        "optimal_edge_fraction": (sum(1 for r in ok if r["optimal"]) / len(ok)) if ok else None,
        "dns_ms_p50": median(float(r["dns_ms"]) for r in ok),
    }


def run(r: Run) -> dict[str, Any]:
    p = r.params
    catalog = {
        "seed": r.seed,
        "objects": 20,
        "size_distribution": "fixed",
        "fixed_bytes": int(p["object_bytes"]),
        "class_weights": {"image": 1.0},
    }
    path = Catalog(CatalogConfig(**catalog)).objects[0].path
    cases: dict[str, Any] = {}
    per_client: list[dict[str, Any]] = []
    for case, knobs in CASES.items():
        with emulate(r, services=False) as (cn, _):
            topo = cn.topo
            svc = CdnServices(cn, CdnOptions(catalog=catalog, **knobs)).start()
            edges = svc.edges
            by_ip = {cn.ip(e): e for e in edges}
            clients = [h.name for h in topo.hosts_with(Role.client)]
            for e in edges:  # warm every edge so TTFB measures the mapping, not the first miss
                cn.host(clients[0]).cmd(
                    f"curl -s -o /dev/null -m 5 -H 'Host: {CUSTOMER_NAME}' http://{cn.ip(e)}{path}"
                )
            n, gap = int(p["fetches"]), float(p["interval_s"])
            cfgs = {
                c: {
                    "target": {"resolver": cn.ip(resolver_of(topo, c)), "name": CUSTOMER_NAME},
                    "timeout_s": float(p["timeout_s"]),
                    "schedule": [{"at": i * gap, "via": "dns", "path": path} for i in range(n)],
                }
                for c in clients
            }
            task = r.step(f"mapping: {case}", total=1)
            rows = run_drivers(cn, cfgs, timeout=n * gap + 4 * float(p["timeout_s"]) + 20)
            task.done()
            r.rows_figure(case, rows)
            for row in rows:
                c = row["client"]
                edge = by_ip.get(row.get("edge_ip", "")) if not row.get("error") else None
                tied = nearest_edges(cn, c, edges)  # equally near edges are all optimal
                nearest = tied[0]
                row.update(
                    phase=case,
                    group=client_group(topo, c),
                    resolver=resolver_of(topo, c),
                    region=topo.host(c).region,
                    edge=edge or "",
                    nearest=nearest,
                    mapping_distance_ms=mapping_distance_ms(topo, c, edge, edges) if edge else None,
                    optimal=edge in tied,
                )
            save_samples(r, f"samples_{case}", rows)
            cases[case] = {g: group_stats([x for x in rows if x["group"] == g]) for g in GROUPS}
            for c in clients:
                mine = [x for x in rows if x["client"] == c]
                st = group_stats(mine)
                per_client.append(
                    {
                        "case": case,
                        "client": c,
                        "group": client_group(topo, c),
                        "resolver": resolver_of(topo, c),
                        "edges": "/".join(sorted({x["edge"] for x in mine if x["edge"]})),
                        "nearest": mine[0]["nearest"] if mine else "",
                        **st,
                    }
                )
    r.csv("per_client", per_client)
    out: dict[str, Any] = {"cases": cases}
    far_r, far_e = cases["resolver"]["far_resolver"], cases["ecs"]["far_resolver"]
    near_r, near_e = cases["resolver"]["near_resolver"], cases["ecs"]["near_resolver"]
    out["far_distance_reduction_ms"] = (
        None
        if far_r["mapping_distance_ms_p50"] is None or far_e["mapping_distance_ms_p50"] is None
        else far_r["mapping_distance_ms_p50"] - far_e["mapping_distance_ms_p50"]
    )
    out["near_distance_change_ms"] = (
        None
        if near_r["mapping_distance_ms_p50"] is None or near_e["mapping_distance_ms_p50"] is None
        else near_e["mapping_distance_ms_p50"] - near_r["mapping_distance_ms_p50"]
    )
    out["summary"] = _summary_text(cases)
    return out


def _f(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:.0%}" if unit == "%" else f"{v:.1f}{unit}"


def _summary_text(cases: dict[str, Any]) -> str:
    lines = [f"{'case':9}{'group':15}{'distance p50':>14}{'RTT p50':>10}{'TTFB p50':>10}{'optimal':>9}"]
    for case in CASES:
        for g in GROUPS:
            s = cases[case][g]
            lines.append(
                f"{case:9}{g:15}{_f(s['mapping_distance_ms_p50'], ' ms'):>14}{_f(s['rtt_ms_p50'], ' ms'):>10}"
                f"{_f(s['ttfb_ms_p50'], ' ms'):>10}{_f(s['optimal_edge_fraction'], '%'):>9}"
            )
    return "\n".join(lines)


def report(out: Path) -> None:
    res = read_results(out)
    cases = res["cases"]
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(11, 3.4))
    labels = [
        ("mapping_distance_ms_p50", "mapping distance p50 (ms)"),
        ("rtt_ms_p50", "RTT p50 (ms)"),
        ("ttfb_ms_p50", "TTFB p50 (ms)"),
    ]
    for ax, (key, title) in zip(axes, labels, strict=True):
        for i, case in enumerate(CASES):
            vals = [cases[case][g][key] or 0 for g in GROUPS]
            ax.bar(
                [j + (i - 0.5) * 0.38 for j in range(len(GROUPS))],
                vals,
                0.38,
                label="resolver-based" if case == "resolver" else "ECS (end-user)",
            )
        ax.set_xticks(range(len(GROUPS)), [g.replace("_", " ") for g in GROUPS])
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "mapping.png", dpi=120)
    pyplot.close(fig)
    rows = [{"case": c, "group": g, **{m: cases[c][g][m] for m in METRICS}} for c in CASES for g in GROUPS]
    table = md_table(
        rows,
        ["case", "group", *METRICS],
        [
            "case",
            "client group",
            "mapping distance p50 (ms)",
            "RTT p50 (ms)",
            "TTFB p50 (ms)",
            "optimal edge",
        ],
    )
    pc = read_csv(out / "per_client.csv") if (out / "per_client.csv").exists() else []
    ctable = md_table(
        pc,
        [
            "case",
            "client",
            "group",
            "resolver",
            "edges",
            "nearest",
            "mapping_distance_ms_p50",
            "rtt_ms_p50",
            "ttfb_ms_p50",
        ],
        [
            "case",
            "client",
            "group",
            "resolver",
            "edge(s) used",
            "nearest edge",
            "distance (ms)",
            "RTT (ms)",
            "TTFB (ms)",
        ],
    )
    notes = (
        "Mapping distance uses the topology's configured delays (2 x one-way path delay); RTT is the "
        "measured TCP connect time to the edge the DNS chose; TTFB from sending the GET (the object was "
        "fetched through every edge first, so these are hits). Without ECS the low-level DNS sees only "
        "the resolver and maps by the resolver's region; with ECS (RFC 7871, /24 source prefix) it maps "
        "the client's own subnet. Expected shape (Chen et al., SIGCOMM'15): far-resolver clients are "
        "mapped far without ECS and near with it; near-resolver clients change little."
    )
    write_report(
        out,
        "Mapping: resolver-based vs end-user (ECS)",
        res,
        [("Result", table), ("Per client", ctable), ("Plot", "![mapping](mapping.png)"), ("Notes", notes)],
    )
