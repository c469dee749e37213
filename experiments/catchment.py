"""Anycast catchments: which clients does the network not send to their lowest-RTT edge, and at what cost?

Calder et al. ("Analyzing the Performance of an Anycast CDN", IMC 2015) found about 20 % of Bing's
clients directed by anycast to a front-end that is not their lowest-latency one, because BGP selects
routes by AS-path length and policy and hands traffic off at the nearest exit ("hot potato"), not by
latency. Topology ``catchment`` (read its header) models this: the controller's anycast choice per
ingress switch minimises the configured one-way ``delay_ms`` of the path (its routing metric), which does
not see the return direction ``delay_ms_ba`` of an asymmetric link; one client site reaches a PoP over a
link that looks short (5 ms) but is 45 ms back.

For every client: ``fetches`` HTTP fetches of one object via the anycast VIP (which edge answered:
``X-Served-By``; the TCP connect time is the RTT to the VIP) and ``pings`` pings to every edge's unicast
address (their minimum is the RTT to that edge). A client is *suboptimal* when its anycast edge is not its lowest-RTT edge
(measured); its extra RTT is RTT(anycast edge) - RTT(lowest-RTT edge). The same figures are computed from
the topology's configured delays (:func:`routing_choice`, :func:`configured_rtt_ms`) and reported side by
side, so the measurement is checked against the model it should reproduce.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import Field

from experiments.common import emulate, median, run_drivers, save_samples
from experiments.framework import ExperimentParams, Run, md_table, plt, read_csv, read_results, write_report
from testbed.measure import ping
from testbed.net.launch import CUSTOMER_NAME, CdnOptions
from testbed.net.spec import Role, Topology
from testbed.services.catalog import Catalog, CatalogConfig


class Params(ExperimentParams):
    """``specs/catchment.yaml`` params."""

    fetches: int = Field(gt=0)
    pings: int = Field(gt=0)
    timeout_s: int = Field(gt=0)



def _directed(topo: Topology) -> nx.DiGraph:
    """Every link as two directed edges with its own one-way delay (``delay_ms`` a->b, ``delay_ms_ba`` b->a)."""
    g = nx.DiGraph()
    for ln in topo.links:
        g.add_edge(ln.a, ln.b, delay=ln.delay_ms)
        g.add_edge(ln.b, ln.a, delay=ln.delay_ms if ln.delay_ms_ba is None else ln.delay_ms_ba)
    for h in topo.hosts:
        g.add_edge(h.name, h.switch, delay=h.link.delay_ms)
        g.add_edge(
            h.switch, h.name, delay=h.link.delay_ms if h.link.delay_ms_ba is None else h.link.delay_ms_ba
        )
    return g


def routing_path(topo: Topology, a: str, b: str) -> list[str]:
    """The path the controller routes on: shortest by ``delay_ms`` (one direction, as in its network view)."""
    return nx.shortest_path(topo.graph(), a, b, weight="delay_ms")


def configured_rtt_ms(topo: Topology, a: str, b: str) -> float:
    """Round trip over the routed path: the one-way delays of both directions of every hop."""
    g = _directed(topo)
    p = routing_path(topo, a, b)
    return float(sum(g[x][y]["delay"] + g[y][x]["delay"] for x, y in zip(p, p[1:], strict=False)))


def routing_choice(topo: Topology, client: str, members: list[str]) -> str:
    """The member the controller's anycast picks for the client's ingress switch (controller/anycast.py:
    shortest switch-path ``delay_ms`` to the member's switch plus the member's access ``delay_ms``)."""
    sw = nx.Graph()
    for ln in topo.links:
        sw.add_edge(ln.a, ln.b, delay_ms=ln.delay_ms)
    ingress = topo.host(client).switch
    dist = nx.single_source_dijkstra_path_length(sw, ingress, weight="delay_ms")
    return min(members, key=lambda m: (dist[topo.host(m).switch] + topo.host(m).link.delay_ms, m))


def model(topo: Topology, clients: list[str], members: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for c in clients:
        rtts = {e: configured_rtt_ms(topo, c, e) for e in members}
        chosen = routing_choice(topo, c, members)
        best = min(members, key=lambda e: (rtts[e], e))
        out[c] = {
            "anycast_edge": chosen,
            "lowest_rtt_edge": best,
            "rtt_ms": rtts,
            "suboptimal": chosen != best,
            "extra_rtt_ms": rtts[chosen] - rtts[best],
        }
    return out


def ping_min_ms(cn: Any, src: str, dst_ip: str, count: int) -> float | None:
    """The minimum RTT of ``count`` pings (ms): the path's propagation RTT, free of queueing and CPU noise."""
    mins = ping.parse_summary_rtts(cn.host(src).cmd(f"ping -n -q -c {count} -i 0.05 -W 2 {dst_ip}"))
    return mins[0] if mins else None


def run(r: Run) -> dict[str, Any]:
    p = r.params
    catalog = {
        "seed": r.seed,
        "objects": 10,
        "size_distribution": "fixed",
        "fixed_bytes": 2000,
        "class_weights": {"image": 1.0},
    }
    path = Catalog(CatalogConfig(**catalog)).objects[0].path
    with emulate(r, CdnOptions(catalog=catalog, roles=("origin", "edge"))) as (cn, _):
        topo = cn.topo
        svc = topo.anycast[0]
        members = list(svc.members)
        clients = [h.name for h in topo.hosts_with(Role.client)]
        n, timeout = int(p["fetches"]), float(p["timeout_s"])
        cfgs = {
            c: {
                "target": {"vip": svc.vip, "port": svc.port, "name": CUSTOMER_NAME},
                "timeout_s": timeout,
                "schedule": [{"at": 0.3 * i, "via": "anycast", "path": path} for i in range(n)],
            }
            for c in clients
        }
        task = r.step("catchment: anycast fetches", total=1)
        rows = run_drivers(cn, cfgs, timeout=0.3 * n + 4 * timeout + 20)
        task.done()
        r.rows_figure("anycast", rows)
        save_samples(r, "anycast_samples", rows)
        task = r.step("catchment: RTT to every edge", total=len(clients))
        pings: list[dict[str, Any]] = []
        for c in clients:
            for e in members:
                pings.append(
                    {"client": c, "edge": e, "rtt_ms": ping_min_ms(cn, c, cn.ip(e), int(p["pings"]))}
                )
            task.advance()
    r.csv("pings", pings)
    expected = model(topo, clients, members)
    per_client: list[dict[str, Any]] = []
    for c in clients:
        mine = [x for x in rows if x["client"] == c and not x.get("error")]
        served = Counter(x.get("served_by", "") for x in mine)
        edge = served.most_common(1)[0][0] if served else ""
        rtt = {x["edge"]: x["rtt_ms"] for x in pings if x["client"] == c}
        known = {e: v for e, v in rtt.items() if v is not None}
        best = min(known, key=lambda e: (known[e], e)) if known else ""
        extra = known[edge] - known[best] if edge in known and best else None
        ex = expected[c]
        per_client.append(
            {
                "client": c,
                "site": topo.host(c).switch,
                "anycast_edge": edge,
                "anycast_edges_seen": "/".join(sorted(served)),
                "lowest_rtt_edge": best,
                "suboptimal": bool(edge and best and edge != best),
                "extra_rtt_ms": None if extra is None else round(extra, 3),
                "vip_connect_ms_p50": median(float(x["connect_ms"]) for x in mine),
                **{f"rtt_{e}_ms": known.get(e) for e in members},
                "model_anycast_edge": ex["anycast_edge"],
                "model_lowest_rtt_edge": ex["lowest_rtt_edge"],
                "model_extra_rtt_ms": ex["extra_rtt_ms"],
                **{f"model_rtt_{e}_ms": ex["rtt_ms"][e] for e in members},
            }
        )
    r.csv("clients", per_client)
    sub = [x for x in per_client if x["suboptimal"]]
    model_sub = [c for c in clients if expected[c]["suboptimal"]]
    out = {
        "clients": per_client,
        "suboptimal_fraction": round(len(sub) / len(per_client), 4) if per_client else None,
        "extra_rtt_ms_p50": median(x["extra_rtt_ms"] for x in sub if x["extra_rtt_ms"] is not None),
        "extra_rtt_ms_mean_all": statistics.fmean(x["extra_rtt_ms"] or 0.0 for x in per_client)
        if per_client
        else None,
        "model": {
            "suboptimal_fraction": round(len(model_sub) / len(clients), 4),
            "extra_rtt_ms_p50": median(expected[c]["extra_rtt_ms"] for c in model_sub),
            "clients": expected,
        },
        "anycast_matches_model": all(x["anycast_edge"] == x["model_anycast_edge"] for x in per_client),
        "lowest_rtt_matches_model": all(
            x["lowest_rtt_edge"] == x["model_lowest_rtt_edge"] for x in per_client
        ),
        "members": members,
    }
    out["summary"] = (
        f"suboptimal clients: {out['suboptimal_fraction']:.0%} measured, {out['model']['suboptimal_fraction']:.0%} "
        f"from the configured delays; extra RTT p50 {_ms(out['extra_rtt_ms_p50'])} measured, "
        f"{_ms(out['model']['extra_rtt_ms_p50'])} configured\n"
        + "\n".join(
            f"  {x['client']:5} anycast {x['anycast_edge']:3} lowest-RTT {x['lowest_rtt_edge']:3} "
            f"extra {_ms(x['extra_rtt_ms'])}"
            for x in per_client
        )
    )
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def report(out: Path) -> None:
    res = read_results(out)
    rows = read_csv(out / "clients.csv") if (out / "clients.csv").exists() else []
    members = res.get("members", [])
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(8, 3.6))
    xs = range(len(rows))
    width = 0.8 / max(1, len(members))
    for i, e in enumerate(members):
        vals = [float(x.get(f"rtt_{e}_ms") or 0) for x in rows]
        ax.bar([j + (i - (len(members) - 1) / 2) * width for j in xs], vals, width, label=f"RTT to {e}")
    for j, x in enumerate(rows):
        e = x["anycast_edge"]
        if e in members:
            i = members.index(e)
            ax.plot(
                j + (i - (len(members) - 1) / 2) * width, float(x.get(f"rtt_{e}_ms") or 0) + 2, "kv", ms=6
            )
    ax.set_xticks(list(xs), [x["client"] for x in rows], fontsize=8)
    ax.set_ylabel("ping RTT, min (ms)")
    ax.set_title("RTT to every edge; triangle: the edge anycast chose", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "catchment.png", dpi=120)
    pyplot.close(fig)
    cols = [
        "client",
        "site",
        "anycast_edge",
        "lowest_rtt_edge",
        "suboptimal",
        "extra_rtt_ms",
        *[f"rtt_{e}_ms" for e in members],
        "model_anycast_edge",
        "model_extra_rtt_ms",
    ]
    table = md_table(rows, cols)
    m = res["model"]
    head = md_table(
        [
            {
                "what": "suboptimal fraction",
                "meas": f"{res['suboptimal_fraction']:.0%}",
                "model": f"{m['suboptimal_fraction']:.0%}",
                "paper": "~20 % (Calder et al.)",
            },
            {
                "what": "extra RTT p50 (suboptimal clients)",
                "meas": _ms(res["extra_rtt_ms_p50"]),
                "model": _ms(m["extra_rtt_ms_p50"]),
                "paper": "most < 25 ms; some > 100 ms",
            },
        ],
        ["what", "meas", "model", "paper"],
        ["", "measured", "configured delays", "paper"],
    )
    notes = (
        "The controller routes and picks anycast members by the configured one-way `delay_ms` of each link "
        "(its routing metric, like BGP's path length it is not the latency); `delay_ms_ba`, the return "
        "direction of an asymmetric link, does not enter it. Site `ca_s5` reaches PoP 1 over a link of "
        "5 ms out and 45 ms back: routing sends its clients to `e1` though `e3` is nearer by round trip. "
        f"Anycast edge as the model predicts for every client: {res['anycast_matches_model']}; lowest-RTT "
        f"edge as configured for every client: {res['lowest_rtt_matches_model']}."
    )
    write_report(
        out,
        "Anycast catchments vs lowest-RTT edges",
        res,
        [("Result", head), ("Per client", table), ("Plot", "![catchment](catchment.png)"), ("Notes", notes)],
    )
